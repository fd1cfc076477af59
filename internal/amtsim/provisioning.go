package amtsim

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// Hash types as the Hello and AMT_ProvisioningCertificateHash number them.
const (
	hashSHA1   = 1
	hashSHA256 = 2
	hashSHA384 = 3
)

const defaultWebUIUntil = 15

func hashType(h []byte) int {
	switch len(h) {
	case sha1.Size:
		return hashSHA1
	case sha256.Size:
		return hashSHA256
	case sha512.Size384:
		return hashSHA384
	}
	return 0
}

// rootHash hashes a certificate's DER with the algorithm of hash type t.
func rootHash(der []byte, t int) []byte {
	switch t {
	case hashSHA1:
		h := sha1.Sum(der)
		return h[:]
	case hashSHA256:
		h := sha256.Sum256(der)
		return h[:]
	case hashSHA384:
		h := sha512.Sum384(der)
		return h[:]
	}
	return nil
}

// defaultHashes stands in for the factory list of commercial CA roots
// (about two dozen on real firmware, mostly SHA-256, some SHA-384 and SHA-1).
// They are NOT the real CAs' hashes: derived from labels, so no key exists
// for any of them and only hashes added with TrustHashes can be matched.
func defaultHashes() [][]byte {
	var out [][]byte
	for i := range 22 {
		label := fmt.Sprintf("amtsim factory root %02d", i)
		switch {
		case i%7 == 6:
			h := sha1.Sum([]byte(label))
			out = append(out, h[:])
		case i%5 == 4:
			h := sha512.Sum384([]byte(label))
			out = append(out, h[:])
		default:
			h := sha256.Sum256([]byte(label))
			out = append(out, h[:])
		}
	}
	return out
}

// oidProvisioningEKU is the Intel AMT provisioning extended key usage.
var oidProvisioningEKU = asn1.ObjectIdentifier{2, 16, 840, 1, 113741, 1, 2, 3}

const provisioningOU = "Intel(R) Client Setup Certificate"

// verifyProvisioningChain checks a remote-configuration client chain as
// firmware does (AMT-WSMAN.md, "Device states"): the chain is leaf first
// and ends in the root whose hash must be in the device's list; each link
// is signed by the next; the leaf has the provisioning EKU or OU and a CN
// ending in the trusted domain suffix; every certificate is valid at the
// device's clock. A non-nil error fails the handshake.
func verifyProvisioningChain(raw [][]byte, hashes [][]byte, domain string, now time.Time) error {
	chain, err := parseClientChain(raw)
	if err != nil {
		return err
	}
	for i, c := range chain {
		if now.Before(c.NotBefore) || now.After(c.NotAfter) {
			return fmt.Errorf("client certificate %d (%s) not valid at %s", i, c.Subject.CommonName, now.UTC().Format(time.RFC3339))
		}
	}
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			return fmt.Errorf("client certificate %d not signed by %d: %w", i, i+1, err)
		}
	}
	root := chain[len(chain)-1]
	if !bytes.Equal(root.RawIssuer, root.RawSubject) || root.CheckSignatureFrom(root) != nil {
		return errors.New("client chain does not end in a self-signed root")
	}
	if !hashListed(root.Raw, hashes) {
		return errors.New("root certificate hash not in the trusted list")
	}
	leaf := chain[0]
	if !provisioningLeaf(leaf) {
		return fmt.Errorf("leaf %q has neither the AMT provisioning EKU nor OU %q", leaf.Subject.CommonName, provisioningOU)
	}
	if !domainMatch(leaf.Subject.CommonName, domain) {
		return fmt.Errorf("leaf CN %q does not end in the trusted domain %q", leaf.Subject.CommonName, domain)
	}
	return nil
}

func hashListed(der []byte, hashes [][]byte) bool {
	for _, h := range hashes {
		if bytes.Equal(rootHash(der, hashType(h)), h) {
			return true
		}
	}
	return false
}

func provisioningLeaf(c *x509.Certificate) bool {
	for _, u := range c.UnknownExtKeyUsage {
		if u.Equal(oidProvisioningEKU) {
			return true
		}
	}
	for _, ou := range c.Subject.OrganizationalUnit {
		if ou == provisioningOU {
			return true
		}
	}
	return false
}

// parseClientChain parses a TLS client chain (leaf first), at least one.
func parseClientChain(raw [][]byte) ([]*x509.Certificate, error) {
	if len(raw) == 0 {
		return nil, errors.New("no client certificate")
	}
	chain := make([]*x509.Certificate, len(raw))
	for i, der := range raw {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("client certificate %d: %w", i, err)
		}
		chain[i] = c
	}
	return chain, nil
}

// domainMatch: the CN is the suffix itself or ends in "." + suffix, so
// "evilexample.com" does not match "example.com".
func domainMatch(cn, suffix string) bool {
	cn = strings.ToLower(strings.TrimSuffix(cn, "."))
	if suffix == "" || cn == "" {
		return false
	}
	return cn == suffix || strings.HasSuffix(cn, "."+suffix)
}

// firmwareCert makes the device's self-signed TLS certificate (the one a
// factory device and a CSME 16.1+ device serve before any is installed).
func (d *device) firmwareCert() (*tls.Certificate, error) {
	if d.fwCert != nil {
		return d.fwCert, nil
	}
	k, err := d.sim.fwKeys.get(d.idx, 0, 2048)
	if err != nil {
		return nil, fmt.Errorf("firmware key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return nil, fmt.Errorf("firmware serial: %w", err)
	}
	now := d.sim.cfg.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "iAMT" + strings.ToUpper(d.uuidString()[:8]), Organization: []string{"Intel(R) AMT"}},
		NotBefore:    now.Add(-24 * time.Hour), NotAfter: now.AddDate(20, 0, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return nil, fmt.Errorf("firmware certificate: %w", err)
	}
	leaf, _ := x509.ParseCertificate(der)
	d.fwCert = &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k, Leaf: leaf}
	return d.fwCert, nil
}

// provisioningTLS is the remote-configuration listener's configuration:
// the firmware certificate, the generation's TLS versions and suites, and
// a client chain verified against the device's hash list and domain.
func (d *device) provisioningTLS() (*tls.Config, error) {
	cert, err := d.firmwareCert()
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{*cert}, ClientAuth: tls.RequireAnyClientCert}
	tlsVersions(cfg, d.fwv())
	cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
		d.mu.Lock()
		hashes, domain, now := d.trustedHashes(), d.trustedDomain(), d.clock()
		d.mu.Unlock()
		err := verifyProvisioningChain(raw, hashes, domain, now)
		d.mu.Lock()
		if err != nil {
			d.stats.refusals++
			d.lastRefusal = err.Error()
		} else {
			d.stats.sessions++
		}
		d.mu.Unlock()
		if err != nil {
			d.sim.log.Debug().Str("device", d.addr.String()).Str("reason", err.Error()).Msg("provisioning handshake refused")
		}
		return err
	}
	return cfg, nil
}

func sameCredential(a, b *tls.Certificate) bool {
	if a == nil || b == nil {
		return a == b
	}
	return len(a.Certificate) > 0 && len(b.Certificate) > 0 && bytes.Equal(a.Certificate[0], b.Certificate[0])
}

// derKey renders AMT_PublicPrivateKeyPair.DERKey: PKCS#1 RSAPublicKey, or
// SubjectPublicKeyInfo from Firmware.DERKeySPKIFrom on.
func (d *device) derKey(k *keyEntry) []byte {
	if from := d.sim.cfg.DERKeySPKIFrom; from > 0 && d.major() >= from {
		if der, err := x509.MarshalPKIXPublicKey(&k.priv.PublicKey); err == nil {
			return der
		}
	}
	return x509.MarshalPKCS1PublicKey(&k.priv.PublicKey)
}
