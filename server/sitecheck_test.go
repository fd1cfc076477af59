package server_test

import (
	"context"
	"errors"
	"fmt"
	"net"
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
	cfg.GRPC.Listen, cfg.HTTP.Listen = "127.0.0.1:0", "127.0.0.1:0"
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
type restartableRedis struct {
	t    *testing.T
	bin  string
	dir  string
	port int
	cmd  *exec.Cmd
}

func newRestartableRedis(t *testing.T) *restartableRedis {
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
	r := &restartableRedis{t: t, bin: bin, dir: t.TempDir(), port: port}
	r.start()
	t.Cleanup(r.kill)
	return r
}

func (r *restartableRedis) addr() string { return fmt.Sprintf("127.0.0.1:%d", r.port) }

func (r *restartableRedis) start() {
	r.cmd = exec.Command(r.bin, "--port", fmt.Sprint(r.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--daemonize", "no", "--logfile", filepath.Join(r.dir, "redis.log"))
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: r.addr()})
	defer rdb.Close()
	for deadline := time.Now().Add(10 * time.Second); rdb.Ping(context.Background()).Err() != nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			r.t.Fatalf("redis-server on %d did not start", r.port)
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
			rdb := redis.NewClient(&redis.Options{Addr: r.addr()})
			defer rdb.Close()
			if err := rdb.FlushAll(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
		},
		"restart without persistence": func(t *testing.T, r *restartableRedis) { r.kill(); r.start() },
	}
	for name, lose := range cases {
		t.Run(name, func(t *testing.T) {
			r := newRestartableRedis(t)
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
