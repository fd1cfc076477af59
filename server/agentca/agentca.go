// Package agentca is the site's agent CA: a private ECDSA P-256 CA that
// issues the gRPC server's TLS certificate and agents' short-lived client
// certificates (C4, C6). It is created on first start and kept sealed in
// the site database; replicas racing at first start agree on one CA.
package agentca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"time"

	"github.com/amtops/amtops/internal/domain"
)

// SecretName is where the sealed CA (certificate and key) is kept.
const SecretName = "agentca/ca"

// agentOrg is the subject organisation of every agent certificate.
const agentOrg = "amtops agents"

// Secrets is the sealed storage the CA lives in (store.Store).
type Secrets interface {
	CreateSecret(ctx context.Context, name string, plaintext []byte) (bool, error)
	GetSecret(ctx context.Context, name string) ([]byte, error)
}

// Options tunes a CA. The zero value is usable.
type Options struct {
	// AgentValidity is how long an agent's client certificate lasts;
	// default 7 days. Agents renew before it ends.
	AgentValidity time.Duration
	// ServerValidity is how long the server's own certificate lasts;
	// default 90 days (a fresh one is made at every start).
	ServerValidity time.Duration
	// AdminValidity is how long an administrator's client certificate
	// lasts; default 30 days. Revoking the name ends it sooner.
	AdminValidity time.Duration
	// Clock; default time.Now.
	Clock func() time.Time
}

// CA signs agent and server certificates. Safe for concurrent use.
type CA struct {
	cert *x509.Certificate
	key  crypto.Signer
	pool *x509.CertPool
	opts Options
}

type sealed struct {
	Cert []byte `json:"cert_der"`
	Key  []byte `json:"key_der"` // PKCS#8
}

// Open loads the site's agent CA, creating it when absent. The first
// replica to write wins; the others load what it wrote.
func Open(ctx context.Context, st Secrets, o Options) (*CA, error) {
	if o.AgentValidity <= 0 {
		o.AgentValidity = 7 * 24 * time.Hour
	}
	if o.ServerValidity <= 0 {
		o.ServerValidity = 90 * 24 * time.Hour
	}
	if o.AdminValidity <= 0 {
		o.AdminValidity = 30 * 24 * time.Hour
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	b, err := st.GetSecret(ctx, SecretName)
	if errors.Is(err, domain.ErrNotFound) {
		fresh, gerr := generate(o.Clock())
		if gerr != nil {
			return nil, fmt.Errorf("agentca: generate: %w", gerr)
		}
		created, cerr := st.CreateSecret(ctx, SecretName, fresh)
		if cerr != nil {
			return nil, fmt.Errorf("agentca: store: %w", cerr)
		}
		if created {
			b, err = fresh, nil
		} else {
			b, err = st.GetSecret(ctx, SecretName)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("agentca: load: %w", err)
	}
	var s sealed
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("agentca: decode: %w", err)
	}
	cert, err := x509.ParseCertificate(s.Cert)
	if err != nil {
		return nil, fmt.Errorf("agentca: parse certificate: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(s.Key)
	if err != nil {
		return nil, fmt.Errorf("agentca: parse key: %w", err)
	}
	key, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("agentca: key is %T, not a signing key", k)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{cert: cert, key: key, pool: pool, opts: o}, nil
}

// generate makes the CA. RSA-2048: with mutual TLS on, AMT verifies the
// agent's certificate chain against this root, and RSA-2048 is what every
// AMT generation stores and verifies (11.x refuses larger roots, and
// ECDSA client chains are not documented for any).
func generate(now time.Time) ([]byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	serial, err := randSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "amtops agent CA", Organization: []string{"amtops"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(20, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return json.Marshal(sealed{Cert: der, Key: kd})
}

func randSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// Certificate is the CA certificate.
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// Pool holds just the CA certificate, for verifying peers.
func (c *CA) Pool() *x509.CertPool { return c.pool }

// CertPEM is the CA certificate in PEM, what agents use as server_ca_file.
func (c *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw})
}

// AgentValidity is how long agent certificates last.
func (c *CA) AgentValidity() time.Duration { return c.opts.AgentValidity }

// ServerCertificate makes a fresh key and certificate for the gRPC
// server, naming the host of listen (unless it is a wildcard address) and
// every entry of names (IP addresses or DNS names).
func (c *CA) ServerCertificate(listen string, names []string) (tls.Certificate, error) {
	all := append([]string(nil), names...)
	if listen != "" {
		host, _, err := net.SplitHostPort(listen)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("agentca: server certificate: %w", domain.InvalidField("grpc.listen", listen, err.Error()))
		}
		if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
			all = append(all, host)
		}
	}
	if len(all) == 0 {
		all = []string{"localhost"}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("agentca: server key: %w", err)
	}
	serial, err := randSerial()
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("agentca: server serial: %w", err)
	}
	now := c.opts.Clock()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: all[0]},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     now.Add(c.opts.ServerValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range all {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("agentca: sign server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("agentca: parse server certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der, c.cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// SignAgent signs an agent's PKCS#10 request. The subject comes from the
// site (CN = agentID), never from the CSR; only its key is used.
func (c *CA) SignAgent(csrDER []byte, agentID string) (*x509.Certificate, error) {
	if agentID == "" {
		return nil, fmt.Errorf("agentca: sign agent: %w", domain.InvalidField("agent_id", "", "must not be empty"))
	}
	pub, err := parseCSR(csrDER)
	if err != nil {
		return nil, fmt.Errorf("agentca: sign agent %s: %w", agentID, err)
	}
	serial, err := randSerial()
	if err != nil {
		return nil, fmt.Errorf("agentca: sign agent %s: %w", agentID, err)
	}
	now := c.opts.Clock()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: agentID, Organization: []string{agentOrg}},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     now.Add(c.opts.AgentValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		return nil, fmt.Errorf("agentca: sign agent %s: %w", agentID, err)
	}
	return x509.ParseCertificate(der)
}

// VerifyAgent checks that cert was issued by this CA for client
// authentication and is valid now, and returns the agent ID it names. A
// certificate from anyone else is domain.ErrUnauthorized.
func (c *CA) VerifyAgent(cert *x509.Certificate, intermediates []*x509.Certificate) (string, error) {
	if cert == nil {
		return "", fmt.Errorf("agentca: no client certificate: %w", domain.ErrUnauthorized)
	}
	if err := c.verifyClient(cert, intermediates); err != nil {
		return "", err
	}
	return agentName(cert)
}

// VerifyAgentConn is VerifyAgent for a TLS connection whose handshake
// verified the client's chain to this CA (a listener with Pool as its
// ClientCAs): the chain is not built again for every call on it (7% of
// the server's CPU in the fleet bench), only the leaf's validity checked
// against the clock, as a connection may outlive its certificate. Without
// such a chain it verifies in full.
func (c *CA) VerifyAgentConn(st tls.ConnectionState) (string, error) {
	if len(st.PeerCertificates) == 0 {
		return "", fmt.Errorf("agentca: no client certificate: %w", domain.ErrUnauthorized)
	}
	leaf := st.PeerCertificates[0]
	if len(st.VerifiedChains) == 0 || !c.chainsHere(st.VerifiedChains) {
		return c.VerifyAgent(leaf, st.PeerCertificates[1:])
	}
	if now := c.opts.Clock(); now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return "", fmt.Errorf("agentca: client certificate not valid at %s: %w", now.UTC().Format(time.RFC3339), domain.ErrUnauthorized)
	}
	return agentName(leaf)
}

// chainsHere: the handshake's first verified chain ends in this CA, and
// for client authentication.
func (c *CA) chainsHere(chains [][]*x509.Certificate) bool {
	ch := chains[0]
	root := ch[len(ch)-1]
	if !root.Equal(c.cert) {
		return false
	}
	return slices.Contains(ch[0].ExtKeyUsage, x509.ExtKeyUsageClientAuth)
}

func agentName(cert *x509.Certificate) (string, error) {
	// An administrator's certificate chains to the same CA and is for
	// client authentication too: only the agents' organisation and the
	// absence of an admin URI tell them apart, and an admin named like an
	// agent must not pass as one.
	if !isOnly(cert.Subject.Organization, agentOrg) || hasAdminURI(cert) {
		return "", fmt.Errorf("agentca: client certificate is not an agent's: %w", domain.ErrUnauthorized)
	}
	if cert.Subject.CommonName == "" {
		return "", fmt.Errorf("agentca: client certificate names no agent: %w", domain.ErrUnauthorized)
	}
	return cert.Subject.CommonName, nil
}
