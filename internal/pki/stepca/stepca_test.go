package stepca_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/pki"
	"github.com/amtops/amtops/internal/pki/stepca"
	"github.com/amtops/amtops/internal/testpeers"
)

func config(p testpeers.StepCAPeer) stepca.Config {
	return stepca.Config{
		URL: p.URL, RootFile: p.RootFile, Provisioner: p.Provisioner,
		CAConfigFile: p.CAConfigFile, PasswordFile: p.PasswordFile, Log: zerolog.Nop(),
	}
}

func newClient(t *testing.T) (*stepca.Client, testpeers.StepCAPeer) {
	t.Helper()
	p := testpeers.StepCA(t)
	c, err := stepca.New(config(p))
	if err != nil {
		t.Fatalf("stepca.New: %v", err)
	}
	return c, p
}

func siteCSR(t *testing.T, fqdn string) []byte {
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

func TestIssue(t *testing.T) {
	c, _ := newClient(t)
	ctx := context.Background()
	devKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	bareCSR, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "pc02.amt.test"}}, devKey)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		profile pki.Profile
		fqdn    string
		csr     []byte
		eku     x509.ExtKeyUsage
	}{
		{"server-auth site key", pki.ProfileServerAuth, "pc01.amt.test", siteCSR(t, "pc01.amt.test"), x509.ExtKeyUsageServerAuth},
		{"client-auth site key", pki.ProfileClientAuth, "pc01.amt.test", siteCSR(t, "pc01.amt.test"), x509.ExtKeyUsageClientAuth},
		{"server-auth key on device, CN only", pki.ProfileServerAuth, "PC02.amt.test", bareCSR, x509.ExtKeyUsageServerAuth},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.Issue(ctx, pki.Request{Profile: tt.profile, FQDN: tt.fqdn, CSR: tt.csr})
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			leaf, err := x509.ParseCertificate(got.Leaf)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Chain) != 2 || string(got.Root()) != string(c.Root()) {
				t.Fatalf("chain has %d certificates; want intermediate and the configured root", len(got.Chain))
			}
			roots, inter := x509.NewCertPool(), x509.NewCertPool()
			root, _ := x509.ParseCertificate(got.Root())
			roots.AddCert(root)
			ic, err := x509.ParseCertificate(got.Intermediates()[0])
			if err != nil {
				t.Fatal(err)
			}
			inter.AddCert(ic)
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{tt.eku}}); err != nil {
				t.Fatalf("leaf does not verify to root for %v: %v", tt.eku, err)
			}
			if k, ok := ic.PublicKey.(*rsa.PublicKey); !ok || k.N.BitLen() != 2048 {
				t.Errorf("intermediate key %T, want RSA-2048", ic.PublicKey)
			}
			want, _ := pki.NormalizeFQDN(tt.fqdn)
			if leaf.Subject.CommonName != want || len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != want {
				t.Errorf("names CN %q SAN %v, want %s", leaf.Subject.CommonName, leaf.DNSNames, want)
			}
			if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != tt.eku {
				t.Errorf("ExtKeyUsage %v, want only %v", leaf.ExtKeyUsage, tt.eku)
			}
			if ku := x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment; leaf.KeyUsage != ku {
				t.Errorf("KeyUsage %b, want %b", leaf.KeyUsage, ku)
			}
			if d := time.Until(leaf.NotAfter); d < 364*24*time.Hour || d > 366*24*time.Hour {
				t.Errorf("certificate valid for %v more, want about a year", d)
			}
			if got.Serial != leaf.SerialNumber.String() || got.CA != stepca.Name {
				t.Errorf("Issued %+v", got)
			}
		})
	}
}

func TestRevokeListedInCRL(t *testing.T) {
	c, p := newClient(t)
	ctx := context.Background()
	old, err := c.Issue(ctx, pki.Request{Profile: pki.ProfileServerAuth, FQDN: "pc10.amt.test", CSR: siteCSR(t, "pc10.amt.test")})
	if err != nil {
		t.Fatal(err)
	}
	live, err := c.Issue(ctx, pki.Request{Profile: pki.ProfileServerAuth, FQDN: "pc11.amt.test", CSR: siteCSR(t, "pc11.amt.test")})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Revoke(ctx, old.Serial, domain.ReasonSuperseded); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	// A retried revocation succeeds (step-ca says "already revoked").
	if err := c.Revoke(ctx, old.Serial, domain.ReasonSuperseded); err != nil {
		t.Fatalf("Revoke again: %v", err)
	}

	// Read the CRL straight from step-ca, not through the client.
	crl := getCRL(t, p)
	var found bool
	for _, e := range crl.RevokedCertificateEntries {
		switch e.SerialNumber.String() {
		case old.Serial:
			found = true
			if e.ReasonCode != int(domain.ReasonSuperseded) {
				t.Errorf("CRL reason for %s = %d, want 4", old.Serial, e.ReasonCode)
			}
		case live.Serial:
			t.Errorf("live certificate %s is on the CRL", live.Serial)
		}
	}
	if !found {
		t.Fatalf("revoked serial %s not on step-ca's CRL (%d entries)", old.Serial, len(crl.RevokedCertificateEntries))
	}

	tests := []struct {
		name    string
		serial  string
		revoked bool
	}{
		{"revoked", old.Serial, true},
		{"live", live.Serial, false},
	}
	for _, tt := range tests {
		t.Run("lookup "+tt.name, func(t *testing.T) {
			rec, err := c.Lookup(ctx, tt.serial)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Revoked != tt.revoked || (tt.revoked && rec.Reason != domain.ReasonSuperseded) {
				t.Errorf("Lookup = %+v", rec)
			}
		})
	}
}

func TestStepCARefusalIsPermanent(t *testing.T) {
	p := testpeers.StepCA(t)
	cfg := config(p)
	cfg.Validity = 100000 * time.Hour // beyond the provisioner's maxTLSCertDuration
	c, err := stepca.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Issue(context.Background(), pki.Request{Profile: pki.ProfileServerAuth, FQDN: "pc20.amt.test", CSR: siteCSR(t, "pc20.amt.test")})
	var ae *stepca.APIError
	if !errors.As(err, &ae) || ae.Status < 400 || ae.Status >= 500 {
		t.Fatalf("Issue = %v, want step-ca's 4xx refusal", err)
	}
	if !domain.IsPermanent(err) {
		t.Errorf("refusal %v is not permanent", err)
	}
}

func getCRL(t *testing.T, p testpeers.StepCAPeer) *x509.RevocationList {
	t.Helper()
	pemRoot, err := os.ReadFile(p.RootFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemRoot)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	resp, err := hc.Get(p.URL + "/1.0/crl")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	der, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /1.0/crl: %s %v", resp.Status, err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

func TestBadInputs(t *testing.T) {
	c, p := newClient(t)
	wrongPW := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(wrongPW, []byte("not the password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	newTests := []struct {
		name  string
		edit  func(*stepca.Config)
		field string
	}{
		{"http URL", func(c *stepca.Config) { c.URL = "http://127.0.0.1:1" }, "url"},
		{"no provisioner", func(c *stepca.Config) { c.Provisioner = "" }, "provisioner"},
		{"unknown provisioner", func(c *stepca.Config) { c.Provisioner = "nobody" }, "provisioner"},
		{"wrong password", func(c *stepca.Config) { c.PasswordFile = wrongPW }, "password_file"},
		{"no root", func(c *stepca.Config) { c.RootFile = "" }, "root_file"},
		{"root not PEM", func(c *stepca.Config) { c.RootFile = wrongPW }, "root_file"},
	}
	for _, tt := range newTests {
		t.Run("New "+tt.name, func(t *testing.T) {
			cfg := config(p)
			tt.edit(&cfg)
			_, err := stepca.New(cfg)
			var fe *domain.FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field {
				t.Fatalf("New = %v, want a field error for %q", err, tt.field)
			}
		})
	}
	ctx := context.Background()
	callTests := []struct {
		name  string
		call  func() error
		field string
	}{
		{"issue CSR for another name", func() error {
			_, err := c.Issue(ctx, pki.Request{Profile: pki.ProfileServerAuth, FQDN: "pc01.amt.test", CSR: siteCSR(t, "dc1.amt.test")})
			return err
		}, "csr.subject.cn"},
		{"issue empty FQDN", func() error {
			_, err := c.Issue(ctx, pki.Request{Profile: pki.ProfileServerAuth, CSR: siteCSR(t, "dc1.amt.test")})
			return err
		}, "fqdn"},
		{"revoke bad serial", func() error { return c.Revoke(ctx, "abc", domain.ReasonSuperseded) }, "serial"},
		{"revoke bad reason", func() error { return c.Revoke(ctx, "12345", 42) }, "reason"},
	}
	for _, tt := range callTests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var fe *domain.FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field {
				t.Fatalf("got %v, want a field error for %q", err, tt.field)
			}
		})
	}
}

// BenchmarkIssue measures one certificate signed by step-ca over HTTPS
// (token signing, TLS round trip, step-ca's own signing and database
// write), with a ready CSR.
func BenchmarkIssue(b *testing.B) {
	p := testpeers.StepCA(b)
	c, err := stepca.New(config(p))
	if err != nil {
		b.Fatal(err)
	}
	key, err := pki.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	csr, err := pki.CSR(key, "pc30.amt.test")
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for b.Loop() {
		if _, err := c.Issue(ctx, pki.Request{Profile: pki.ProfileServerAuth, FQDN: "pc30.amt.test", CSR: csr}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
}

// Without issuing anything, the chain a device-made key will verify
// through: step-ca's intermediate, then the root — the same CAs an issued
// certificate names (a job with only the root could not verify a leaf
// the intermediate signed).
func TestCAChain(t *testing.T) {
	c, _ := newClient(t)
	ctx := context.Background()
	var _ pki.Chainer = c
	chain, err := c.CAChain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Issue(ctx, pki.Request{Profile: pki.ProfileServerAuth, FQDN: "pc09.amt.test", CSR: siteCSR(t, "pc09.amt.test")})
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != len(got.Chain) {
		t.Fatalf("CAChain has %d certificates, an issued chain %d", len(chain), len(got.Chain))
	}
	for i := range chain {
		if string(chain[i]) != string(got.Chain[i]) {
			t.Errorf("CAChain[%d] differs from the issued chain", i)
		}
	}
	if string(chain[len(chain)-1]) != string(c.Root()) {
		t.Error("CAChain does not end in the configured root")
	}
}
