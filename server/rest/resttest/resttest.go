// Package resttest runs a real amtops-server for tests of its REST API
// and console.
package resttest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/testpeers"
	"github.com/amtops/amtops/server"
)

// Site is a running amtops-server on a real Redis, with an HTTPS client
// that trusts its CA.
type Site struct {
	Base    string // https://host:port of the console listener
	Pool    *x509.CertPool
	Client  *http.Client
	Operate string // the bootstrap token (operate role)
	DataDir string
	// Redis is the server's Redis address, for tests that change the
	// store behind the server's back (a failure arriving).
	Redis string
}

// Start runs a server until t ends.
func Start(t testing.TB) *Site {
	t.Helper()
	cfg := config.DefaultServer()
	cfg.Redis.Addr = testpeers.Redis(t)
	cfg.DataDir = t.TempDir()
	cfg.GRPC.Listen, cfg.HTTP.Listen, cfg.Console.Listen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, zerolog.Nop())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("server did not stop")
		}
		srv.Close()
	})
	caPEM, err := os.ReadFile(filepath.Join(cfg.DataDir, "grpc-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	tok, err := os.ReadFile(filepath.Join(cfg.DataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	return &Site{Base: "https://" + srv.ConsoleAddr(), Pool: pool, Operate: strings.TrimSpace(string(tok)), DataDir: cfg.DataDir, Redis: cfg.Redis.Addr,
		Client: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}}
}

// Call sends a JSON request with c and returns the status and body.
func (s *Site) Call(t testing.TB, c *http.Client, token, method, path, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.Base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// MustCall is Call with s.Client that fails t unless the answer is 200,
// decoding the body into into when not nil.
func (s *Site) MustCall(t testing.TB, token, method, path, body string, into any) {
	t.Helper()
	code, out := s.Call(t, s.Client, token, method, path, body)
	if code != http.StatusOK {
		t.Fatalf("%s %s: %d %s", method, path, code, out)
	}
	if into != nil {
		if err := json.Unmarshal(out, into); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, out)
		}
	}
}

// ReadToken makes a read-role token through the API itself.
func (s *Site) ReadToken(t testing.TB, name string) string {
	t.Helper()
	var r struct{ Token string }
	s.MustCall(t, s.Operate, "POST", "/api/v1/admin-tokens", `{"name":"`+name+`","role":"read"}`, &r)
	if r.Token == "" {
		t.Fatal("no token returned")
	}
	return r.Token
}
