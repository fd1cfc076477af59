package agentca_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/secrets"
	"github.com/amtops/amtops/internal/testpeers"
	"github.com/amtops/amtops/server/agentca"
	"github.com/amtops/amtops/server/store"
)

func newStore(t *testing.T) *store.Store {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: testpeers.Redis(t)})
	t.Cleanup(func() { _ = rdb.Close() })
	sealer, err := secrets.New(bytes.Repeat([]byte{3}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return store.New(rdb, sealer, store.Options{})
}

func TestReplicasAgree(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	a, err := agentca.Open(ctx, st, agentca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := agentca.Open(ctx, st, agentca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Certificate().Raw, b.Certificate().Raw) {
		t.Fatal("two opens made two CAs")
	}
	// The CA is sealed at rest: the raw secret is not the key in clear.
	if _, err := st.GetSecret(ctx, agentca.SecretName); err != nil {
		t.Fatal(err)
	}
}

func TestCertificates(t *testing.T) {
	ca, err := agentca.Open(context.Background(), newStore(t), agentca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.ServerCertificate("0.0.0.0:7443", []string{"site.example.test", "10.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"site.example.test", "10.0.0.1"} {
		if err := srv.Leaf.VerifyHostname(name); err != nil {
			t.Errorf("server certificate lacks %s: %v", name, err)
		}
	}
	if err := srv.Leaf.VerifyHostname("0.0.0.0"); err == nil {
		t.Error("server certificate names the wildcard address")
	}
	if _, err := ca.ServerCertificate("nonsense", nil); err == nil {
		t.Error("bad listen address accepted")
	}

	for _, tc := range []struct {
		name    string
		csr     []byte
		id      string
		wantErr bool
	}{
		{"garbage CSR", []byte("x"), "a1", true},
		{"empty agent ID", nil, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ca.SignAgent(tc.csr, tc.id)
			var fe *domain.FieldError
			if (err != nil) != tc.wantErr || err != nil && !errors.As(err, &fe) {
				t.Fatalf("err = %v, want a field error: %v", err, tc.wantErr)
			}
		})
	}
	if _, err := ca.VerifyAgent(srv.Leaf, nil); !errors.Is(err, domain.ErrUnauthorized) {
		t.Fatalf("server certificate accepted as an agent's: %v", err)
	}
	var _ *x509.Certificate = ca.Certificate()
}
