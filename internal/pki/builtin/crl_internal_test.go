package builtin

import (
	"context"
	"crypto/x509"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/pki"
	"github.com/amtops/amtops/internal/pki/pkitest"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time { return c.t }

func issue(t *testing.T, ca *CA, fqdn string) string {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CSR(key, fqdn)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ca.Issue(context.Background(), pki.Request{Profile: pki.ProfileServerAuth, FQDN: fqdn, CSR: csr})
	if err != nil {
		t.Fatal(err)
	}
	return got.Serial
}

func crlSerials(t *testing.T, ca *CA) (map[string]int, time.Time) {
	t.Helper()
	der, err := ca.CRL(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, e := range crl.RevokedCertificateEntries {
		out[e.SerialNumber.String()] = e.ReasonCode
	}
	return out, crl.ThisUpdate
}

// Two replicas revoke at once and the CRL written last misses the other's
// serial: serving the CRL notices and reissues it.
func TestCRLHealsLostUpdate(t *testing.T) {
	ctx := context.Background()
	st := &pkitest.MemStorage{}
	ca, err := New(ctx, st, Config{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	a, b := issue(t, ca, "pc01.amt.test"), issue(t, ca, "pc02.amt.test")
	if err := ca.Revoke(ctx, a, domain.ReasonSuperseded); err != nil {
		t.Fatal(err)
	}
	// Replica B's revocation reached the set, its CRL write was overwritten.
	m := revocation{Serial: b, Reason: domain.ReasonCessationOfOperation, At: time.Now()}.member()
	if _, err := st.PutIfAbsent(ctx, keyRevoked(b), []byte(m)); err != nil {
		t.Fatal(err)
	}
	if err := st.AddToSet(ctx, setRevoked, m); err != nil {
		t.Fatal(err)
	}
	got, _ := crlSerials(t, ca)
	if got[a] != 4 || got[b] != 5 || len(got) != 2 {
		t.Fatalf("CRL = %v, want %s:4 and %s:5", got, a, b)
	}
}

func TestCRLRefreshedAtHalfLife(t *testing.T) {
	ctx := context.Background()
	clk := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	ca, err := New(ctx, &pkitest.MemStorage{}, Config{Log: zerolog.Nop(), Now: clk.Now, CRLValidity: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	s := issue(t, ca, "pc01.amt.test")
	if err := ca.Revoke(ctx, s, domain.ReasonSuperseded); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		advance time.Duration
		fresh   bool
	}{
		{"before half life", 23 * time.Hour, false},
		{"after half life", 2 * time.Hour, true},
	}
	_, prev := crlSerials(t, ca)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk.t = clk.t.Add(tt.advance)
			got, this := crlSerials(t, ca)
			if got[s] != 4 {
				t.Errorf("CRL lost %s", s)
			}
			if this.After(prev) != tt.fresh {
				t.Errorf("thisUpdate %v after %v = %v, want %v", this, prev, this.After(prev), tt.fresh)
			}
			prev = this
		})
	}
}
