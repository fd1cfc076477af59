// Package builtin is the embedded certificate authority, amtops' default
// CA backend: a root and an RSA-2048 issuing CA created on first start and
// kept sealed in the site's storage, issuing the server-auth and
// client-auth profiles, revoking with RFC 5280 reasons and publishing a CRL
// signed by the issuing CA. Every server replica may run it over the same
// storage; they all act as the one CA.
package builtin

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/pki"
)

// Name is the backend name recorded in certificate records.
const Name = "builtin"

// Storage names.
const (
	keyCA      = "ca"
	keyCRL     = "crl"
	setRevoked = "revoked"
)

func keyCert(serial string) string    { return "cert/" + serial }
func keyRevoked(serial string) string { return "revoked/" + serial }

// backdate moves NotBefore into the past so that a controller or peer
// whose clock lags (AMT's clock is only set in phase 2, S8) accepts the
// certificate at once.
const backdate = time.Hour

// Config tunes the CA. The zero value is usable.
type Config struct {
	// Organization goes into the CA certificates' subjects when the CA is
	// created; default "amtops".
	Organization string
	// Validity of issued certificates; default 365 days. ProfileValidity
	// overrides it per profile.
	Validity        time.Duration
	ProfileValidity map[pki.Profile]time.Duration
	// CRLURL, when set, goes into issued certificates as their CRL
	// distribution point (where Handler's /crl is published).
	CRLURL string
	// CRLValidity is the time from a CRL's thisUpdate to its nextUpdate;
	// default 7 days. A CRL is reissued when half of it has passed.
	CRLValidity time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	Log zerolog.Logger
}

// CA is the built-in certificate authority. It implements pki.CA.
type CA struct {
	st   Storage
	cfg  Config
	now  func() time.Time
	log  zerolog.Logger
	root *x509.Certificate
	ca   *x509.Certificate // issuing CA
	key  *rsa.PrivateKey   // issuing CA key
}

// bundle is the CA as stored under "ca".
type bundle struct {
	Version     int    `json:"version"`
	RootCert    []byte `json:"root_cert"`
	RootKey     []byte `json:"root_key"` // kept to re-issue the issuing CA later
	IssuingCert []byte `json:"issuing_cert"`
	IssuingKey  []byte `json:"issuing_key"`
}

// certRecord is an issued certificate as stored under "cert/<serial>".
type certRecord struct {
	Profile pki.Profile `json:"profile"`
	DER     []byte      `json:"der"`
}

// crlRecord is the last CRL as stored under "crl".
type crlRecord struct {
	DER        []byte    `json:"der"`
	Count      int       `json:"count"` // revocation set members it covers
	Number     string    `json:"number"`
	ThisUpdate time.Time `json:"this_update"`
}

// New loads the CA from st, creating it on first start. Replicas starting
// at once over the same storage agree on one CA: the first to store it
// wins, the others adopt it.
func New(ctx context.Context, st Storage, cfg Config) (*CA, error) {
	if st == nil {
		return nil, domain.InvalidField("storage", "", "required")
	}
	if cfg.Organization == "" {
		cfg.Organization = "amtops"
	}
	if cfg.Validity <= 0 {
		cfg.Validity = 365 * 24 * time.Hour
	}
	if cfg.CRLValidity <= 0 {
		cfg.CRLValidity = 7 * 24 * time.Hour
	}
	c := &CA{st: st, cfg: cfg, now: cfg.Now, log: cfg.Log}
	if c.now == nil {
		c.now = time.Now
	}
	raw, err := st.Get(ctx, keyCA)
	if errors.Is(err, domain.ErrNotFound) {
		raw, err = c.create(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("builtin: load ca: %w", err)
	}
	if err := c.load(raw); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *CA) create(ctx context.Context) ([]byte, error) {
	b, err := newBundle(c.cfg.Organization, c.now())
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("builtin: encode ca: %w", err)
	}
	got, err := c.st.PutIfAbsent(ctx, keyCA, raw)
	if err != nil {
		return nil, fmt.Errorf("builtin: store ca: %w", err)
	}
	if bytes.Equal(got, raw) {
		c.log.Info().Str("root", pki.Fingerprint(b.RootCert)).Msg("built-in CA created")
	} else {
		c.log.Info().Msg("built-in CA created by another replica; adopting it")
	}
	return got, nil
}

// newBundle makes a root and an issuing CA, both RSA-2048: older AMT
// firmware accepts no larger key in a trusted root or chain.
func newBundle(org string, now time.Time) (*bundle, error) {
	now = now.UTC().Truncate(time.Second)
	rootKey, err := pki.GenerateKey()
	if err != nil {
		return nil, err
	}
	caKey, err := pki.GenerateKey()
	if err != nil {
		return nil, err
	}
	rootSerial, err := pki.RandomSerial()
	if err != nil {
		return nil, err
	}
	caSerial, err := pki.RandomSerial()
	if err != nil {
		return nil, err
	}
	rootTmpl := &x509.Certificate{
		SerialNumber:          rootSerial,
		Subject:               pkix.Name{Organization: []string{org}, CommonName: org + " Root CA"},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.AddDate(20, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, fmt.Errorf("builtin: create root: %w", err)
	}
	root, err := x509.ParseCertificate(rootDER)
	if err != nil {
		return nil, fmt.Errorf("builtin: parse root: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          caSerial,
		Subject:               pkix.Name{Organization: []string{org}, CommonName: org + " Issuing CA"},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, root, &caKey.PublicKey, rootKey)
	if err != nil {
		return nil, fmt.Errorf("builtin: create issuing ca: %w", err)
	}
	return &bundle{
		Version:     1,
		RootCert:    rootDER,
		RootKey:     x509.MarshalPKCS1PrivateKey(rootKey),
		IssuingCert: caDER,
		IssuingKey:  x509.MarshalPKCS1PrivateKey(caKey),
	}, nil
}

func (c *CA) load(raw []byte) error {
	var b bundle
	if err := json.Unmarshal(raw, &b); err != nil {
		return fmt.Errorf("builtin: decode ca: %w", err)
	}
	if b.Version != 1 {
		return fmt.Errorf("builtin: ca bundle version %d not supported", b.Version)
	}
	var err error
	if c.root, err = x509.ParseCertificate(b.RootCert); err != nil {
		return fmt.Errorf("builtin: parse root: %w", err)
	}
	if c.ca, err = x509.ParseCertificate(b.IssuingCert); err != nil {
		return fmt.Errorf("builtin: parse issuing ca: %w", err)
	}
	if c.key, err = x509.ParsePKCS1PrivateKey(b.IssuingKey); err != nil {
		return fmt.Errorf("builtin: parse issuing key: %w", err)
	}
	if !c.key.PublicKey.Equal(c.ca.PublicKey) {
		return errors.New("builtin: issuing key does not match the issuing certificate")
	}
	return nil
}

// Root is the root certificate, DER.
func (c *CA) Root() []byte { return c.root.Raw }

// Chain is the issuing CA and the root, DER, in that order.
func (c *CA) Chain() [][]byte { return [][]byte{c.ca.Raw, c.root.Raw} }

// CAChain implements pki.Chainer.
func (c *CA) CAChain(context.Context) ([][]byte, error) { return c.Chain(), nil }

// Issue implements pki.CA.
func (c *CA) Issue(ctx context.Context, req pki.Request) (*pki.Issued, error) {
	chk, err := pki.CheckRequest(req)
	if err != nil {
		return nil, fmt.Errorf("builtin: issue: %w", err)
	}
	serial, err := pki.RandomSerial()
	if req.Serial != "" {
		serial, err = pki.ParseSerial("serial", req.Serial)
	}
	if err != nil {
		return nil, fmt.Errorf("builtin: issue: %w", err)
	}
	now := c.now().UTC().Truncate(time.Second)
	notAfter := now.Add(c.validity(chk.Profile))
	if notAfter.After(c.ca.NotAfter) {
		notAfter = c.ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: chk.FQDN},
		DNSNames:              []string{chk.FQDN},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              pki.KeyUsage(chk.CSR.PublicKey),
		ExtKeyUsage:           []x509.ExtKeyUsage{chk.Profile.ExtKeyUsage()},
		BasicConstraintsValid: true,
	}
	if c.cfg.CRLURL != "" {
		tmpl.CRLDistributionPoints = []string{c.cfg.CRLURL}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.ca, chk.CSR.PublicKey, c.key)
	if err != nil {
		return nil, fmt.Errorf("builtin: issue %s for %s: %w", chk.Profile, chk.FQDN, err)
	}
	s := serial.String()
	rec, err := json.Marshal(certRecord{Profile: chk.Profile, DER: der})
	if err != nil {
		return nil, fmt.Errorf("builtin: encode certificate %s: %w", s, err)
	}
	got, err := c.st.PutIfAbsent(ctx, keyCert(s), rec)
	if err != nil {
		return nil, fmt.Errorf("builtin: store certificate %s: %w", s, err)
	}
	if !bytes.Equal(got, rec) {
		// 2^-128; refuse rather than hand out a serial the CA already used.
		return nil, fmt.Errorf("builtin: store certificate %s: serial already used: %w", s, domain.ErrConflict)
	}
	c.log.Info().Str("serial", s).Str("profile", string(chk.Profile)).Str("fqdn", chk.FQDN).Msg("certificate issued")
	return &pki.Issued{
		CA:        Name,
		Profile:   chk.Profile,
		Serial:    s,
		Subject:   chk.FQDN,
		Leaf:      der,
		Chain:     c.Chain(),
		NotBefore: tmpl.NotBefore,
		NotAfter:  tmpl.NotAfter,
	}, nil
}

func (c *CA) validity(p pki.Profile) time.Duration {
	if d := c.cfg.ProfileValidity[p]; d > 0 {
		return d
	}
	return c.cfg.Validity
}

// TakesSerial implements pki.SerialTaker: Issue uses Request.Serial.
func (c *CA) TakesSerial() bool { return true }

// Revoke implements pki.CA. The CRL is regenerated before it returns.
func (c *CA) Revoke(ctx context.Context, serial string, reason domain.RevocationReason) error {
	n, err := pki.ParseSerial("serial", serial)
	if err != nil {
		return fmt.Errorf("builtin: revoke: %w", err)
	}
	if err := pki.ValidateReason(reason); err != nil {
		return fmt.Errorf("builtin: revoke %s: %w", serial, err)
	}
	s := n.String()
	if _, err := c.st.Get(ctx, keyCert(s)); err != nil {
		return fmt.Errorf("builtin: revoke %s: %w", s, err)
	}
	// The per-serial record decides which revocation counts when two
	// replicas (or a retry) revoke at once; every one then adds that same
	// winner to the set, so the set holds one member per serial.
	mine := revocation{Serial: s, Reason: reason, At: c.now().UTC()}.member()
	got, err := c.st.PutIfAbsent(ctx, keyRevoked(s), []byte(mine))
	if err != nil {
		return fmt.Errorf("builtin: revoke %s: %w", s, err)
	}
	if err := c.st.AddToSet(ctx, setRevoked, string(got)); err != nil {
		return fmt.Errorf("builtin: revoke %s: %w", s, err)
	}
	if string(got) == mine {
		c.log.Info().Str("serial", s).Int("reason", int(reason)).Msg("certificate revoked")
	}
	if _, err := c.regenerate(ctx); err != nil {
		return fmt.Errorf("builtin: revoke %s: %w", s, err)
	}
	return nil
}

// Lookup implements pki.CA.
func (c *CA) Lookup(ctx context.Context, serial string) (*pki.Record, error) {
	n, err := pki.ParseSerial("serial", serial)
	if err != nil {
		return nil, fmt.Errorf("builtin: lookup: %w", err)
	}
	s := n.String()
	raw, err := c.st.Get(ctx, keyCert(s))
	if err != nil {
		return nil, fmt.Errorf("builtin: lookup %s: %w", s, err)
	}
	var cr certRecord
	if err := json.Unmarshal(raw, &cr); err != nil {
		return nil, fmt.Errorf("builtin: lookup %s: decode: %w", s, err)
	}
	cert, err := x509.ParseCertificate(cr.DER)
	if err != nil {
		return nil, fmt.Errorf("builtin: lookup %s: parse: %w", s, err)
	}
	rec := &pki.Record{Serial: s, Profile: cr.Profile, Leaf: cr.DER, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter}
	rv, err := c.st.Get(ctx, keyRevoked(s))
	switch {
	case errors.Is(err, domain.ErrNotFound):
	case err != nil:
		return nil, fmt.Errorf("builtin: lookup %s: %w", s, err)
	default:
		r, err := parseMember(string(rv))
		if err != nil {
			return nil, fmt.Errorf("builtin: lookup %s: %w", s, err)
		}
		rec.Revoked, rec.Reason, rec.RevokedAt = true, r.Reason, r.At
	}
	return rec, nil
}

// CRL returns the current CRL, DER, signed by the issuing CA. It reuses
// the stored CRL while that covers every revocation and is less than half
// way to its nextUpdate; otherwise it makes and stores a new one. Checking
// the revocation set here, not only on Revoke, heals the race where two
// replicas revoke at once and the last CRL written misses the other's
// serial.
func (c *CA) CRL(ctx context.Context) ([]byte, error) {
	members, err := c.st.SetMembers(ctx, setRevoked)
	if err != nil {
		return nil, fmt.Errorf("builtin: crl: %w", err)
	}
	raw, err := c.st.Get(ctx, keyCRL)
	switch {
	case errors.Is(err, domain.ErrNotFound):
	case err != nil:
		return nil, fmt.Errorf("builtin: crl: %w", err)
	default:
		var cr crlRecord
		if err := json.Unmarshal(raw, &cr); err == nil && cr.Count == len(members) &&
			c.now().Before(cr.ThisUpdate.Add(c.cfg.CRLValidity/2)) {
			return cr.DER, nil
		}
	}
	return c.generate(ctx, members)
}

func (c *CA) regenerate(ctx context.Context) ([]byte, error) {
	members, err := c.st.SetMembers(ctx, setRevoked)
	if err != nil {
		return nil, fmt.Errorf("builtin: crl: %w", err)
	}
	return c.generate(ctx, members)
}

func (c *CA) generate(ctx context.Context, members []string) ([]byte, error) {
	entries := make([]x509.RevocationListEntry, 0, len(members))
	seen := make(map[string]bool, len(members))
	for _, m := range members {
		r, err := parseMember(m)
		if err != nil {
			return nil, fmt.Errorf("builtin: crl: %w", err)
		}
		if seen[r.Serial] {
			continue
		}
		seen[r.Serial] = true
		n, _ := new(big.Int).SetString(r.Serial, 10)
		entries = append(entries, x509.RevocationListEntry{
			SerialNumber:   n,
			RevocationTime: r.At,
			ReasonCode:     int(r.Reason),
		})
	}
	now := c.now().UTC().Truncate(time.Second)
	// Time-based numbers increase across replicas without coordination.
	number := big.NewInt(c.now().UnixNano())
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    number,
		ThisUpdate:                now,
		NextUpdate:                now.Add(c.cfg.CRLValidity),
		RevokedCertificateEntries: entries,
	}, c.ca, c.key)
	if err != nil {
		return nil, fmt.Errorf("builtin: create crl: %w", err)
	}
	raw, err := json.Marshal(crlRecord{DER: der, Count: len(members), Number: number.String(), ThisUpdate: now})
	if err != nil {
		return nil, fmt.Errorf("builtin: encode crl: %w", err)
	}
	if err := c.st.Put(ctx, keyCRL, raw); err != nil {
		return nil, fmt.Errorf("builtin: store crl: %w", err)
	}
	return der, nil
}

// CertificatesPEM is the issuing CA and the root, PEM.
func (c *CA) CertificatesPEM() []byte {
	var buf bytes.Buffer
	for _, der := range c.Chain() {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	return buf.Bytes()
}
