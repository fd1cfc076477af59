package directory_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/directory"
	"github.com/amtops/amtops/internal/domain"
	"github.com/go-ldap/ldap/v3"
	"golang.org/x/sync/errgroup"
)

// proxy forwards loopback TCP to the DC so a test can make the directory
// vanish under a pooled connection.
type proxy struct {
	ln       net.Listener
	target   string
	accepted atomic.Int32

	mu     sync.Mutex
	frozen bool
	pairs  []*[2]net.Conn
	wg     sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		p.mu.Lock()
		if p.frozen {
			// Black hole: hold the connection open, forward nothing.
			p.pairs = append(p.pairs, &[2]net.Conn{c, nil})
			p.mu.Unlock()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		pair := &[2]net.Conn{c, up}
		p.pairs = append(p.pairs, pair)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(up, c)
		go p.pipe(c, up)
	}
}

// pipe copies until either side fails; the client side is closed only by
// close(), so that freeze leaves clients hanging like a dead network.
func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
}

// freeze cuts every upstream connection but leaves clients connected and
// unanswered, and black-holes new connections until thaw.
func (p *proxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozen = true
	for _, pair := range p.pairs {
		if pair[1] != nil {
			pair[1].Close()
		}
	}
}

func (p *proxy) thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozen = false
}

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, pair := range p.pairs {
		for _, c := range pair {
			if c != nil {
				c.Close()
			}
		}
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func proxied(e env, p *proxy, timeout time.Duration) func(*directory.Config) {
	return func(c *directory.Config) {
		c.URLs = []string{"ldaps://" + p.addr()}
		c.PoolSize = 1
		c.Timeout = timeout
	}
}

func ldapsTarget(t *testing.T, e env) string {
	t.Helper()
	u, err := url.Parse(e.peer.URL)
	if err != nil {
		t.Fatal(err)
	}
	if u.Port() == "" {
		return u.Hostname() + ":636"
	}
	return u.Host
}

func TestRedialAfterConnectionDies(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := newProxy(t, ldapsTarget(t, e))
	c := e.client(t, proxied(e, p, 2*time.Second))
	missing := uniqueName(t)
	if _, err := c.Lookup(ctx(t), missing); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("first lookup: %v", err)
	}
	// The pooled connection now hangs (no reply, no close); new ones work.
	p.freeze()
	p.thaw()
	if _, err := c.Lookup(ctx(t), missing); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("lookup after the connection died: %v, want a transparent redial", err)
	}
	if n := p.accepted.Load(); n != 2 {
		t.Errorf("proxy accepted %d connections, want 2 (one redial)", n)
	}
}

func TestContextEndsRequestInFlight(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := newProxy(t, ldapsTarget(t, e))
	c := e.client(t, proxied(e, p, time.Minute))
	name := uniqueName(t)
	if _, err := c.Lookup(ctx(t), name); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("first lookup: %v", err)
	}
	p.freeze()
	cctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := c.Lookup(cctx, name)
	if !errors.Is(err, context.DeadlineExceeded) || domain.IsPermanent(err) {
		t.Fatalf("err = %v, want a retryable deadline exceeded", err)
	}
	// The pool slot came back: with the directory reachable again, the
	// single-connection pool serves the next call.
	p.thaw()
	if _, err := c.Lookup(ctx(t), name); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("lookup after cancel: %v", err)
	}
}

func TestDialFailures(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := closed.Addr().String()
	closed.Close()
	tests := []struct {
		name      string
		mutate    func(*directory.Config)
		permanent bool
		is        error
	}{
		{"directory down", func(c *directory.Config) { c.URLs = []string{"ldaps://" + deadAddr} }, false, nil},
		{"wrong password", func(c *directory.Config) { c.Password = "wrong-password" }, true, domain.ErrUnauthorized},
		{"untrusted certificate", func(c *directory.Config) { c.CAFile = otherCA(t) }, true, nil},
		{"certificate name mismatch", func(c *directory.Config) { c.TLSServerName = "other.example" }, true, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := e.client(t, func(c *directory.Config) { tc.mutate(c); c.Timeout = 5 * time.Second })
			_, err := c.Lookup(ctx(t), "PC01")
			if err == nil {
				t.Fatal("lookup succeeded")
			}
			if domain.IsPermanent(err) != tc.permanent {
				t.Errorf("err = %v: permanent=%v, want %v", err, domain.IsPermanent(err), tc.permanent)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("err = %v, want %v", err, tc.is)
			}
			if strings.Contains(err.Error(), e.peer.Password) {
				t.Error("error leaks the bind password")
			}
		})
	}
}

// otherCA writes a CA certificate that did not sign the DC's certificate.
func otherCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestStartTLS(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.client(t, func(c *directory.Config) {
		c.URLs = []string{"ldap://127.0.0.1:389"}
		c.StartTLS = true
	})
	name := uniqueName(t)
	e.addComputer(t, name, "", "")
	p, err := c.Publish(ctx(t), directory.Device{UUID: randHex(t, 16), ComputerName: name, FQDN: strings.ToLower(name) + ".amt.test"})
	if err != nil {
		t.Fatalf("publish over StartTLS: %v", err)
	}
	if p.Password == "" || p.KVNO < 1 {
		t.Errorf("password set=%v kvno=%d", p.Password != "", p.KVNO)
	}
}

// TestConcurrentPublish: many devices through a small pool, and one device
// published by several workers at once ends as exactly one object.
func TestConcurrentPublish(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.client(t, func(c *directory.Config) { c.PoolSize = 2 })
	var names []string
	for range 6 {
		n := uniqueName(t)
		e.addComputer(t, n, "", "")
		names = append(names, n)
	}
	same := names[0]
	var g errgroup.Group
	for i, n := range append(names, same, same, same) {
		g.Go(func() error {
			_, err := c.Publish(ctx(t), directory.Device{UUID: "dev-" + n, ComputerName: n, FQDN: strings.ToLower(n) + ".amt.test"})
			if err != nil {
				return errors.Join(fmt.Errorf("worker %d", i), err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	res, err := e.conn.Search(ldap.NewSearchRequest(e.ou, ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false,
		"(description=dev-*)", []string{"description"}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Entries) != len(names) {
		t.Errorf("%d AMT accounts for %d devices", len(res.Entries), len(names))
	}
}
