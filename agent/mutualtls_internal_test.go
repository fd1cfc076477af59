package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"strings"
	"testing"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/server/agentca"
	"github.com/amtops/amtops/server/api/apitest"
)

type caSecrets map[string][]byte

func (s caSecrets) CreateSecret(_ context.Context, name string, b []byte) (bool, error) {
	if _, ok := s[name]; ok {
		return false, nil
	}
	s[name] = b
	return true, nil
}

func (s caSecrets) GetSecret(_ context.Context, name string) ([]byte, error) {
	if b, ok := s[name]; ok {
		return b, nil
	}
	return nil, domain.ErrNotFound
}

// enrolled is an agent holding a certificate the site's agent CA signed,
// as enroll leaves it.
func enrolled(t *testing.T, ca *agentca.CA) *tls.Certificate {
	t.Helper()
	key, csr := apitest.Key(t)
	leaf, err := ca.SignAgent(csr, "agent-9")
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
}

// The executor's mutual-TLS identity is the enrollment certificate with
// its own key and the agent CA root from server_ca_file.
func TestMutualTLSIdentity(t *testing.T) {
	open := func() *agentca.CA {
		ca, err := agentca.Open(context.Background(), caSecrets{}, agentca.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return ca
	}
	site, other := open(), open()
	cases := []struct {
		name    string
		cert    *tls.Certificate
		wantErr string
	}{
		{name: "enrolled", cert: enrolled(t, site)},
		{name: "not enrolled", wantErr: "not enrolled"},
		{name: "certificate of another CA", cert: enrolled(t, other), wantErr: "does not chain to server_ca_file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := &Agent{roots: site.Pool(), cert: tc.cert}
			m, err := a.mutualTLS()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(m.Root, site.Certificate().Raw) || len(m.Cert.Chain) != 1 || !bytes.Equal(m.Cert.Chain[0], tc.cert.Leaf.Raw) {
				t.Fatalf("root or chain is not the agent CA and the enrollment leaf")
			}
			sum := sha256.Sum256([]byte("handshake"))
			sig, err := m.Cert.Key.Sign(rand.Reader, sum[:], nil)
			if err != nil || !ecdsa.VerifyASN1(tc.cert.Leaf.PublicKey.(*ecdsa.PublicKey), sum[:], sig) {
				t.Errorf("key does not sign for the enrollment leaf: %v", err)
			}
		})
	}
}
