package provcert

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/amtops/amtops/internal/hello"
	"github.com/amtops/amtops/internal/pki"
)

// RSA keys are slow to make on a shared machine: one root, one
// intermediate and one leaf key serve every test chain.
var (
	keysOnce                   sync.Once
	rootKey, interKey, leafKey crypto.Signer
	testRoot                   *x509.Certificate // one root, so every chainOf chain has one root hash
)

func keys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		var ks [3]crypto.Signer
		for i := range ks {
			k, err := pki.GenerateKey()
			if err != nil {
				panic(err)
			}
			ks[i] = k
		}
		rootKey, interKey, leafKey = ks[0], ks[1], ks[2]
		r, err := makeCert(rootSpec(), nil, rootKey, rootKey)
		if err != nil {
			panic(err)
		}
		testRoot = r
	})
}

var now = time.Now()

func rootSpec() certSpec {
	return certSpec{subject: pkix.Name{CommonName: "test root"}, ca: true, notBefore: now.Add(-time.Hour), notAfter: now.AddDate(5, 0, 0)}
}

func leafSpec(cn string) certSpec {
	return certSpec{subject: pkix.Name{CommonName: cn, OrganizationalUnit: []string{SetupOU}},
		eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, amtEKU: true,
		notBefore: now.Add(-time.Hour), notAfter: now.AddDate(1, 0, 0)}
}

func mk(t testing.TB, spec certSpec, parent *x509.Certificate, key, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	x, err := makeCert(spec, parent, key, signer)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// chainOf makes leaf → root with the leaf spec tuned.
func chainOf(t testing.TB, tune func(*certSpec)) Chain {
	t.Helper()
	keys(t)
	root := testRoot
	ls := leafSpec("prov.amt.test")
	if tune != nil {
		tune(&ls)
	}
	return Chain{Certs: []*x509.Certificate{mk(t, ls, root, leafKey, rootKey), root}}
}

func sha256Of(x *x509.Certificate) hello.Hash {
	s := sha256.Sum256(x.Raw)
	return hello.Hash{Alg: hello.SHA256, Sum: s[:]}
}

// factoryList is n SHA-256 hashes of roots that are not ours.
func factoryList(n int) []hello.Hash {
	out := make([]hello.Hash, n)
	for i := range out {
		out[i] = hello.Hash{Alg: hello.SHA256, Sum: bytes.Repeat([]byte{byte(i + 1)}, 32)}
	}
	return out
}

func TestNewTestPairIsReady(t *testing.T) {
	p, err := NewTestPair("AMT.Test.")
	if err != nil {
		t.Fatal(err)
	}
	id, err := LoadPEM(p.ChainPEM, p.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	c := id.Chain()
	if len(c.Certs) != 2 || c.Leaf().Subject.CommonName != "prov.amt.test" || p.LeafCN != "prov.amt.test" || p.Domain != "amt.test" {
		t.Fatalf("chain %d certs, leaf %q, pair %q/%q", len(c.Certs), c.Leaf().Subject.CommonName, p.LeafCN, p.Domain)
	}
	if got := hex.EncodeToString(sha256Of(c.Root()).Sum); got != p.RootSHA256 {
		t.Fatalf("RootSHA256 %s, root hashes to %s", p.RootSHA256, got)
	}
	if !bytes.Equal(p.RootPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Root().Raw})) {
		t.Error("RootPEM is not the chain's root")
	}
	trusted, _ := hex.DecodeString(p.RootSHA256)
	r := c.Check(Device{Hashes: append(factoryList(24), hello.Hash{Alg: hello.SHA256, Sum: trusted}), DomainSuffix: "amt.test"}, time.Now(), Options{})
	if !r.Ready() || r.Err() != nil || r.Matched == nil || r.Matched.Alg != hello.SHA256 {
		t.Fatalf("test pair not ready: %+v", r.Problems)
	}
	if _, err := NewTestPair("nodots"); err == nil {
		t.Error("NewTestPair accepted a single-label domain")
	}
}

func TestCheck(t *testing.T) {
	good := chainOf(t, nil)
	root := good.Root()
	trusts := []hello.Hash{sha256Of(root)}
	dev := Device{Hashes: trusts, DomainSuffix: "amt.test"}
	rh := good.RootHashes()
	keys(t)
	inter := mk(t, certSpec{subject: pkix.Name{CommonName: "test intermediate"}, ca: true, notBefore: now.Add(-time.Hour), notAfter: now.AddDate(2, 0, 0)}, root, interKey, rootKey)
	viaInter := Chain{Certs: []*x509.Certificate{mk(t, leafSpec("prov.amt.test"), inter, leafKey, interKey), inter, root}}

	for _, tc := range []struct {
		name  string
		chain Chain
		dev   Device
		opt   Options
		at    time.Time
		want  []Reason // nil: ready
		msg   string   // a message fragment that must appear
	}{
		{name: "ready", chain: good, dev: dev},
		{name: "ready via intermediate", chain: viaInter, dev: dev},
		{name: "sha1 entry matches", chain: good, dev: Device{Hashes: append(factoryList(3), rh[0]), DomainSuffix: "amt.test"}},
		{name: "sha384 entry matches", chain: good, dev: Device{Hashes: []hello.Hash{rh[2]}, DomainSuffix: "amt.test"}},
		{name: "root not among 25", chain: good, dev: Device{Hashes: factoryList(25), DomainSuffix: "amt.test"},
			want: []Reason{ReasonRootNotTrusted}, msg: "no provisioning root matches any of the 25 hashes the device trusts"},
		{name: "hash of another alg does not count", chain: good,
			dev:  Device{Hashes: []hello.Hash{{Alg: hello.SHA1, Sum: rh[1].Sum[:20]}}, DomainSuffix: "amt.test"},
			want: []Reason{ReasonRootNotTrusted}},
		{name: "no hashes", chain: good, dev: Device{DomainSuffix: "amt.test"}, want: []Reason{ReasonNoHashes}},
		{name: "other domain", chain: good, dev: Device{Hashes: trusts, DomainSuffix: "corp.example"}, want: []Reason{ReasonDomainMismatch},
			msg: `leaf CN "prov.amt.test" is not in the device's trusted domain "corp.example"`},
		{name: "suffix must fall on a label", chain: good, dev: Device{Hashes: trusts, DomainSuffix: "mt.test"}, want: []Reason{ReasonDomainMismatch}},
		{name: "suffix case and dot", chain: good, dev: Device{Hashes: trusts, DomainSuffix: "AMT.Test."}},
		{name: "subdomain device, strict", chain: good, dev: Device{Hashes: trusts, DomainSuffix: "site.amt.test"}, want: []Reason{ReasonDomainMismatch}},
		{name: "subdomain device, registrable rule", chain: good, dev: Device{Hashes: trusts, DomainSuffix: "site.amt.test"},
			opt: Options{DomainRule: DomainRegistrable, TLDLabels: map[string]int{"test": 2}}},
		{name: "registrable rule, TLD not listed: CN taken whole", chain: good, dev: dev,
			opt: Options{DomainRule: DomainRegistrable}, want: []Reason{ReasonDomainMismatch}},
		{name: "no suffix configured", chain: good, dev: Device{Hashes: trusts}, want: []Reason{ReasonNoDomainSuffix}},
		{name: "OU only", chain: chainOf(t, func(s *certSpec) { s.amtEKU = false }), dev: dev},
		{name: "EKU only", chain: chainOf(t, func(s *certSpec) { s.subject.OrganizationalUnit = nil }), dev: dev},
		{name: "neither EKU nor OU", chain: chainOf(t, func(s *certSpec) {
			s.amtEKU = false
			s.subject.OrganizationalUnit = []string{"intel(r) client setup certificate"}
		}), dev: dev, want: []Reason{ReasonNoProvisioningID}},
		{name: "server auth required and missing", chain: chainOf(t, func(s *certSpec) { s.eku = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth} }),
			dev: dev, opt: Options{RequireServerAuth: true}, want: []Reason{ReasonNoServerAuth}},
		{name: "expired", chain: good, dev: dev, at: now.AddDate(1, 1, 0), want: []Reason{ReasonExpired}, msg: `"prov.amt.test" expired`},
		{name: "not yet valid", chain: good, dev: dev, at: now.Add(-2 * time.Hour), want: []Reason{ReasonNotYetValid, ReasonNotYetValid}},
		{name: "root left out", chain: Chain{Certs: good.Certs[:1]}, dev: Device{Hashes: trusts, DomainSuffix: "amt.test"},
			want: []Reason{ReasonChain, ReasonRootNotTrusted}, msg: "include the root"},
		{name: "signed by another root", chain: Chain{Certs: []*x509.Certificate{viaInter.Leaf(), root}}, dev: dev, want: []Reason{ReasonChain}},
		{name: "sha1 signature", chain: chainOf(t, func(s *certSpec) { s.sigAlg = x509.SHA1WithRSA }), dev: dev,
			want: []Reason{ReasonWeakSignature, ReasonChain}},
		{name: "empty", chain: Chain{}, dev: dev, want: []Reason{ReasonChain}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at := tc.at
			if at.IsZero() {
				at = now
			}
			r := tc.chain.Check(tc.dev, at, tc.opt)
			var got []Reason
			for _, p := range r.Problems {
				got = append(got, p.Reason)
				if p.Message == "" {
					t.Errorf("%s without a message", p.Reason)
				}
			}
			if strings.Join(reasons(got), ",") != strings.Join(reasons(tc.want), ",") {
				t.Fatalf("reasons %v, want %v (%v)", got, tc.want, r.Problems)
			}
			if r.Ready() != (len(tc.want) == 0) || (r.Err() == nil) != r.Ready() {
				t.Errorf("Ready %v, Err %v with problems %v", r.Ready(), r.Err(), r.Problems)
			}
			if tc.msg != "" && (r.Err() == nil || !strings.Contains(r.Err().Error(), tc.msg)) {
				t.Errorf("error %v does not say %q", r.Err(), tc.msg)
			}
			for _, w := range tc.want {
				if !r.Has(w) {
					t.Errorf("Has(%s) false", w)
				}
			}
		})
	}
}

func reasons(rs []Reason) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = string(r)
	}
	return out
}

func TestDomainMatches(t *testing.T) {
	reg := Options{DomainRule: DomainRegistrable}
	regUK := Options{DomainRule: DomainRegistrable, TLDLabels: map[string]int{"uk": 3, "com": 2}}
	for _, tc := range []struct {
		cn, suffix string
		opt        Options
		want       bool
	}{
		{"prov.amt.test", "amt.test", Options{}, true},
		{"amt.test", "amt.test", Options{}, true},
		{"PROV.Amt.Test.", "amt.test", Options{}, true},
		{"prov.amt.test", "test", Options{}, true},
		{"prov.amt.test", "mt.test", Options{}, false},
		{"prov.evilamt.test", "amt.test", Options{}, false},
		{"prov.amt.test", "site.amt.test", Options{}, false},
		{"*.amt.test", "amt.test", Options{}, true},
		{"", "amt.test", Options{}, false},
		{"prov.amt.test", "", Options{}, false},

		{"prov.example.com", "example.com", reg, true},
		{"prov.example.com", "site.example.com", reg, true},
		{"prov.site.example.com", "other.example.com", reg, true}, // cut to example.com
		{"prov.example.com", "example.net", reg, false},
		{"prov.example.com", "badexample.com", reg, false},
		{"*.example.com", "a.b.example.com", reg, true},
		{"prov.amt.test", "amt.test", reg, false}, // TLD not listed: whole CN, the device is not below it
		{"amt.test", "site.amt.test", reg, true},
		{"prov.example.co.uk", "site.example.co.uk", regUK, true},
		{"prov.example.co.uk", "other.co.uk", regUK, false},
	} {
		if got := DomainMatches(tc.cn, tc.suffix, tc.opt); got != tc.want {
			t.Errorf("DomainMatches(%q, %q, rule %d) = %v, want %v", tc.cn, tc.suffix, tc.opt.DomainRule, got, tc.want)
		}
	}
}

func pemOf(xs ...*x509.Certificate) []byte {
	var b []byte
	for _, x := range xs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: x.Raw})...)
	}
	return b
}

func keyPEM(t testing.TB, k crypto.Signer) []byte {
	t.Helper()
	d, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: d})
}

func TestLoad(t *testing.T) {
	good := chainOf(t, nil)
	leaf, root := good.Leaf(), good.Root()
	other := mk(t, certSpec{subject: pkix.Name{CommonName: "unrelated"}, ca: true, notBefore: now, notAfter: now.AddDate(1, 0, 0)}, nil, interKey, interKey)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pfx, err := pkcs12.Modern.Encode(leafKey, leaf, []*x509.Certificate{root}, "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	pfxPath := write("prov.pfx", pfx)
	chainPath, keyPath := write("chain.pem", pemOf(leaf, root)), write("key.pem", keyPEM(t, leafKey))

	for _, tc := range []struct {
		name string
		load func() (*Identity, error)
		err  string
	}{
		{"pem", func() (*Identity, error) { return LoadPEM(pemOf(leaf, root), keyPEM(t, leafKey)) }, ""},
		{"pem files", func() (*Identity, error) { return LoadPEMFiles(chainPath, keyPath) }, ""},
		{"pkcs12", func() (*Identity, error) { return LoadPKCS12(pfx, "s3cret") }, ""},
		{"pkcs12 file", func() (*Identity, error) { return LoadPKCS12File(pfxPath, "s3cret") }, ""},
		{"pkcs12 wrong password", func() (*Identity, error) { return LoadPKCS12(pfx, "guess") }, "load pkcs12"},
		{"pkcs12 garbage", func() (*Identity, error) { return LoadPKCS12([]byte("not a pfx"), "") }, "load pkcs12"},
		{"key of another cert", func() (*Identity, error) { return LoadPEM(pemOf(leaf, root), keyPEM(t, rootKey)) }, "load pem"},
		{"unrelated certificate", func() (*Identity, error) { return LoadPEM(pemOf(leaf, root, other), keyPEM(t, leafKey)) }, `"CN=unrelated" is not on the issuer path`},
		{"no certificate", func() (*Identity, error) { return LoadPEM(keyPEM(t, leafKey), keyPEM(t, leafKey)) }, "load pem"},
		{"missing file", func() (*Identity, error) { return LoadPEMFiles(filepath.Join(dir, "nope"), keyPath) }, "read chain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := tc.load()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Errorf("error repeats the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c := id.Chain()
			if len(c.Certs) != 2 || !c.Leaf().Equal(leaf) || !c.Root().Equal(root) {
				t.Fatalf("chain %v", c.Certs)
			}
		})
	}
	// Order in the file after the leaf does not matter; the leaf must lead.
	if c, err := ParseChainPEM(pemOf(leaf, other, root)); err == nil {
		t.Errorf("ParseChainPEM accepted an unrelated certificate: %d certs", len(c.Certs))
	}
	if _, err := ParseChainPEM([]byte("junk")); err == nil {
		t.Error("ParseChainPEM accepted no certificate")
	}
}

func TestSignDigestRefuses(t *testing.T) {
	good := chainOf(t, nil)
	id, err := newIdentity(good, leafKey)
	if err != nil {
		t.Fatal(err)
	}
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecLeaf := mk(t, leafSpec("prov.amt.test"), good.Root(), ek, rootKey)
	ecID, err := newIdentity(Chain{Certs: []*x509.Certificate{ecLeaf, good.Root()}}, ek)
	if err != nil {
		t.Fatal(err)
	}
	d256 := make([]byte, 32)
	for _, tc := range []struct {
		name   string
		id     *Identity
		digest []byte
		opts   SignOpts
	}{
		{"raw rsa", id, d256, SignOpts{Hash: 0}},
		{"md5sha1 (TLS 1.1)", id, make([]byte, 36), SignOpts{Hash: crypto.MD5SHA1}},
		{"digest length", id, make([]byte, 20), SignOpts{Hash: crypto.SHA256}},
		{"pss on ecdsa", ecID, d256, SignOpts{Hash: crypto.SHA256, PSS: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if sig, err := tc.id.SignDigest(tc.digest, tc.opts); err == nil {
				t.Fatalf("signed (%d bytes)", len(sig))
			}
		})
	}
	for _, tc := range []struct {
		name string
		id   *Identity
		opts SignOpts
	}{
		{"pkcs1", id, SignOpts{Hash: crypto.SHA256}},
		{"pss", id, SignOpts{Hash: crypto.SHA256, PSS: true, SaltLength: -1}},
		{"ecdsa", ecID, SignOpts{Hash: crypto.SHA256}},
	} {
		t.Run("signs "+tc.name, func(t *testing.T) {
			sig, err := tc.id.SignDigest(d256, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := verify(tc.id.Chain().Leaf().PublicKey, d256, sig, tc.opts); err != nil {
				t.Fatal(err)
			}
		})
	}
	if _, err := newIdentity(good, ek); err == nil || !strings.Contains(err.Error(), "does not match leaf") {
		t.Errorf("identity with a foreign key: %v", err)
	}
}
