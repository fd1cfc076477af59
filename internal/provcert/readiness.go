package provcert

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/amtops/amtops/internal/hello"
)

// Reason says why a device will refuse the provisioning certificate.
type Reason string

// Reasons, stable for logs, the API and `devices readiness`.
const (
	ReasonChain            Reason = "chain-broken"          // not leaf → … → self-signed root
	ReasonWeakSignature    Reason = "weak-signature"        // a certificate signed with SHA-1 or MD5
	ReasonNotYetValid      Reason = "not-yet-valid"         // a certificate's NotBefore is in the future
	ReasonExpired          Reason = "expired"               // a certificate's NotAfter has passed
	ReasonNoProvisioningID Reason = "no-provisioning-usage" // leaf has neither the AMT EKU nor the setup OU
	ReasonNoServerAuth     Reason = "no-server-auth"        // leaf EKU lacks serverAuth (only with RequireServerAuth)
	ReasonRootNotTrusted   Reason = "root-not-trusted"      // no root hash in the device's Hello matches
	ReasonNoHashes         Reason = "no-trusted-hashes"     // the device's Hello listed no hashes
	ReasonNoDomainSuffix   Reason = "no-domain-suffix"      // the device's trusted suffix is not configured
	ReasonDomainMismatch   Reason = "domain-mismatch"       // leaf CN is outside the device's trusted suffix
)

// Problem is one reason with a message for a person.
type Problem struct {
	Reason  Reason
	Message string
}

func (p Problem) String() string { return string(p.Reason) + ": " + p.Message }

// Device is what the device will judge the chain by.
type Device struct {
	// Hashes is the trusted-root list from the device's Hello.
	Hashes []hello.Hash
	// DomainSuffix is the device's trusted DNS suffix: DHCP option 15 on its
	// network or the PKI DNS suffix set in the MEBx (configured per subnet).
	DomainSuffix string
}

// DomainRule is how the leaf's CN is compared with the device's trusted
// DNS suffix. Sources differ; see each rule.
type DomainRule int

const (
	// DomainSuffix: the CN equals the suffix or ends in "." + suffix
	// (AMT-WSMAN.md; Intel: "the domain suffix in the leaf certificate must
	// match the domain suffix of the DNS entry associated with the host").
	DomainSuffix DomainRule = iota
	// DomainRegistrable: the CN (less a leading "*.") is cut to its last n
	// labels, n = TLDLabels[its top-level domain], or kept whole for a TLD not
	// listed; the device suffix must equal it or lie below it. This is how
	// MeshCentral (certoperations.js, checkAcmActivationCertName) models the
	// firmware relaxation Intel describes for AMT 2.6+ (".com/.net: only the
	// last two fields of the CN") and 4.1/5.1+ (third-level domains).
	DomainRegistrable
)

// DefaultTLDLabels is the part of DomainRegistrable Intel states itself.
var DefaultTLDLabels = map[string]int{"com": 2, "net": 2}

// Options select firmware rules that differ between sources.
type Options struct {
	DomainRule DomainRule
	// TLDLabels for DomainRegistrable; nil means DefaultTLDLabels.
	TLDLabels map[string]int
	// RequireServerAuth reports a leaf whose EKU list lacks serverAuth;
	// Intel's reference guide says the EKU "must contain" it besides the AMT
	// OID, but devices are reported to accept the AMT OID alone.
	RequireServerAuth bool
}

// Readiness is the outcome of Check.
type Readiness struct {
	Problems []Problem
	// Matched is the device's hash entry that names the chain's root, if any.
	Matched *hello.Hash
}

// Ready reports whether the device will accept the chain.
func (r Readiness) Ready() bool { return len(r.Problems) == 0 }

// Has reports whether reason is among the problems.
func (r Readiness) Has(reason Reason) bool {
	return slices.ContainsFunc(r.Problems, func(p Problem) bool { return p.Reason == reason })
}

// Err is nil when ready, else an error listing every problem.
func (r Readiness) Err() error {
	if r.Ready() {
		return nil
	}
	msgs := make([]string, len(r.Problems))
	for i, p := range r.Problems {
		msgs[i] = p.Message
	}
	return fmt.Errorf("provcert: device will refuse the provisioning certificate: %s", strings.Join(msgs, "; "))
}

// Check does what the device does with the chain it receives, at time now.
func (c Chain) Check(d Device, now time.Time, opt Options) Readiness {
	var r Readiness
	add := func(reason Reason, format string, a ...any) {
		r.Problems = append(r.Problems, Problem{reason, fmt.Sprintf(format, a...)})
	}
	if len(c.Certs) == 0 {
		add(ReasonChain, "no provisioning certificate is loaded")
		return r
	}
	c.checkChain(now, add)
	leaf := c.Leaf()
	if !hasProvisioningUsage(leaf) {
		add(ReasonNoProvisioningID, "leaf %q has neither the AMT provisioning EKU %s nor OU %q", leaf.Subject.CommonName, OIDProvisioning, SetupOU)
	}
	if opt.RequireServerAuth && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		add(ReasonNoServerAuth, "leaf %q EKU lacks serverAuth", leaf.Subject.CommonName)
	}
	r.Matched = c.matchRoot(d.Hashes)
	switch {
	case len(d.Hashes) == 0:
		add(ReasonNoHashes, "the device trusts no provisioning root (its Hello listed no hashes)")
	case r.Matched == nil:
		add(ReasonRootNotTrusted, "no provisioning root matches any of the %d hashes the device trusts (root %q has SHA-256 %x)",
			len(d.Hashes), c.Root().Subject.CommonName, sha256.Sum256(c.Root().Raw))
	}
	suffix := normName(d.DomainSuffix)
	switch cn := normName(leaf.Subject.CommonName); {
	case suffix == "":
		add(ReasonNoDomainSuffix, "the device's trusted domain suffix is not configured (set it for its subnet: the DHCP option 15 value or the MEBx PKI DNS suffix)")
	case !DomainMatches(cn, suffix, opt):
		add(ReasonDomainMismatch, "leaf CN %q is not in the device's trusted domain %q", cn, suffix)
	}
	return r
}

func (c Chain) checkChain(now time.Time, add func(Reason, string, ...any)) {
	for i, x := range c.Certs {
		name := x.Subject.CommonName
		if now.Before(x.NotBefore) {
			add(ReasonNotYetValid, "certificate %q is not valid before %s", name, x.NotBefore.UTC().Format(time.RFC3339))
		}
		if now.After(x.NotAfter) {
			add(ReasonExpired, "certificate %q expired at %s", name, x.NotAfter.UTC().Format(time.RFC3339))
		}
		if i == len(c.Certs)-1 {
			if !bytes.Equal(x.RawIssuer, x.RawSubject) || x.CheckSignatureFrom(x) != nil {
				add(ReasonChain, "chain ends in %q, issued by %q, not in a self-signed root: include the root, the device hashes the root it receives", name, x.Issuer.CommonName)
			}
			continue // a root's self-signature algorithm does not matter: it is trusted by hash
		}
		if weak(x.SignatureAlgorithm) {
			add(ReasonWeakSignature, "certificate %q is signed with %s; firmware expects SHA-2", name, x.SignatureAlgorithm)
		}
		if err := x.CheckSignatureFrom(c.Certs[i+1]); err != nil {
			add(ReasonChain, "certificate %q is not validly signed by %q: %v", name, c.Certs[i+1].Subject.CommonName, err)
		}
	}
}

func weak(a x509.SignatureAlgorithm) bool {
	switch a {
	case x509.MD2WithRSA, x509.MD5WithRSA, x509.SHA1WithRSA, x509.DSAWithSHA1, x509.ECDSAWithSHA1:
		return true
	}
	return false
}

func hasProvisioningUsage(leaf *x509.Certificate) bool {
	for _, o := range leaf.UnknownExtKeyUsage {
		if o.Equal(OIDProvisioning) {
			return true
		}
	}
	return slices.Contains(leaf.Subject.OrganizationalUnit, SetupOU)
}

// RootHashes are the chain root's digests as a Hello lists them.
func (c Chain) RootHashes() []hello.Hash {
	der := c.Root().Raw
	s1, s256, s384 := sha1.Sum(der), sha256.Sum256(der), sha512.Sum384(der)
	return []hello.Hash{{Alg: hello.SHA1, Sum: s1[:]}, {Alg: hello.SHA256, Sum: s256[:]}, {Alg: hello.SHA384, Sum: s384[:]}}
}

func (c Chain) matchRoot(trusted []hello.Hash) *hello.Hash {
	mine := c.RootHashes()
	for i, t := range trusted {
		for _, m := range mine {
			if t.Alg == m.Alg && bytes.Equal(t.Sum, m.Sum) {
				return &trusted[i]
			}
		}
	}
	return nil
}

func normName(s string) string { return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), ".")) }

// DomainMatches applies opt's domain rule to a leaf CN and the device's
// trusted suffix, case-insensitively and on label boundaries.
func DomainMatches(cn, suffix string, opt Options) bool {
	cn, suffix = normName(cn), normName(suffix)
	if cn == "" || suffix == "" {
		return false
	}
	if opt.DomainRule != DomainRegistrable {
		return cn == suffix || strings.HasSuffix(cn, "."+suffix)
	}
	labels := strings.Split(strings.TrimPrefix(cn, "*."), ".")
	tlds := opt.TLDLabels
	if tlds == nil {
		tlds = DefaultTLDLabels
	}
	if n := tlds[labels[len(labels)-1]]; n > 0 && len(labels) > n {
		labels = labels[len(labels)-n:]
	}
	d := strings.Join(labels, ".")
	return suffix == d || strings.HasSuffix(suffix, "."+d)
}
