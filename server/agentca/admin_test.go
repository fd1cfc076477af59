package agentca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/server/agentca"
)

func csr(t *testing.T, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestSignAdmin(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := now
	ca, err := agentca.Open(context.Background(), newStore(t), agentca.Options{Clock: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	// The CSR asks for another name; only its key counts.
	cert, err := ca.SignAdmin(csr(t, "root"), "alice@example.test", "operate")
	if err != nil {
		t.Fatal(err)
	}
	if got := cert.NotAfter.Sub(now); got != 30*24*time.Hour || ca.AdminValidity() != got {
		t.Fatalf("validity %s, want the 30-day default", got)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "urn:amtops:admin:operate:alice@example.test" {
		t.Fatalf("URIs %v", cert.URIs)
	}
	name, role, serial, err := ca.VerifyAdmin(cert, nil)
	if err != nil || name != "alice@example.test" || role != "operate" || serial != cert.SerialNumber.Text(16) {
		t.Fatalf("VerifyAdmin = %q %q %q %v", name, role, serial, err)
	}

	agent, err := ca.SignAgent(csr(t, "x"), "alice@example.test")
	if err != nil {
		t.Fatal(err)
	}
	if id, err := ca.VerifyAgent(agent, nil); err != nil || id != "alice@example.test" {
		t.Fatalf("agent certificate: %q %v", id, err)
	}
	// Same CA, same EKU, same CN: each check refuses the other's kind.
	if _, err := ca.VerifyAgent(cert, nil); !errors.Is(err, domain.ErrUnauthorized) {
		t.Fatalf("admin certificate accepted as an agent's: %v", err)
	}
	if _, _, _, err := ca.VerifyAdmin(agent, nil); !errors.Is(err, domain.ErrUnauthorized) {
		t.Fatalf("agent certificate accepted as an administrator's: %v", err)
	}
	srv, err := ca.ServerCertificate("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := ca.VerifyAdmin(srv.Leaf, nil); !errors.Is(err, domain.ErrUnauthorized) {
		t.Fatalf("server certificate accepted as an administrator's: %v", err)
	}
	if _, _, _, err := ca.VerifyAdmin(nil, nil); !errors.Is(err, domain.ErrUnauthorized) {
		t.Fatalf("nil certificate: %v", err)
	}

	// Another CA's admin certificate, well formed, is refused.
	other, err := agentca.Open(context.Background(), newStore(t), agentca.Options{Clock: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.SignAdmin(csr(t, "x"), "alice@example.test", "operate")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := ca.VerifyAdmin(foreign, nil); !errors.Is(err, domain.ErrUnauthorized) {
		t.Fatalf("foreign certificate accepted: %v", err)
	}

	clock = now.Add(31 * 24 * time.Hour)
	if _, _, _, err := ca.VerifyAdmin(cert, nil); !errors.Is(err, domain.ErrUnauthorized) {
		t.Fatalf("expired certificate accepted: %v", err)
	}
}

func TestSignAdminBadInput(t *testing.T) {
	ca, err := agentca.Open(context.Background(), newStore(t), agentca.Options{AdminValidity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	good := csr(t, "x")
	bad := append([]byte(nil), good...)
	bad[len(bad)-5] ^= 0xff // breaks the signature or the encoding
	for _, c := range []struct {
		name, admin, role, field string
		csr                      []byte
	}{
		{"empty name", "", "read", "name", good},
		{"colon in name", "a:b", "read", "name", good},
		{"long name", strings.Repeat("a", 65), "read", "name", good},
		{"unknown role", "alice", "admin", "role", good},
		{"empty role", "alice", "", "role", good},
		{"garbage CSR", "alice", "read", "csr_der", []byte("x")},
		{"tampered CSR", "alice", "read", "csr_der", bad},
		{"no CSR", "alice", "read", "csr_der", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ca.SignAdmin(c.csr, c.admin, c.role)
			var fe *domain.FieldError
			if !errors.As(err, &fe) || fe.Field != c.field {
				t.Fatalf("err = %v, want a field error on %s", err, c.field)
			}
		})
	}
	cert, err := ca.SignAdmin(good, "bob", "read")
	if err != nil {
		t.Fatal(err)
	}
	if d := cert.NotAfter.Sub(cert.NotBefore); d != time.Hour+5*time.Minute {
		t.Fatalf("lifetime %s, want the AdminValidity option (plus 5 min back-dating)", d)
	}
}
