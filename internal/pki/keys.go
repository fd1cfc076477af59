package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"

	"github.com/amtops/amtops/internal/domain"
)

// KeyBits is the size of RSA keys the site generates for devices and of the
// built-in CA's keys: older AMT firmware accepts nothing larger.
const KeyBits = 2048

// GenerateKey makes an RSA-2048 key for a device certificate (the
// document's flow: the site generates the key and installs it with the
// certificate).
func GenerateKey() (*rsa.PrivateKey, error) {
	k, err := rsa.GenerateKey(rand.Reader, KeyBits)
	if err != nil {
		return nil, fmt.Errorf("pki: generate key: %w", err)
	}
	return k, nil
}

// CSR makes a DER PKCS#10 request for fqdn (CN and SAN DNS) signed by key.
func CSR(key *rsa.PrivateKey, fqdn string) ([]byte, error) {
	if key == nil {
		return nil, domain.InvalidField("key", "", "required")
	}
	f, err := NormalizeFQDN(fqdn)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: f},
		DNSNames: []string{f},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("pki: create csr for %s: %w", f, err)
	}
	return der, nil
}

// Checked is a Request that passed CheckRequest.
type Checked struct {
	Profile Profile
	FQDN    string // normalized
	CSR     *x509.CertificateRequest
}

// CheckRequest validates req for every backend: a known profile, a valid
// FQDN, a CSR whose signature verifies, an acceptable key, and no name in
// the CSR other than the FQDN. The certificate's names are then set from
// the FQDN alone, so a device cannot obtain a name the site did not give it.
func CheckRequest(req Request) (*Checked, error) {
	if err := req.Profile.Validate(); err != nil {
		return nil, err
	}
	fqdn, err := NormalizeFQDN(req.FQDN)
	if err != nil {
		return nil, err
	}
	csr, err := ParseCSR(req.CSR)
	if err != nil {
		return nil, err
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, err
	}
	if cn := csr.Subject.CommonName; cn != "" && !sameName(cn, fqdn) {
		return nil, domain.InvalidField("csr.subject.cn", cn, "does not match the device FQDN "+fqdn)
	}
	for _, n := range csr.DNSNames {
		if !sameName(n, fqdn) {
			return nil, domain.InvalidField("csr.san.dns", n, "does not match the device FQDN "+fqdn)
		}
	}
	switch {
	case len(csr.IPAddresses) > 0:
		return nil, domain.InvalidField("csr.san.ip", csr.IPAddresses[0].String(), "IP address names are not issued")
	case len(csr.EmailAddresses) > 0:
		return nil, domain.InvalidField("csr.san.email", csr.EmailAddresses[0], "e-mail names are not issued")
	case len(csr.URIs) > 0:
		return nil, domain.InvalidField("csr.san.uri", csr.URIs[0].String(), "URI names are not issued")
	}
	return &Checked{Profile: req.Profile, FQDN: fqdn, CSR: csr}, nil
}

// ParseCSR parses a DER or PEM PKCS#10 request and checks its signature.
func ParseCSR(b []byte) (*x509.CertificateRequest, error) {
	if len(b) == 0 {
		return nil, domain.InvalidField("csr", "", "required")
	}
	der := b
	if t := bytes.TrimSpace(b); bytes.HasPrefix(t, []byte("-----BEGIN")) {
		blk, _ := pem.Decode(t)
		if blk == nil || !strings.Contains(blk.Type, "CERTIFICATE REQUEST") {
			return nil, domain.InvalidField("csr", "", "not a PEM certificate request")
		}
		der = blk.Bytes
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, domain.InvalidField("csr", "", "not a PKCS#10 request: "+err.Error())
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, domain.InvalidField("csr.signature", "", "does not verify: "+err.Error())
	}
	return csr, nil
}

// EncodeCSR is a DER request as PEM.
func EncodeCSR(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func checkPublicKey(pub any) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 || n > 4096 {
			return domain.InvalidField("csr.key", fmt.Sprintf("RSA-%d", n), "RSA key must be 2048 to 4096 bits")
		}
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return domain.InvalidField("csr.key", k.Curve.Params().Name, "EC key must be P-256 or P-384")
		}
	default:
		return domain.InvalidField("csr.key", fmt.Sprintf("%T", pub), "key type not supported")
	}
	return nil
}

// KeyUsage is the key usage for a leaf key: keyEncipherment only makes
// sense for RSA (TLS RSA key exchange, which older AMT firmware uses).
func KeyUsage(pub any) x509.KeyUsage {
	if _, ok := pub.(*rsa.PublicKey); ok {
		return x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	}
	return x509.KeyUsageDigitalSignature
}

// RandomSerial is a random positive 128-bit serial number.
func RandomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("pki: serial: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

func sameName(a, b string) bool {
	return strings.EqualFold(strings.TrimSuffix(a, "."), b)
}
