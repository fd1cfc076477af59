package wsman_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/wsman"
)

// testPKI is a CA with a server leaf ("amt.example") and a client leaf,
// all RSA 2048: RSA key exchange needs an RSA server key.
type testPKI struct {
	caPool             *x509.CertPool
	server, selfSigned tls.Certificate
	client             tls.Certificate
	clientKey          *rsa.PrivateKey
}

var (
	pkiOnce sync.Once
	pki     testPKI
)

func issue(t testing.TB, tmpl *x509.Certificate, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func loadPKI(t testing.TB) testPKI {
	t.Helper()
	pkiOnce.Do(func() {
		now := time.Now()
		ca, caKey := issue(t, &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign}, nil, nil)
		srv, srvKey := issue(t, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "amt.example"},
			DNSNames: []string{"amt.example"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca, caKey)
		self, selfKey := issue(t, &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "Intel(r) AMT"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment}, nil, nil)
		cli, cliKey := issue(t, &x509.Certificate{SerialNumber: big.NewInt(4), Subject: pkix.Name{CommonName: "provisioning.amt.example"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, ca, caKey)
		pki.caPool = x509.NewCertPool()
		pki.caPool.AddCert(ca)
		pki.server = tls.Certificate{Certificate: [][]byte{srv.Raw}, PrivateKey: srvKey, Leaf: srv}
		pki.selfSigned = tls.Certificate{Certificate: [][]byte{self.Raw}, PrivateKey: selfKey, Leaf: self}
		pki.client = tls.Certificate{Certificate: [][]byte{cli.Raw, ca.Raw}, PrivateKey: cliKey, Leaf: cli}
		pki.clientKey = cliKey
	})
	if pki.caPool == nil {
		t.Fatal("test PKI not built")
	}
	return pki
}

// seenTLS records the connection state of each authenticated request.
type seenTLS struct {
	mu     sync.Mutex
	states []tls.ConnectionState
}

func (s *seenTLS) last(t *testing.T) tls.ConnectionState {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.states) == 0 {
		t.Fatal("no request reached the server")
	}
	return s.states[len(s.states)-1]
}

// startTLSDevice serves AMT_GeneralSettings over TLS with digest auth on
// the test loopback range, with server TLS settings cfg.
func startTLSDevice(t *testing.T, cfg *tls.Config) (string, *seenTLS) {
	t.Helper()
	seen := &seenTLS{}
	dev := newAMTServer("admin", "pw", fixtureHandler(t, "amt/general/get.xml"))
	ln, err := net.Listen("tcp", "127.84.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.mu.Lock()
		seen.states = append(seen.states, *r.TLS)
		seen.mu.Unlock()
		dev.ServeHTTP(w, r)
	}))
	// Our own TLS listener: httptest's StartTLS would add its own
	// certificate, which GetCertificate cannot override without SNI.
	hs.Listener = tls.NewListener(ln, cfg)
	hs.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are expected
	hs.Start()
	t.Cleanup(hs.Close)
	return ln.Addr().String(), seen
}

func get(t *testing.T, addr string, tc *wsman.TLSConfig) (*wsman.Client, error) {
	t.Helper()
	c, err := wsman.New(wsman.Config{Address: addr, TLS: tc, Username: "admin", Password: "pw", ReadRetries: -1, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	_, err = c.Get(context.Background(), gsURI)
	return c, err
}

// AMT 11 and 12 offer only RSA key exchange over TLS 1.2. Go ≥ 1.22 drops
// those suites from its default list (GODEBUG tlsrsakex is not set here);
// listing them is enough to talk to such a device, and offering 1.3 too
// does not stop a 1.2-only device from choosing 1.2.
func TestTLSRSAKeyExchangeOnly(t *testing.T) {
	p := loadPKI(t)
	for _, suite := range []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_RSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_256_CBC_SHA} {
		t.Run(tls.CipherSuiteName(suite), func(t *testing.T) {
			addr, seen := startTLSDevice(t, &tls.Config{
				Certificates: []tls.Certificate{p.server},
				MinVersion:   tls.VersionTLS12, MaxVersion: tls.VersionTLS12,
				CipherSuites: []uint16{suite},
			})
			if _, err := get(t, addr, &wsman.TLSConfig{RootCAs: p.caPool, ServerName: "amt.example"}); err != nil {
				t.Fatalf("handshake with an RSA-key-exchange-only TLS 1.2 server: %v", err)
			}
			st := seen.last(t)
			if st.Version != tls.VersionTLS12 || st.CipherSuite != suite {
				t.Errorf("negotiated %s %s, want TLS 1.2 %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), tls.CipherSuiteName(suite))
			}

			// Control: Go's default client configuration cannot reach this
			// server, so the explicit list is what makes the difference.
			conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: p.caPool, ServerName: "amt.example"})
			if err == nil {
				conn.Close()
				t.Fatal("Go's default cipher suites reached an RSA-only server: the test proves nothing")
			}

			// Build gives probes the same configuration.
			cfg, err := (&wsman.TLSConfig{RootCAs: p.caPool, ServerName: "amt.example"}).Build()
			if err != nil {
				t.Fatal(err)
			}
			conn, err = tls.Dial("tcp", addr, cfg)
			if err != nil {
				t.Fatalf("probe with Build(): %v", err)
			}
			conn.Close()
		})
	}
}

// A device that speaks 1.3 gets 1.3; MaxVersion caps it.
func TestTLSVersion(t *testing.T) {
	p := loadPKI(t)
	addr13, seen := startTLSDevice(t, &tls.Config{Certificates: []tls.Certificate{p.server}, MinVersion: tls.VersionTLS13})
	trust := &wsman.TLSConfig{RootCAs: p.caPool, ServerName: "amt.example"}
	if _, err := get(t, addr13, trust); err != nil {
		t.Fatal(err)
	}
	if v := seen.last(t).Version; v != tls.VersionTLS13 {
		t.Errorf("negotiated %s with a TLS 1.3 server", tls.VersionName(v))
	}
	capped := *trust
	capped.MaxVersion = tls.VersionTLS12
	if _, err := get(t, addr13, &capped); err == nil {
		t.Error("MaxVersion TLS 1.2 reached a TLS 1.3-only server")
	}
}

// The client offers classical curves only: no AMT firmware speaks the
// hybrid post-quantum exchange, whose key share Go would otherwise
// generate for every handshake (a probe polls a restarting device).
func TestTLSClassicalCurvesOnly(t *testing.T) {
	p := loadPKI(t)
	var offered []tls.CurveID
	var mu sync.Mutex
	addr, _ := startTLSDevice(t, &tls.Config{Certificates: []tls.Certificate{p.server}, MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			mu.Lock()
			offered = append([]tls.CurveID(nil), hi.SupportedCurves...)
			mu.Unlock()
			return nil, nil
		}})
	if _, err := get(t, addr, &wsman.TLSConfig{RootCAs: p.caPool, ServerName: "amt.example"}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384}
	if !slices.Equal(offered, want) {
		t.Errorf("client offered curves %v, want %v", offered, want)
	}
}

// countingSigner is a crypto.Signer that only signs — like the remote
// signer whose key stays on the site server — and counts its calls.
type countingSigner struct {
	key   crypto.Signer
	calls atomic.Int32
}

func (s *countingSigner) Public() crypto.PublicKey { return s.key.Public() }

func (s *countingSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	s.calls.Add(1)
	return s.key.Sign(r, digest, opts)
}

func TestTLSClientCertificate(t *testing.T) {
	p := loadPKI(t)
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			srv := &tls.Config{
				Certificates: []tls.Certificate{p.server},
				ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: p.caPool,
				MinVersion: v, MaxVersion: v,
			}
			if v == tls.VersionTLS12 {
				srv.CipherSuites = []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256}
			}
			addr, seen := startTLSDevice(t, srv)
			signer := &countingSigner{key: p.clientKey}
			trust := &wsman.TLSConfig{RootCAs: p.caPool, ServerName: "amt.example",
				ClientCertificate: &wsman.ClientCertificate{Chain: p.client.Certificate, Key: signer}}
			if _, err := get(t, addr, trust); err != nil {
				t.Fatalf("mutual TLS: %v", err)
			}
			if n := signer.calls.Load(); n != 1 {
				t.Errorf("signer called %d times for one handshake, want 1", n)
			}
			st := seen.last(t)
			if len(st.PeerCertificates) == 0 || !st.PeerCertificates[0].Equal(p.client.Leaf) {
				t.Error("server did not see our client certificate")
			}
			_, err := get(t, addr, &wsman.TLSConfig{RootCAs: p.caPool, ServerName: "amt.example"})
			if err == nil {
				t.Fatal("a server requiring a client certificate accepted a client without one")
			}
			if wsman.Retryable(err) {
				t.Errorf("the device refusing our certificate must be permanent: %v", err)
			}
		})
	}
}

func TestTLSClientCertificateConfig(t *testing.T) {
	p := loadPKI(t)
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cc   *wsman.ClientCertificate
		want string
	}{
		{"no chain", &wsman.ClientCertificate{Key: p.clientKey}, "Chain is empty"},
		{"no key", &wsman.ClientCertificate{Chain: p.client.Certificate}, "Key is nil"},
		{"not a certificate", &wsman.ClientCertificate{Chain: [][]byte{[]byte("junk")}, Key: p.clientKey}, "Chain[0]"},
		{"key of another certificate", &wsman.ClientCertificate{Chain: p.client.Certificate, Key: other}, "does not belong"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := wsman.New(wsman.Config{Address: "h", TLS: &wsman.TLSConfig{TrustFirstUse: true, ClientCertificate: tc.cc}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one naming %q", err, tc.want)
			}
		})
	}
}

// The provisioning session of a factory device: its self-signed firmware
// certificate is accepted on first contact and pinned; a different one
// later in the same session is refused, and the fingerprint seen pins the
// next client.
func TestTLSTrustFirstUse(t *testing.T) {
	p := loadPKI(t)
	var current atomic.Pointer[tls.Certificate]
	current.Store(&p.selfSigned)
	addr, _ := startTLSDevice(t, &tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return current.Load(), nil },
		MaxVersion:     tls.VersionTLS12,
	})
	c, err := get(t, addr, &wsman.TLSConfig{TrustFirstUse: true})
	if err != nil {
		t.Fatalf("first use: %v", err)
	}
	want := sha256.Sum256(p.selfSigned.Leaf.Raw)
	pin := c.ServerLeafSHA256()
	if string(pin) != string(want[:]) {
		t.Fatalf("ServerLeafSHA256 = %x, want %x", pin, want)
	}

	// same client, new connection, another certificate: refused
	current.Store(&p.server)
	c.Close()
	_, err = c.Get(context.Background(), gsURI)
	if !errors.Is(err, wsman.ErrPinMismatch) {
		t.Fatalf("changed certificate within the session: err = %v, want ErrPinMismatch", err)
	}
	if wsman.Retryable(err) {
		t.Error("a pin mismatch must be permanent")
	}

	// the observed pin carries over to the next client of the job
	current.Store(&p.selfSigned)
	if _, err := get(t, addr, &wsman.TLSConfig{PinSHA256: pin}); err != nil {
		t.Fatalf("pinned to the observed fingerprint: %v", err)
	}
}
