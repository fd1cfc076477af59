package agentca

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/amtops/amtops/internal/domain"
)

// Administrators' certificates come from the same CA as agents' (the
// gRPC listener trusts one pool), so they are marked twice: the subject
// organisation adminOrg and one URI SAN urn:amtops:admin:<role>:<name>.
// VerifyAgent refuses either mark; VerifyAdmin demands both.
const (
	adminOrg       = "amtops admins"
	adminURIPrefix = "urn:amtops:admin:"
)

// Admin roles a certificate may carry (the same as domain.AdminRole).
const (
	RoleRead    = "read"
	RoleOperate = "operate"
)

// CheckAdminName reports whether name may name an administrator: 1 to 64
// letters, digits, '-', '_', '.' or '@' (safe inside the URI SAN).
func CheckAdminName(field, name string) error {
	if name == "" || len(name) > 64 {
		return domain.InvalidField(field, name, "must be 1 to 64 characters")
	}
	for _, r := range name {
		if !(r == '-' || r == '_' || r == '.' || r == '@' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return domain.InvalidField(field, name, "only letters, digits, '-', '_', '.' and '@' are allowed")
		}
	}
	return nil
}

func checkAdminRole(field, role string) error {
	if role != RoleRead && role != RoleOperate {
		return domain.InvalidField(field, role, "must be read or operate")
	}
	return nil
}

// AdminValidity is how long administrators' certificates last.
func (c *CA) AdminValidity() time.Duration { return c.opts.AdminValidity }

// SignAdmin signs an administrator's PKCS#10 request for name with role
// (read or operate). Name and role come from the caller, never from the
// CSR; only its key is used, so the private key stays with the
// administrator.
func (c *CA) SignAdmin(csrDER []byte, name, role string) (*x509.Certificate, error) {
	if err := CheckAdminName("name", name); err != nil {
		return nil, fmt.Errorf("agentca: sign admin: %w", err)
	}
	if err := checkAdminRole("role", role); err != nil {
		return nil, fmt.Errorf("agentca: sign admin %s: %w", name, err)
	}
	pub, err := parseCSR(csrDER)
	if err != nil {
		return nil, fmt.Errorf("agentca: sign admin %s: %w", name, err)
	}
	uri, err := url.Parse(adminURIPrefix + role + ":" + name)
	if err != nil {
		return nil, fmt.Errorf("agentca: sign admin %s: %w", name, domain.InvalidField("name", name, err.Error()))
	}
	serial, err := randSerial()
	if err != nil {
		return nil, fmt.Errorf("agentca: sign admin %s: %w", name, err)
	}
	now := c.opts.Clock()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{adminOrg}, OrganizationalUnit: []string{role}},
		URIs:         []*url.URL{uri},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     now.Add(c.opts.AdminValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		return nil, fmt.Errorf("agentca: sign admin %s: %w", name, err)
	}
	return x509.ParseCertificate(der)
}

// VerifyAdmin checks that cert was issued by this CA to an administrator
// for client authentication and is valid now, and returns the name and
// role it carries and its serial (lower-case hex), which the caller must
// still find recorded and unrevoked. Anything else, an agent's
// certificate included, is domain.ErrUnauthorized.
func (c *CA) VerifyAdmin(cert *x509.Certificate, intermediates []*x509.Certificate) (name, role, serial string, err error) {
	if cert == nil {
		return "", "", "", fmt.Errorf("agentca: no client certificate: %w", domain.ErrUnauthorized)
	}
	if err := c.verifyClient(cert, intermediates); err != nil {
		return "", "", "", err
	}
	if !isOnly(cert.Subject.Organization, adminOrg) {
		return "", "", "", fmt.Errorf("agentca: client certificate is not an administrator's: %w", domain.ErrUnauthorized)
	}
	var found []string
	for _, u := range cert.URIs {
		if s := u.String(); strings.HasPrefix(s, adminURIPrefix) {
			found = append(found, strings.TrimPrefix(s, adminURIPrefix))
		}
	}
	if len(found) != 1 {
		return "", "", "", fmt.Errorf("agentca: client certificate carries %d admin URIs, want 1: %w", len(found), domain.ErrUnauthorized)
	}
	role, name, ok := strings.Cut(found[0], ":")
	if !ok || CheckAdminName("name", name) != nil || checkAdminRole("role", role) != nil || cert.Subject.CommonName != name {
		return "", "", "", fmt.Errorf("agentca: client certificate has a malformed admin URI: %w", domain.ErrUnauthorized)
	}
	return name, role, cert.SerialNumber.Text(16), nil
}

// verifyClient checks cert chains to this CA for client authentication
// at the CA's clock.
func (c *CA) verifyClient(cert *x509.Certificate, intermediates []*x509.Certificate) error {
	pool := x509.NewCertPool()
	for _, ic := range intermediates {
		pool.AddCert(ic)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: c.pool, Intermediates: pool, CurrentTime: c.opts.Clock(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("agentca: verify client certificate: %v: %w", err, domain.ErrUnauthorized)
	}
	return nil
}

// parseCSR checks a PKCS#10 request and returns its public key.
func parseCSR(csrDER []byte) (any, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, domain.InvalidField("csr_der", "", "not a PKCS#10 request: "+err.Error())
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, domain.InvalidField("csr_der", "", "bad signature: "+err.Error())
	}
	switch csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
	default:
		if csr.PublicKeyAlgorithm != x509.RSA && csr.PublicKeyAlgorithm != x509.Ed25519 {
			return nil, domain.InvalidField("csr_der", csr.PublicKeyAlgorithm.String(), "key type not supported")
		}
	}
	return csr.PublicKey, nil
}

func isOnly(vals []string, want string) bool { return len(vals) == 1 && vals[0] == want }

func hasAdminURI(cert *x509.Certificate) bool {
	return slices.ContainsFunc(cert.URIs, func(u *url.URL) bool { return strings.HasPrefix(u.String(), adminURIPrefix) })
}
