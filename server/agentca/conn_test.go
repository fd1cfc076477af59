package agentca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/server/agentca"
)

// handshake runs a real TLS handshake between a listener whose client
// CAs are pool (as api.ServerTLS) and a client presenting cert with key,
// and returns the server side's connection state.
func handshake(t *testing.T, serverCA *agentca.CA, pool *x509.CertPool, cert *x509.Certificate, key *ecdsa.PrivateKey) tls.ConnectionState {
	t.Helper()
	srv, err := serverCA.ServerCertificate("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	s := tls.Server(a, &tls.Config{Certificates: []tls.Certificate{srv}, ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven})
	c := tls.Client(b, &tls.Config{InsecureSkipVerify: true, //nolint:gosec // the server side is under test
		Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}}})
	errc := make(chan error, 1)
	go func() { errc <- c.Handshake() }()
	if err := s.Handshake(); err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	return s.ConnectionState()
}

func keyAndCSR(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

// A connection whose handshake verified an agent's chain to the CA is
// trusted without building the chain again, but never past the
// certificate's validity, never for an administrator's certificate, and
// a chain the handshake verified to another CA is verified in full.
func TestVerifyAgentConn(t *testing.T) {
	now := time.Now()
	clock := now
	opts := agentca.Options{Clock: func() time.Time { return clock }}
	ca, err := agentca.Open(context.Background(), newStore(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	other, err := agentca.Open(context.Background(), newStore(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	key, req := keyAndCSR(t)
	agentCert, err := ca.SignAgent(req, "agent-7")
	if err != nil {
		t.Fatal(err)
	}
	adminKey, adminReq := keyAndCSR(t)
	adminCert, err := ca.SignAdmin(adminReq, "agent-7", "operate")
	if err != nil {
		t.Fatal(err)
	}
	foreignKey, foreignReq := keyAndCSR(t)
	foreign, err := other.SignAgent(foreignReq, "agent-7")
	if err != nil {
		t.Fatal(err)
	}

	st := handshake(t, ca, ca.Pool(), agentCert, key)
	if len(st.VerifiedChains) == 0 {
		t.Fatal("the handshake verified no chain: the test proves nothing")
	}
	if id, err := ca.VerifyAgentConn(st); err != nil || id != "agent-7" {
		t.Fatalf("agent connection: %q, %v", id, err)
	}
	if _, err := ca.VerifyAgentConn(handshake(t, ca, ca.Pool(), adminCert, adminKey)); !errors.Is(err, domain.ErrUnauthorized) {
		t.Fatalf("administrator's certificate accepted as an agent's: %v", err)
	}
	// A listener trusting the other CA verified this chain, not ours.
	if _, err := ca.VerifyAgentConn(handshake(t, ca, other.Pool(), foreign, foreignKey)); !errors.Is(err, domain.ErrUnauthorized) {
		t.Fatalf("a chain verified to another CA accepted: %v", err)
	}
	if _, err := ca.VerifyAgentConn(tls.ConnectionState{}); !errors.Is(err, domain.ErrUnauthorized) {
		t.Fatalf("no certificate: %v", err)
	}
	// The connection lives on past the certificate's end: refused then.
	clock = agentCert.NotAfter.Add(time.Minute)
	if _, err := ca.VerifyAgentConn(st); !errors.Is(err, domain.ErrUnauthorized) {
		t.Fatalf("expired certificate on a live connection accepted: %v", err)
	}
}
