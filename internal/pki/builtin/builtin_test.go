package builtin_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/pki"
	"github.com/amtops/amtops/internal/pki/builtin"
	"github.com/amtops/amtops/internal/pki/pkitest"
	"github.com/amtops/amtops/internal/secrets"
)

func newCA(t testing.TB, st builtin.Storage, cfg builtin.Config) *builtin.CA {
	t.Helper()
	cfg.Log = zerolog.Nop()
	ca, err := builtin.New(context.Background(), st, cfg)
	if err != nil {
		t.Fatalf("builtin.New: %v", err)
	}
	return ca
}

func siteCSR(t testing.TB, fqdn string) []byte {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CSR(key, fqdn)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// deviceCSR is a CSR as a device would make it, with any names.
func deviceCSR(t testing.TB, key any, cn string, dns []string, ips []net.IP) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: cn}, DNSNames: dns, IPAddresses: ips,
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func rsaKey(t testing.TB, bits int) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestIssueProfiles(t *testing.T) {
	ctx := context.Background()
	ca := newCA(t, &pkitest.MemStorage{}, builtin.Config{
		ProfileValidity: map[pki.Profile]time.Duration{pki.ProfileClientAuth: 90 * 24 * time.Hour},
		CRLURL:          "http://127.0.0.1:8080/pki/crl",
	})
	devKey := rsaKey(t, 2048)
	tests := []struct {
		name     string
		profile  pki.Profile
		csr      []byte
		fqdn     string
		eku      x509.ExtKeyUsage
		validity time.Duration
	}{
		{"server-auth site key", pki.ProfileServerAuth, siteCSR(t, "pc01.amt.test"), "pc01.amt.test", x509.ExtKeyUsageServerAuth, 365 * 24 * time.Hour},
		{"client-auth site key", pki.ProfileClientAuth, siteCSR(t, "pc01.amt.test"), "pc01.amt.test", x509.ExtKeyUsageClientAuth, 90 * 24 * time.Hour},
		{"server-auth key on device, no names", pki.ProfileServerAuth, deviceCSR(t, devKey, "", nil, nil), "PC02.amt.test.", x509.ExtKeyUsageServerAuth, 365 * 24 * time.Hour},
		{"server-auth key on device, upper-case CN", pki.ProfileServerAuth, deviceCSR(t, devKey, "PC02.AMT.TEST", []string{"pc02.amt.test"}, nil), "pc02.amt.test", x509.ExtKeyUsageServerAuth, 365 * 24 * time.Hour},
		{"PEM CSR", pki.ProfileServerAuth, pki.EncodeCSR(siteCSR(t, "pc03.amt.test")), "pc03.amt.test", x509.ExtKeyUsageServerAuth, 365 * 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ca.Issue(ctx, pki.Request{Profile: tt.profile, FQDN: tt.fqdn, CSR: tt.csr})
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			want, _ := pki.NormalizeFQDN(tt.fqdn)
			leaf := verifyIssued(t, got, tt.eku)
			if leaf.Subject.CommonName != want || len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != want {
				t.Errorf("names: CN %q SAN %v, want %q", leaf.Subject.CommonName, leaf.DNSNames, want)
			}
			if ku := x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment; leaf.KeyUsage != ku {
				t.Errorf("KeyUsage = %b, want %b", leaf.KeyUsage, ku)
			}
			if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != tt.eku {
				t.Errorf("ExtKeyUsage = %v, want [%v]", leaf.ExtKeyUsage, tt.eku)
			}
			if d := leaf.NotAfter.Sub(leaf.NotBefore) - time.Hour; d != tt.validity {
				t.Errorf("validity = %v, want %v", d, tt.validity)
			}
			if len(leaf.CRLDistributionPoints) != 1 {
				t.Errorf("CRL distribution points = %v", leaf.CRLDistributionPoints)
			}
			if got.Serial != leaf.SerialNumber.String() || got.CA != builtin.Name || got.Subject != want {
				t.Errorf("Issued = %+v", got)
			}
			if n := leaf.SerialNumber; n.Sign() <= 0 || n.BitLen() > 128 {
				t.Errorf("serial %v: want positive, at most 128 bits", n)
			}
			rec := got.Record("dev1", domain.PurposeServerAuth, time.Now())
			if rec.Serial != got.Serial || rec.Status != domain.CertIssued || rec.Profile != string(tt.profile) {
				t.Errorf("Record = %+v", rec)
			}
			lk, err := ca.Lookup(ctx, got.Serial)
			if err != nil || lk.Revoked || lk.Profile != tt.profile || string(lk.Leaf) != string(got.Leaf) {
				t.Errorf("Lookup = %+v, %v", lk, err)
			}
		})
	}
}

// verifyIssued checks that the leaf verifies to the chain's root for eku
// and returns it.
func verifyIssued(t *testing.T, got *pki.Issued, eku x509.ExtKeyUsage) *x509.Certificate {
	t.Helper()
	leaf, err := x509.ParseCertificate(got.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Chain) != 2 {
		t.Fatalf("chain has %d certificates, want issuing CA and root", len(got.Chain))
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	root, err := x509.ParseCertificate(got.Root())
	if err != nil {
		t.Fatal(err)
	}
	roots.AddCert(root)
	for _, der := range got.Intermediates() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{eku}, DNSName: got.Subject}); err != nil {
		t.Fatalf("leaf does not verify to root: %v", err)
	}
	if root.Subject.String() != root.Issuer.String() {
		t.Errorf("last chain certificate %s is not self-signed", root.Subject)
	}
	return leaf
}

func TestCAKeysAreRSA2048(t *testing.T) {
	ca := newCA(t, &pkitest.MemStorage{}, builtin.Config{})
	for i, der := range ca.Chain() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		k, ok := c.PublicKey.(*rsa.PublicKey)
		if !ok || k.N.BitLen() != 2048 {
			t.Errorf("chain[%d] %s: key %T, want RSA-2048", i, c.Subject, c.PublicKey)
		}
		if !c.IsCA {
			t.Errorf("chain[%d] is not a CA", i)
		}
	}
}

func TestIssueBadInputs(t *testing.T) {
	ctx := context.Background()
	ca := newCA(t, &pkitest.MemStorage{}, builtin.Config{})
	good := siteCSR(t, "pc01.amt.test")
	tampered := append([]byte(nil), good...)
	tampered[len(tampered)-5] ^= 0xff // inside the signature
	ecKey, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	tests := []struct {
		name  string
		req   pki.Request
		field string
	}{
		{"empty FQDN", pki.Request{Profile: pki.ProfileServerAuth, CSR: good}, "fqdn"},
		{"unqualified FQDN", pki.Request{Profile: pki.ProfileServerAuth, FQDN: "pc01", CSR: good}, "fqdn"},
		{"bad characters in FQDN", pki.Request{Profile: pki.ProfileServerAuth, FQDN: "pc_01.amt.test", CSR: good}, "fqdn"},
		{"bad profile", pki.Request{Profile: "code-signing", FQDN: "pc01.amt.test", CSR: good}, "profile"},
		{"no profile", pki.Request{FQDN: "pc01.amt.test", CSR: good}, "profile"},
		{"no CSR", pki.Request{Profile: pki.ProfileServerAuth, FQDN: "pc01.amt.test"}, "csr"},
		{"garbage CSR", pki.Request{Profile: pki.ProfileServerAuth, FQDN: "pc01.amt.test", CSR: []byte("not a csr")}, "csr"},
		{"bad PEM CSR", pki.Request{Profile: pki.ProfileServerAuth, FQDN: "pc01.amt.test", CSR: []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")}, "csr"},
		{"signature does not verify", pki.Request{Profile: pki.ProfileServerAuth, FQDN: "pc01.amt.test", CSR: tampered}, "csr.signature"},
		{"CSR for another CN", pki.Request{Profile: pki.ProfileServerAuth, FQDN: "pc01.amt.test", CSR: siteCSR(t, "dc1.amt.test")}, "csr.subject.cn"},
		{"CSR with another SAN", pki.Request{Profile: pki.ProfileServerAuth, FQDN: "pc01.amt.test",
			CSR: deviceCSR(t, rsaKey(t, 2048), "pc01.amt.test", []string{"pc01.amt.test", "www.example.com"}, nil)}, "csr.san.dns"},
		{"CSR with an IP SAN", pki.Request{Profile: pki.ProfileServerAuth, FQDN: "pc01.amt.test",
			CSR: deviceCSR(t, rsaKey(t, 2048), "pc01.amt.test", nil, []net.IP{net.IPv4(10, 1, 2, 3)})}, "csr.san.ip"},
		{"RSA-1024 key", pki.Request{Profile: pki.ProfileServerAuth, FQDN: "pc01.amt.test",
			CSR: deviceCSR(t, rsaKey(t, 1024), "pc01.amt.test", nil, nil)}, "csr.key"},
		{"P-224 key", pki.Request{Profile: pki.ProfileServerAuth, FQDN: "pc01.amt.test",
			CSR: deviceCSR(t, ecKey, "pc01.amt.test", nil, nil)}, "csr.key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ca.Issue(ctx, tt.req)
			if err == nil {
				t.Fatalf("Issue = serial %s, want an error naming %s", got.Serial, tt.field)
			}
			var fe *domain.FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field {
				t.Fatalf("Issue error = %v, want a field error for %q", err, tt.field)
			}
			if !domain.IsPermanent(err) {
				t.Errorf("error %v is not permanent", err)
			}
		})
	}
}

func TestRevokeAndCRL(t *testing.T) {
	ctx := context.Background()
	ca := newCA(t, &pkitest.MemStorage{}, builtin.Config{})
	srv := httptest.NewServer(ca.Handler())
	t.Cleanup(srv.Close)

	issue := func(fqdn string) *pki.Issued {
		t.Helper()
		got, err := ca.Issue(ctx, pki.Request{Profile: pki.ProfileServerAuth, FQDN: fqdn, CSR: siteCSR(t, fqdn)})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	old, gone, live := issue("pc01.amt.test"), issue("pc02.amt.test"), issue("pc03.amt.test")

	// An empty CRL is served before anything is revoked.
	if crl := fetchCRL(t, srv.URL, ca); len(crl.RevokedCertificateEntries) != 0 {
		t.Fatalf("fresh CRL lists %d entries", len(crl.RevokedCertificateEntries))
	}
	if err := ca.Revoke(ctx, old.Serial, domain.ReasonSuperseded); err != nil {
		t.Fatalf("Revoke superseded: %v", err)
	}
	if err := ca.Revoke(ctx, gone.Serial, domain.ReasonCessationOfOperation); err != nil {
		t.Fatalf("Revoke cessation: %v", err)
	}
	// A retry with another reason succeeds and keeps the first reason.
	if err := ca.Revoke(ctx, old.Serial, domain.ReasonKeyCompromise); err != nil {
		t.Fatalf("Revoke again: %v", err)
	}

	crl := fetchCRL(t, srv.URL, ca)
	want := map[string]int{old.Serial: 4, gone.Serial: 5}
	if len(crl.RevokedCertificateEntries) != len(want) {
		t.Fatalf("CRL lists %d entries, want %d", len(crl.RevokedCertificateEntries), len(want))
	}
	for _, e := range crl.RevokedCertificateEntries {
		s := e.SerialNumber.String()
		if r, ok := want[s]; !ok || r != e.ReasonCode {
			t.Errorf("CRL entry %s reason %d; want %v", s, e.ReasonCode, want)
		}
		if s == live.Serial {
			t.Errorf("live certificate %s is on the CRL", s)
		}
	}

	tests := []struct {
		name    string
		serial  string
		revoked bool
		reason  domain.RevocationReason
	}{
		{"superseded", old.Serial, true, domain.ReasonSuperseded},
		{"cessation", gone.Serial, true, domain.ReasonCessationOfOperation},
		{"live", live.Serial, false, 0},
	}
	for _, tt := range tests {
		t.Run("lookup "+tt.name, func(t *testing.T) {
			rec, err := ca.Lookup(ctx, tt.serial)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Revoked != tt.revoked || rec.Reason != tt.reason || rec.Revoked == rec.RevokedAt.IsZero() {
				t.Errorf("Lookup = %+v, want revoked %v reason %d", rec, tt.revoked, tt.reason)
			}
		})
	}
}

func fetchCRL(t *testing.T, base string, ca *builtin.CA) *x509.RevocationList {
	t.Helper()
	resp, err := http.Get(base + "/crl")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	der, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/pkix-crl" {
		t.Fatalf("GET /crl: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatalf("parse CRL: %v", err)
	}
	issuing, err := x509.ParseCertificate(ca.Chain()[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(issuing); err != nil {
		t.Fatalf("CRL not signed by the issuing CA: %v", err)
	}
	return crl
}

func TestRevokeBadInputs(t *testing.T) {
	ctx := context.Background()
	ca := newCA(t, &pkitest.MemStorage{}, builtin.Config{})
	got, err := ca.Issue(ctx, pki.Request{Profile: pki.ProfileServerAuth, FQDN: "pc01.amt.test", CSR: siteCSR(t, "pc01.amt.test")})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		serial   string
		reason   domain.RevocationReason
		field    string
		notFound bool
	}{
		{"empty serial", "", 4, "serial", false},
		{"hex serial", "0x1f", 4, "serial", false},
		{"negative serial", "-5", 4, "serial", false},
		{"unknown serial", "12345", 4, "", true},
		{"reason 7", got.Serial, 7, "reason", false},
		{"reason 11", got.Serial, 11, "reason", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ca.Revoke(ctx, tt.serial, tt.reason)
			if tt.notFound {
				if !errors.Is(err, domain.ErrNotFound) {
					t.Fatalf("Revoke = %v, want not found", err)
				}
				return
			}
			var fe *domain.FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field {
				t.Fatalf("Revoke = %v, want a field error for %q", err, tt.field)
			}
		})
	}
	if _, err := ca.Lookup(ctx, "12345"); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("Lookup unknown = %v, want not found", err)
	}
}

func TestStatePersists(t *testing.T) {
	ctx := context.Background()
	st := &pkitest.MemStorage{}
	first := newCA(t, st, builtin.Config{})
	got, err := first.Issue(ctx, pki.Request{Profile: pki.ProfileServerAuth, FQDN: "pc01.amt.test", CSR: siteCSR(t, "pc01.amt.test")})
	if err != nil {
		t.Fatal(err)
	}
	second := newCA(t, st, builtin.Config{}) // a restart, or another replica
	if pki.Fingerprint(first.Root()) != pki.Fingerprint(second.Root()) || string(first.Chain()[0]) != string(second.Chain()[0]) {
		t.Fatal("second instance over the same storage is a different CA")
	}
	if err := second.Revoke(ctx, got.Serial, domain.ReasonSuperseded); err != nil {
		t.Fatalf("second instance revokes the first's certificate: %v", err)
	}
	rec, err := first.Lookup(ctx, got.Serial)
	if err != nil || !rec.Revoked {
		t.Fatalf("first instance Lookup = %+v, %v; want revoked", rec, err)
	}
	der, err := first.CRL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil || len(crl.RevokedCertificateEntries) != 1 {
		t.Fatalf("first instance CRL: %v, entries %d", err, len(crl.RevokedCertificateEntries))
	}
}

func TestConcurrentFirstStart(t *testing.T) {
	st := &pkitest.MemStorage{}
	const replicas = 4
	roots := make([]string, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Go(func() {
			ca, err := builtin.New(context.Background(), st, builtin.Config{Log: zerolog.Nop()})
			errs[i] = err
			if err == nil {
				roots[i] = pki.Fingerprint(ca.Root())
			}
		})
	}
	wg.Wait()
	for i := range replicas {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		if roots[i] != roots[0] {
			t.Errorf("replica %d root %s, replica 0 root %s", i, roots[i], roots[0])
		}
	}
	if st.Puts != 1 {
		t.Errorf("storage took %d writes, want 1 CA", st.Puts)
	}
}

func TestSealedStorage(t *testing.T) {
	mem := &pkitest.MemStorage{}
	sealer := newSealer(t)
	ca := newCA(t, builtin.Sealed(mem, sealer), builtin.Config{})
	raw, ok := mem.Raw("ca")
	if !ok {
		t.Fatal("no CA stored")
	}
	if bytes.Contains(raw, ca.Root()[:64]) {
		t.Error("stored CA bundle is not sealed")
	}
	again := newCA(t, builtin.Sealed(mem, sealer), builtin.Config{})
	if pki.Fingerprint(again.Root()) != pki.Fingerprint(ca.Root()) {
		t.Error("reopened sealed CA differs")
	}
	_, err := builtin.New(context.Background(), builtin.Sealed(mem, newSealer(t)), builtin.Config{Log: zerolog.Nop()})
	if !errors.Is(err, secrets.ErrOpen) {
		t.Errorf("New with another site key = %v, want %v", err, secrets.ErrOpen)
	}
}

func newSealer(t testing.TB) *secrets.Sealer {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	s, err := secrets.New(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCAPEM(t *testing.T) {
	ca := newCA(t, &pkitest.MemStorage{}, builtin.Config{})
	srv := httptest.NewServer(ca.Handler())
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL + "/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var n int
	for blk, rest := pem.Decode(body); blk != nil; blk, rest = pem.Decode(rest) {
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 2 {
		t.Errorf("/ca.pem holds %d certificates, want 2", n)
	}
}

// BenchmarkIssue measures one certificate: with the site generating the
// device's RSA-2048 key (the default flow) and signing a ready CSR only
// (key_on_device, or the CA's own share of the cost).
func BenchmarkIssue(b *testing.B) {
	ctx := context.Background()
	ca := newCA(b, &pkitest.MemStorage{}, builtin.Config{})
	b.Run("site-keygen", func(b *testing.B) {
		for b.Loop() {
			key, err := pki.GenerateKey()
			if err != nil {
				b.Fatal(err)
			}
			csr, err := pki.CSR(key, "pc01.amt.test")
			if err != nil {
				b.Fatal(err)
			}
			if _, err := ca.Issue(ctx, pki.Request{Profile: pki.ProfileServerAuth, FQDN: "pc01.amt.test", CSR: csr}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
	})
	b.Run("sign-only", func(b *testing.B) {
		csr := siteCSR(b, "pc01.amt.test")
		for b.Loop() {
			if _, err := ca.Issue(ctx, pki.Request{Profile: pki.ProfileServerAuth, FQDN: "pc01.amt.test", CSR: csr}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
	})
}
