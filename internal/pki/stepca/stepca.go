// Package stepca is the CA backend for an external smallstep step-ca. It
// signs and revokes through step-ca's HTTP API (POST /1.0/sign,
// POST /1.0/revoke, GET /1.0/crl) with one-time tokens signed by a JWK
// provisioner's key, which it decrypts from ca.json with the provisioner
// password. It trusts step-ca's TLS only through the configured root.
package stepca

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/pki"
	"github.com/amtops/amtops/internal/secrets"
)

// Name is the backend name recorded in certificate records.
const Name = "step-ca"

// maxBody bounds what is read from step-ca (a CRL of many entries fits).
const maxBody = 32 << 20

// Config points at a step-ca and one of its JWK provisioners.
type Config struct {
	URL         string // https://host:port, no path
	RootFile    string // PEM root certificate of the CA (also its TLS trust)
	Provisioner string // JWK provisioner name
	// CAConfigFile is step-ca's ca.json, read for the provisioner's
	// public key and encryptedKey.
	CAConfigFile string
	// PasswordFile holds the provisioner password; Password may carry it
	// instead.
	PasswordFile string
	Password     secrets.Redacted
	// Validity requested for issued certificates (within the
	// provisioner's claims); default 365 days. ProfileValidity overrides
	// it per profile.
	Validity        time.Duration
	ProfileValidity map[pki.Profile]time.Duration
	// HTTPClient is optional; by default one trusting only the root.
	HTTPClient *http.Client
	Now        func() time.Time
	Log        zerolog.Logger
}

// Client is a step-ca backend. It implements pki.CA.
type Client struct {
	url      string
	cfg      Config
	http     *http.Client
	now      func() time.Time
	log      zerolog.Logger
	root     *x509.Certificate
	chainMu  sync.Mutex
	caChain  [][]byte // CAChain, once fetched
	rootSHA  string
	signer   *tokenSigner
	validity time.Duration
}

// New loads the root and decrypts the provisioner key. It does no network
// I/O; the first call to step-ca is the first Issue, Revoke or Lookup.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, domain.InvalidField("url", cfg.URL, "must be https://host:port")
	}
	if cfg.Provisioner == "" {
		return nil, domain.InvalidField("provisioner", "", "required")
	}
	root, err := loadRoot(cfg.RootFile)
	if err != nil {
		return nil, err
	}
	password := cfg.Password.Reveal()
	if cfg.PasswordFile != "" {
		b, err := os.ReadFile(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("stepca: read password_file: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	if password == "" {
		return nil, domain.InvalidField("password_file", cfg.PasswordFile, "no provisioner password")
	}
	signer, err := loadProvisioner(cfg.CAConfigFile, cfg.Provisioner, password)
	if err != nil {
		return nil, err
	}
	c := &Client{
		url:      strings.TrimSuffix(u.String(), "/"),
		cfg:      cfg,
		http:     cfg.HTTPClient,
		now:      cfg.Now,
		log:      cfg.Log,
		root:     root,
		rootSHA:  pki.Fingerprint(root.Raw),
		signer:   signer,
		validity: cfg.Validity,
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.validity <= 0 {
		c.validity = 365 * 24 * time.Hour
	}
	if c.http == nil {
		pool := x509.NewCertPool()
		pool.AddCert(root)
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		c.http = &http.Client{Transport: tr}
	}
	return c, nil
}

func loadRoot(path string) (*x509.Certificate, error) {
	if path == "" {
		return nil, domain.InvalidField("root_file", "", "required")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("stepca: read root_file: %w", err)
	}
	certs, err := parsePEMCerts(b)
	if err != nil || len(certs) == 0 {
		return nil, domain.InvalidField("root_file", path, "no PEM certificate")
	}
	return certs[0], nil
}

// Root is the CA's root certificate, DER.
func (c *Client) Root() []byte { return c.root.Raw }

// CAChain implements pki.Chainer: step-ca's intermediates (GET
// /intermediates), each checked to chain to the configured root, then
// the root. It is fetched once and kept: an intermediate changes only
// with a reconfigured step-ca, and then the server is restarted.
func (c *Client) CAChain(ctx context.Context) ([][]byte, error) {
	c.chainMu.Lock()
	defer c.chainMu.Unlock()
	if c.caChain != nil {
		return c.caChain, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url+"/intermediates", nil)
	if err != nil {
		return nil, fmt.Errorf("stepca: intermediates: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("stepca: intermediates: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("stepca: intermediates: %w", err)
	}
	// step-ca 0.30 answers this GET with 201 Created.
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		return nil, fmt.Errorf("stepca: intermediates: %w", apiError(resp.StatusCode, body))
	}
	var out struct {
		Crts []string `json:"crts"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("stepca: intermediates: decode: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(c.root)
	var chain [][]byte
	for _, p := range out.Crts {
		certs, err := parsePEMCerts([]byte(p))
		if err != nil {
			return nil, fmt.Errorf("stepca: intermediates: %w", err)
		}
		for _, ic := range certs {
			if _, err := ic.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				return nil, domain.Permanent(fmt.Errorf("stepca: intermediate %q does not chain to the configured root: %w", ic.Subject, err))
			}
			chain = append(chain, ic.Raw)
		}
	}
	c.caChain = append(chain, c.root.Raw)
	return c.caChain, nil
}

type signRequest struct {
	CSR      string `json:"csr"`
	OTT      string `json:"ott"`
	NotAfter string `json:"notAfter,omitempty"`
}

type signResponse struct {
	Crt       string   `json:"crt"`
	CA        string   `json:"ca"`
	CertChain []string `json:"certChain"`
}

// Issue implements pki.CA. The token names the FQDN as subject and only
// SAN, so step-ca refuses any other name, and asks for the profile's
// extended key usage (see scripts/stepcainit's template); the result is
// checked to verify to the root for that usage and name.
func (c *Client) Issue(ctx context.Context, req pki.Request) (*pki.Issued, error) {
	chk, err := pki.CheckRequest(req)
	if err != nil {
		return nil, fmt.Errorf("stepca: issue: %w", err)
	}
	tok, err := c.signer.token(c.now(), chk.FQDN, []string{chk.FQDN}, c.url+"/1.0/sign", c.rootSHA, string(chk.Profile))
	if err != nil {
		return nil, fmt.Errorf("stepca: issue %s: %w", chk.FQDN, err)
	}
	validity := c.validity
	if d := c.cfg.ProfileValidity[chk.Profile]; d > 0 {
		validity = d
	}
	var resp signResponse
	err = c.call(ctx, http.MethodPost, "/1.0/sign", signRequest{
		CSR: string(pki.EncodeCSR(chk.CSR.Raw)), OTT: tok, NotAfter: validity.String(),
	}, http.StatusCreated, &resp)
	if err != nil {
		return nil, fmt.Errorf("stepca: issue %s for %s: %w", chk.Profile, chk.FQDN, err)
	}
	leaf, chain, err := c.chain(resp)
	if err != nil {
		return nil, fmt.Errorf("stepca: issue %s for %s: %w", chk.Profile, chk.FQDN, err)
	}
	if err := check(leaf, chain, c.root, chk); err != nil {
		return nil, domain.Permanent(fmt.Errorf("stepca: issue %s for %s: %w", chk.Profile, chk.FQDN, err))
	}
	out := &pki.Issued{
		CA:        Name,
		Profile:   chk.Profile,
		Serial:    leaf.SerialNumber.String(),
		Subject:   chk.FQDN,
		Leaf:      leaf.Raw,
		NotBefore: leaf.NotBefore,
		NotAfter:  leaf.NotAfter,
	}
	for _, ca := range chain {
		out.Chain = append(out.Chain, ca.Raw)
	}
	c.log.Info().Str("serial", out.Serial).Str("profile", string(chk.Profile)).Str("fqdn", chk.FQDN).Msg("certificate issued by step-ca")
	return out, nil
}

// chain maps step-ca's answer to the leaf and the CA certificates up to
// and including the root (step-ca's certChain stops at the intermediate).
func (c *Client) chain(resp signResponse) (*x509.Certificate, []*x509.Certificate, error) {
	pems := resp.CertChain
	if len(pems) == 0 {
		pems = []string{resp.Crt, resp.CA}
	}
	var all []*x509.Certificate
	for _, p := range pems {
		certs, err := parsePEMCerts([]byte(p))
		if err != nil {
			return nil, nil, fmt.Errorf("parse response: %w", err)
		}
		all = append(all, certs...)
	}
	if len(all) == 0 {
		return nil, nil, errors.New("response holds no certificate")
	}
	chain := all[1:]
	if len(chain) == 0 || !chain[len(chain)-1].Equal(c.root) {
		chain = append(chain, c.root)
	}
	return all[0], chain, nil
}

// check verifies what step-ca returned against what was asked.
func check(leaf *x509.Certificate, chain []*x509.Certificate, root *x509.Certificate, chk *pki.Checked) error {
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	for _, c := range chain[:len(chain)-1] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, DNSName: chk.FQDN,
		KeyUsages: []x509.ExtKeyUsage{chk.Profile.ExtKeyUsage()},
	}); err != nil {
		return fmt.Errorf("issued certificate does not verify for profile %s: %w", chk.Profile, err)
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != chk.FQDN || len(leaf.IPAddresses)+len(leaf.EmailAddresses)+len(leaf.URIs) > 0 {
		return fmt.Errorf("issued certificate names %v, want only %s", leaf.DNSNames, chk.FQDN)
	}
	return nil
}

type revokeRequest struct {
	Serial     string `json:"serial"`
	OTT        string `json:"ott"`
	ReasonCode int    `json:"reasonCode"`
	Passive    bool   `json:"passive"`
}

// Revoke implements pki.CA (passive revocation: step-ca records it and
// lists it in its CRL). A certificate step-ca already revoked counts as
// success.
func (c *Client) Revoke(ctx context.Context, serial string, reason domain.RevocationReason) error {
	n, err := pki.ParseSerial("serial", serial)
	if err != nil {
		return fmt.Errorf("stepca: revoke: %w", err)
	}
	if err := pki.ValidateReason(reason); err != nil {
		return fmt.Errorf("stepca: revoke %s: %w", serial, err)
	}
	s := n.String()
	tok, err := c.signer.token(c.now(), s, nil, c.url+"/1.0/revoke", c.rootSHA, "")
	if err != nil {
		return fmt.Errorf("stepca: revoke %s: %w", s, err)
	}
	err = c.call(ctx, http.MethodPost, "/1.0/revoke", revokeRequest{
		Serial: s, OTT: tok, ReasonCode: int(reason), Passive: true,
	}, http.StatusOK, nil)
	var ae *APIError
	if errors.As(err, &ae) && strings.Contains(ae.Message, "already revoked") {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stepca: revoke %s: %w", s, err)
	}
	c.log.Info().Str("serial", s).Int("reason", int(reason)).Msg("certificate revoked by step-ca")
	return nil
}

// Lookup implements pki.CA from step-ca's CRL: step-ca has no API to read
// a certificate by serial, so Leaf stays nil and a serial absent from the
// CRL is reported as not revoked (never as not found).
func (c *Client) Lookup(ctx context.Context, serial string) (*pki.Record, error) {
	n, err := pki.ParseSerial("serial", serial)
	if err != nil {
		return nil, fmt.Errorf("stepca: lookup: %w", err)
	}
	crl, err := c.CRL(ctx)
	if err != nil {
		return nil, fmt.Errorf("stepca: lookup %s: %w", serial, err)
	}
	rec := &pki.Record{Serial: n.String()}
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(n) == 0 {
			rec.Revoked, rec.Reason, rec.RevokedAt = true, domain.RevocationReason(e.ReasonCode), e.RevocationTime
			break
		}
	}
	return rec, nil
}

// CRL fetches and parses step-ca's current CRL (GET /1.0/crl).
func (c *Client) CRL(ctx context.Context) (*x509.RevocationList, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url+"/1.0/crl", nil)
	if err != nil {
		return nil, fmt.Errorf("stepca: crl: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("stepca: crl: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("stepca: crl: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("stepca: crl: %w", apiError(resp.StatusCode, body))
	}
	crl, err := x509.ParseRevocationList(body)
	if err != nil {
		return nil, fmt.Errorf("stepca: crl: parse: %w", err)
	}
	return crl, nil
}

// APIError is a refusal or failure reported by step-ca.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("step-ca answered %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

func apiError(status int, body []byte) error {
	var m struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &m) != nil || m.Message == "" {
		m.Message = strings.TrimSpace(string(body))
		if len(m.Message) > 200 {
			m.Message = m.Message[:200]
		}
	}
	err := &APIError{Status: status, Message: m.Message}
	// step-ca's 4xx are refusals (bad token, policy, names) that a retry
	// repeats; 5xx, 408 and 429 may pass later.
	if status >= 400 && status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests {
		return domain.Permanent(err)
	}
	return err
}

func (c *Client) call(ctx context.Context, method, path string, in any, want int, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode != want {
		return apiError(resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("decode response: %w", err)
		}
	}
	return nil
}

func parsePEMCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out, nil
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}
