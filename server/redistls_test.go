package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/testpeers"
	"github.com/amtops/amtops/server"
)

// writeTLSFiles makes a CA and a server certificate for name and writes
// ca.pem, cert.pem and key.pem into dir.
func writeTLSFiles(t *testing.T, dir, name string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "redis test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2),
		Subject: pkix.Name{CommonName: name}, DNSNames: []string{name}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	for file, block := range map[string]*pem.Block{"ca.pem": {Type: "CERTIFICATE", Bytes: caDER},
		"cert.pem": {Type: "CERTIFICATE", Bytes: leafDER}, "key.pem": {Type: "EC PRIVATE KEY", Bytes: keyDER}} {
		if err := os.WriteFile(filepath.Join(dir, file), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// startTLSRedis runs a redis-server that speaks only TLS and knows the
// ACL user amtops with password "s3cret"; it returns the address.
func startTLSRedis(t *testing.T, dir string) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		testpeers.Missing(t, "redis-server", "apt-get install redis-server")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(bin, "--port", "0", "--tls-port", fmt.Sprint(port), "--bind", "127.0.0.1",
		"--tls-cert-file", filepath.Join(dir, "cert.pem"), "--tls-key-file", filepath.Join(dir, "key.pem"),
		"--tls-ca-cert-file", filepath.Join(dir, "ca.pem"), "--tls-auth-clients", "no",
		"--user", "amtops", "on", ">s3cret", "~*", "&*", "+@all",
		"--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no", "--logfile", filepath.Join(dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGKILL); _ = cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}); err == nil { // readiness only
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			t.Fatalf("TLS redis-server did not start: %s", b)
		}
	}
}

// The server reaches a TLS-only Redis with an ACL user, verifying Redis's
// certificate against redis.tls.ca_file under redis.tls.server_name.
func TestRedisTLSAndUsername(t *testing.T) {
	dir := t.TempDir()
	writeTLSFiles(t, dir, "redis.test")
	addr := startTLSRedis(t, dir)
	pw := filepath.Join(dir, "redis.password")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := siteConfig(t, addr, t.TempDir(), "amtops", 0)
	cfg.Redis.Username, cfg.Redis.PasswordFile = "amtops", pw
	cfg.Redis.TLS.Enabled, cfg.Redis.TLS.CAFile, cfg.Redis.TLS.ServerName = true, filepath.Join(dir, "ca.pem"), "redis.test"
	runServer(t, cfg)

	// The site really lives there: its marker is in that Redis.
	rdb := redis.NewClient(&redis.Options{Addr: addr, Username: "amtops", Password: "s3cret",
		TLSConfig: &tls.Config{ServerName: "redis.test", RootCAs: pool(t, filepath.Join(dir, "ca.pem"))}})
	defer rdb.Close()
	if n, err := rdb.Exists(context.Background(), "amtops:site").Result(); err != nil || n != 1 {
		t.Fatalf("site marker in the TLS Redis: %d, %v", n, err)
	}

	for name, change := range map[string]func(c *config.Server){
		"wrong server name": func(c *config.Server) { c.Redis.TLS.ServerName = "other.test" },
		"no CA":             func(c *config.Server) { c.Redis.TLS.CAFile = "" },
		"wrong user":        func(c *config.Server) { c.Redis.Username = "nobody" },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := cfg
			change(&cfg)
			cfg.DataDir = t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err := server.New(ctx, cfg, zerolog.Nop())
			if err == nil || !strings.Contains(err.Error(), "server: redis") {
				t.Fatalf("New = %v, want a redis error", err)
			}
			t.Log(err)
		})
	}
}

func pool(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(b)
	return p
}
