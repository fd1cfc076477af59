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
	"errors"
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

func siteConfig(t *testing.T, redisAddr, dataDir, prefix string, db int) config.Server {
	t.Helper()
	cfg := config.DefaultServer()
	cfg.Redis.Addr, cfg.Redis.KeyPrefix, cfg.Redis.DB = redisAddr, prefix, db
	cfg.DataDir = dataDir
	cfg.GRPC.Listen, cfg.HTTP.Listen, cfg.Console.Listen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	return cfg
}

// running is a server started in the background; stop cancels it and
// returns Run's error.
type running struct {
	srv  *server.Server
	done chan error
	stop context.CancelFunc
}

func runServer(t *testing.T, cfg config.Server) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, zerolog.Nop())
	if err != nil {
		cancel()
		t.Fatalf("New: %v", err)
	}
	r := &running{srv: srv, done: make(chan error, 1), stop: cancel}
	go func() { r.done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(20 * time.Second):
			t.Error("Run did not return after cancel")
		}
		srv.Close()
	})
	checkHealth(t, srv.GRPCAddr(), srv.HTTPAddr())
	return r
}

// restartableRedis is a redis-server without persistence on a fixed
// port that the test can restart, as a crashed or rebooted Redis would.
// args replace the plain port (a TLS Redis); opts reach it when ready.
type restartableRedis struct {
	t    *testing.T
	bin  string
	dir  string
	port int
	args []string
	opts redis.Options
	cmd  *exec.Cmd
}

func newRestartableRedis(t *testing.T, opts redis.Options, args ...string) *restartableRedis {
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
	r := &restartableRedis{t: t, bin: bin, dir: t.TempDir(), port: port, opts: opts}
	if len(args) == 0 {
		args = []string{"--port", "{port}"}
	}
	for _, a := range args {
		r.args = append(r.args, strings.ReplaceAll(a, "{port}", fmt.Sprint(port)))
	}
	r.start()
	t.Cleanup(r.kill)
	return r
}

func (r *restartableRedis) addr() string { return fmt.Sprintf("127.0.0.1:%d", r.port) }

func (r *restartableRedis) client() *redis.Client {
	o := r.opts
	o.Addr = r.addr()
	return redis.NewClient(&o)
}

func (r *restartableRedis) start() {
	r.cmd = exec.Command(r.bin, append(r.args, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--daemonize", "no", "--logfile", filepath.Join(r.dir, "redis.log"))...)
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	rdb := r.client()
	defer rdb.Close()
	for deadline := time.Now().Add(10 * time.Second); rdb.Ping(context.Background()).Err() != nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
			r.t.Fatalf("redis-server on %d did not start: %s", r.port, b)
		}
	}
}

func (r *restartableRedis) kill() {
	if r.cmd != nil {
		_ = r.cmd.Process.Signal(syscall.SIGKILL)
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

// A Redis that comes back empty under a running server stops it with a
// clear error, and a restart on it is refused, whether Redis was flushed
// or restarted without persistence.
func TestRedisLostDataIsRefused(t *testing.T) {
	cases := map[string]func(t *testing.T, r *restartableRedis){
		"flushall": func(t *testing.T, r *restartableRedis) {
			rdb := r.client()
			defer rdb.Close()
			if err := rdb.FlushAll(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
		},
		"restart without persistence": func(t *testing.T, r *restartableRedis) { r.kill(); r.start() },
	}
	for name, lose := range cases {
		t.Run(name, func(t *testing.T) {
			r := newRestartableRedis(t, redis.Options{})
			dataDir := t.TempDir()
			cfg := siteConfig(t, r.addr(), dataDir, "amtops", 0)
			first := runServer(t, cfg)
			lose(t, r)
			var err error
			select {
			case err = <-first.done:
				first.done <- err // for the cleanup
			case <-time.After(15 * time.Second):
				t.Fatal("the server kept running on an empty Redis")
			}
			assertLostData(t, err)

			// Starting again on the empty Redis with the same data_dir is refused.
			_, err = server.New(context.Background(), cfg, zerolog.Nop())
			assertLostData(t, err)

			// A new data_dir is a new site: deliberate, so allowed.
			runServer(t, siteConfig(t, r.addr(), t.TempDir(), "amtops", 0))
		})
	}
}

func assertLostData(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, server.ErrRedisLostData) {
		t.Fatalf("err = %v, want ErrRedisLostData", err)
	}
	for _, want := range []string{"persistence", "appendonly yes", "site.json"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error does not say %q: %v", want, err)
		}
	}
}

// A server restarted on its intact Redis runs; a data_dir of another
// site is refused.
func TestSiteMarkerKeepsSitesApart(t *testing.T) {
	addr := testpeers.Redis(t)
	dirA, dirB := t.TempDir(), t.TempDir()
	a := runServer(t, siteConfig(t, addr, dirA, "amtops", 0))
	a.stop()
	<-a.done
	a.done <- nil
	a.srv.Close()
	runServer(t, siteConfig(t, addr, dirA, "amtops", 0))

	// Site B on db 1, then B's data_dir pointed at A's Redis database.
	runServer(t, siteConfig(t, addr, dirB, "amtops", 1))
	_, err := server.New(context.Background(), siteConfig(t, addr, dirB, "amtops", 0), zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), "belongs to site") {
		t.Fatalf("a data_dir of another site was accepted: %v", err)
	}
}

// Two sites on one redis-server: on one database (different key
// prefixes) the second is refused, because asynq's keys have no prefix;
// on their own databases each has its own asynq queues.
func TestTwoSitesOnOneRedis(t *testing.T) {
	addr := testpeers.Redis(t)
	runServer(t, siteConfig(t, addr, t.TempDir(), "site-a", 0))
	_, err := server.New(context.Background(), siteConfig(t, addr, t.TempDir(), "site-b", 0), zerolog.Nop())
	if !errors.Is(err, server.ErrSharedDatabase) || !strings.Contains(err.Error(), "key_prefix site-a") ||
		!strings.Contains(err.Error(), "redis.db") {
		t.Fatalf("second site on one database: %v", err)
	}
	runServer(t, siteConfig(t, addr, t.TempDir(), "site-b", 1))
	for db := range 2 {
		rdb := redis.NewClient(&redis.Options{Addr: addr, DB: db})
		defer rdb.Close()
		// Each database holds exactly one site's asynq worker.
		var n int64
		for deadline := time.Now().Add(15 * time.Second); n == 0 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			n, _ = rdb.ZCard(context.Background(), "asynq:servers").Result()
		}
		if n != 1 {
			t.Fatalf("db %d has %d asynq servers, want 1", db, n)
		}
	}
}

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

// The server reaches a TLS-only Redis with an ACL user, verifying Redis's
// certificate against redis.tls.ca_file under redis.tls.server_name.
func TestRedisTLSAndUsername(t *testing.T) {
	dir := t.TempDir()
	writeTLSFiles(t, dir, "redis.test")
	caPool := pool(t, filepath.Join(dir, "ca.pem"))
	r := newRestartableRedis(t, redis.Options{Username: "amtops", Password: "s3cret",
		TLSConfig: &tls.Config{ServerName: "redis.test", RootCAs: caPool}},
		"--port", "0", "--tls-port", "{port}", "--tls-cert-file", filepath.Join(dir, "cert.pem"),
		"--tls-key-file", filepath.Join(dir, "key.pem"), "--tls-ca-cert-file", filepath.Join(dir, "ca.pem"),
		"--tls-auth-clients", "no", "--user", "amtops", "on", ">s3cret", "~*", "&*", "+@all")
	addr := r.addr()
	pw := filepath.Join(dir, "redis.password")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := siteConfig(t, addr, t.TempDir(), "amtops", 0)
	cfg.Redis.Username, cfg.Redis.PasswordFile = "amtops", pw
	cfg.Redis.TLS.Enabled, cfg.Redis.TLS.CAFile, cfg.Redis.TLS.ServerName = true, filepath.Join(dir, "ca.pem"), "redis.test"
	runServer(t, cfg)

	// The site really lives there: its marker is in that Redis.
	rdb := r.client()
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

// The server runs on a three-node Redis Cluster given as redis.addrs
// with redis.cluster: every key it writes at start (site marker, CA,
// tokens, asynq's) lands on the slot that owns it.
func TestServerOnRedisCluster(t *testing.T) {
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		testpeers.Missing(t, "redis-cli", "apt-get install redis-tools")
	}
	var addrs []string
	for range 3 {
		r := newRestartableRedis(t, redis.Options{}, "--port", "{port}", "--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf")
		addrs = append(addrs, r.addr())
	}
	out, err := exec.Command(cli, append(append([]string{"--cluster", "create"}, addrs...),
		"--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer rdb.Close()
	// The cluster takes a moment to agree that every slot is served.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		info, err := rdb.ClusterInfo(context.Background()).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster never became ok: %s %v", info, err)
		}
	}
	cfg := siteConfig(t, "", t.TempDir(), "amtops", 0)
	cfg.Redis.Addrs, cfg.Redis.Cluster = addrs, true
	runServer(t, cfg)
	if n, err := rdb.Exists(context.Background(), "amtops:site").Result(); err != nil || n != 1 {
		t.Fatalf("site marker on the cluster: %d, %v", n, err)
	}
}
