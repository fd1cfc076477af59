package server_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/provcert"
	"github.com/amtops/amtops/internal/testpeers"
	"github.com/amtops/amtops/server"
)

// checkHealth fetches the gRPC CA from the HTTP endpoint, as an agent's
// installer or an administrator would, and asks gRPC health over TLS.
func checkHealth(t *testing.T, addr, httpAddr string) {
	t.Helper()
	resp0, err := http.Get("http://" + httpAddr + "/grpc-ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, _ := io.ReadAll(resp0.Body)
	resp0.Body.Close()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("/grpc-ca.pem is not a PEM certificate: %q", pemBytes)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("health check: %v", err)
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v", resp.Status)
	}
}

func TestServerRunsAndStops(t *testing.T) {
	cases := map[string]func(t *testing.T) string{
		"embedded": func(*testing.T) string { return "" },
		"redis":    func(t *testing.T) string { return testpeers.Redis(t) },
		// remote configuration on: the provisioning certificate loads.
		"remote-config": func(t *testing.T) string { return testpeers.Redis(t) },
	}
	for name, redisAddr := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := config.DefaultServer()
			cfg.Redis.Addr = redisAddr(t)
			if name == "remote-config" {
				cfg.AMT.RemoteConfig = remoteConfig(t)
			}
			cfg.DataDir = t.TempDir()
			cfg.GRPC.Listen, cfg.HTTP.Listen, cfg.Console.Listen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			srv, err := server.New(ctx, cfg, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			done := make(chan error, 1)
			go func() { done <- srv.Run(ctx) }()
			checkHealth(t, srv.GRPCAddr(), srv.HTTPAddr())
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("Run did not return after cancel")
			}
		})
	}
}

// buildServer compiles the real binary once per test run.
func buildServer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "amtops-server")
	out, err := exec.Command("go", "build", "-o", bin, "./cmd/amtops-server").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestServerBinary(t *testing.T) {
	bin := buildServer(t)
	t.Run("example config on embedded redis, SIGTERM", func(t *testing.T) {
		cmd := exec.Command(bin, "--config", "../configs/server.example.yaml")
		cmd.Env = append(os.Environ(), "AMTOPS_GRPC_LISTEN=127.0.0.1:0", "AMTOPS_HTTP_LISTEN=127.0.0.1:0", "AMTOPS_CONSOLE_LISTEN=127.0.0.1:0",
			"AMTOPS_DATA_DIR="+t.TempDir(), "AMTOPS_SITE_KEY=")
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		addr, httpAddr, sawWarning := "", "", false
		sc := bufio.NewScanner(stderr)
		for addr == "" && sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				t.Fatalf("log line is not JSON: %s", sc.Text())
			}
			msg, _ := line["message"].(string)
			if strings.Contains(strings.ToLower(msg), "not persistent") {
				sawWarning = true
			}
			if msg == "site server running" {
				addr, _ = line["grpc"].(string)
				httpAddr, _ = line["http"].(string)
			}
		}
		if addr == "" {
			t.Fatal("server never logged that it runs")
		}
		if !sawWarning {
			t.Error("embedded redis was not announced as non-persistent")
		}
		checkHealth(t, addr, httpAddr)
		go io.Copy(io.Discard, stderr)
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() { errc <- cmd.Wait() }()
		select {
		case err := <-errc:
			if err != nil {
				t.Fatalf("exit after SIGTERM: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("server did not stop after SIGTERM")
		}
	})
	bad := []struct{ name, yaml, field string }{
		{"bad lease", "phase2:\n  lease_ttl: banana\n", "lease_ttl"},
		{"bad backend", "ca:\n  backend: openssl\n", "ca.backend"},
		{"plain ldap", "directory:\n  url: ldap://dc:389\n", "directory.url"},
	}
	for _, c := range bad {
		t.Run("bad config "+c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "s.yaml")
			if err := os.WriteFile(p, []byte(c.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin, "--config", p).CombinedOutput()
			if err == nil {
				t.Fatal("server started with a bad config")
			}
			if !strings.Contains(string(out), c.field) {
				t.Fatalf("message does not name %s: %s", c.field, out)
			}
		})
	}
}

// remoteConfig writes a test provisioning certificate and names it.
func remoteConfig(t *testing.T) config.RemoteConfig {
	t.Helper()
	pair, err := provcert.NewTestPair("amt.test")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rc := config.RemoteConfig{ChainFile: filepath.Join(dir, "chain.pem"), KeyFile: filepath.Join(dir, "key.pem"), TrustedDomain: "amt.test"}
	if err := os.WriteFile(rc.ChainFile, pair.ChainPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rc.KeyFile, pair.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return rc
}
