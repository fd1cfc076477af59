// Package pki issues and revokes the certificates that AMT controllers
// carry (S1–S3, S7, S14, S17). It defines the small CA interface the
// phase-1 handler uses, the certificate profiles (SCCM's "certificate
// templates"), request validation shared by every backend, and helpers for
// the site-generated device key. Backends live in sub-packages: builtin
// (the embedded CA, the default) and stepca (an external smallstep step-ca).
package pki

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/amtops/amtops/internal/domain"
)

// CA is a certificate authority as the phase-1 handler sees it. Both
// backends implement it; callers may declare a narrower interface.
type CA interface {
	// Issue signs req.CSR under req.Profile for req.FQDN.
	Issue(ctx context.Context, req Request) (*Issued, error)
	// Revoke revokes serial (decimal) with an RFC 5280 reason. Revoking an
	// already revoked certificate succeeds and keeps the first reason.
	Revoke(ctx context.Context, serial string, reason domain.RevocationReason) error
	// Lookup reports what the CA knows of serial (decimal); an unknown
	// serial gives an error wrapping domain.ErrNotFound.
	Lookup(ctx context.Context, serial string) (*Record, error)
}

// Chainer is a CA that can give, without issuing anything, the chain its
// certificates verify through: the issuing CA and any intermediates, then
// the root, DER. A job whose device makes its own key (key_on_device)
// carries it as its trust anchor, and an update verifies with it when no
// issued chain is on record. Both backends implement it.
type Chainer interface {
	CAChain(ctx context.Context) ([][]byte, error)
}

// Profile names a certificate profile, the SCCM "certificate template".
type Profile string

const (
	// ProfileServerAuth is AMT's TLS server certificate (S2): FQDN in CN
	// and SAN, EKU serverAuth, KU digitalSignature|keyEncipherment.
	ProfileServerAuth Profile = "server-auth"
	// ProfileClientAuth is the 802.1X / wireless client certificate (S3):
	// FQDN in CN and SAN, EKU clientAuth.
	ProfileClientAuth Profile = "client-auth"
)

// Validate reports whether p is a known profile.
func (p Profile) Validate() error {
	switch p {
	case ProfileServerAuth, ProfileClientAuth:
		return nil
	}
	return domain.InvalidField("profile", string(p), "unknown profile; want server-auth or client-auth")
}

// ExtKeyUsage is the extended key usage certificates of p carry.
func (p Profile) ExtKeyUsage() x509.ExtKeyUsage {
	if p == ProfileClientAuth {
		return x509.ExtKeyUsageClientAuth
	}
	return x509.ExtKeyUsageServerAuth
}

// Request asks a CA for one certificate. The names in the certificate
// always come from FQDN (the site database), never from the CSR.
type Request struct {
	Profile Profile
	// FQDN is the device's fully qualified name from the site database.
	FQDN string
	// CSR is a PKCS#10 request, DER or PEM: either made by the site with
	// CSR for a key from GenerateKey, or made by the device itself
	// (key_on_device, AMT's GeneratePKCS10RequestEx). Its signature must
	// verify; any name it asks for must be FQDN.
	CSR []byte
	// Serial, decimal, is the serial to issue under, for a CA that takes
	// one from its caller (SerialTaker); others choose their own.
	Serial string
}

// SerialTaker is a CA that issues under Request.Serial. Its caller can
// record the serial before asking, so that an answer lost to a crash or
// an outage still leaves the site a record of what may have been issued.
type SerialTaker interface {
	TakesSerial() bool
}

// Issued is a certificate a CA has issued.
type Issued struct {
	CA      string // backend: "builtin" or "step-ca"
	Profile Profile
	Serial  string // decimal
	Subject string // the FQDN the certificate names
	Leaf    []byte // DER
	// Chain holds the CA certificates from the leaf's issuer up to and
	// including the root, DER, in that order.
	Chain     [][]byte
	NotBefore time.Time
	NotAfter  time.Time
}

// Root is the last certificate of the chain: what AMT's
// AddTrustedRootCertificate takes.
func (i *Issued) Root() []byte {
	if len(i.Chain) == 0 {
		return nil
	}
	return i.Chain[len(i.Chain)-1]
}

// Intermediates are the chain without the root: what AMT's AddCertificate
// takes besides the leaf.
func (i *Issued) Intermediates() [][]byte {
	if len(i.Chain) == 0 {
		return nil
	}
	return i.Chain[:len(i.Chain)-1]
}

// Record builds the site database's record of this certificate.
func (i *Issued) Record(deviceID string, purpose domain.CertPurpose, now time.Time) domain.CertificateRecord {
	return domain.CertificateRecord{
		Serial:    i.Serial,
		DeviceID:  deviceID,
		Purpose:   purpose,
		Status:    domain.CertIssued,
		Subject:   i.Subject,
		NotBefore: i.NotBefore,
		NotAfter:  i.NotAfter,
		CA:        i.CA,
		Profile:   string(i.Profile),
		UpdatedAt: now,
	}
}

// Record is what a CA knows of one serial.
type Record struct {
	Serial    string // decimal
	Profile   Profile
	Leaf      []byte // DER; nil where the backend cannot return it (step-ca)
	NotBefore time.Time
	NotAfter  time.Time
	Revoked   bool
	Reason    domain.RevocationReason
	RevokedAt time.Time
}

// ParseSerial parses a decimal serial number; field names the input.
func ParseSerial(field, s string) (*big.Int, error) {
	n, ok := new(big.Int).SetString(s, 10)
	if !ok || n.Sign() <= 0 || strings.TrimSpace(s) != s || s[0] == '+' {
		return nil, domain.InvalidField(field, s, "must be a positive decimal serial number")
	}
	return n, nil
}

// ValidateReason reports whether r is an RFC 5280 CRLReason.
func ValidateReason(r domain.RevocationReason) error {
	// 7 is unused in RFC 5280; 8 (removeFromCRL) only appears in delta CRLs.
	if r < 0 || r > 10 || r == 7 || r == 8 {
		return domain.InvalidField("reason", fmt.Sprint(int(r)), "not an RFC 5280 revocation reason")
	}
	return nil
}

// NormalizeFQDN validates a DNS name and returns it lower-cased without a
// trailing dot.
func NormalizeFQDN(fqdn string) (string, error) {
	f := strings.ToLower(strings.TrimSuffix(fqdn, "."))
	switch {
	case f == "":
		return "", domain.InvalidField("fqdn", fqdn, "required")
	case len(f) > 253:
		return "", domain.InvalidField("fqdn", fqdn, "longer than 253 characters")
	case !strings.Contains(f, "."):
		return "", domain.InvalidField("fqdn", fqdn, "not fully qualified")
	}
	for _, label := range strings.Split(f, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", domain.InvalidField("fqdn", fqdn, "bad DNS label")
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", domain.InvalidField("fqdn", fqdn, "bad DNS label")
			}
		}
	}
	return f, nil
}

// Fingerprint is the lower-case hex SHA-256 of a DER certificate.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}
