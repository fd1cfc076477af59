package store_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/testpeers"
	"github.com/amtops/amtops/server/store"
)

// A server that starts while Redis is still loading its data (a restart
// with a big AOF or RDB) waits for it instead of exiting (issue 14 item 7).
// The Redis is real: it loads two million keys, which takes a few seconds.
func TestDialWaitsForLoadingRedis(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		testpeers.Missing(t, "redis-server", "apt-get install redis-server")
		return
	}
	dir := t.TempDir()
	// Make the dataset with a first Redis, then stop it.
	port := freePort(t)
	first := startRedisAt(t, bin, dir, port, "--enable-debug-command", "yes")
	cli := func(args ...string) string {
		out, err := exec.Command("redis-cli", append([]string{"-p", fmt.Sprint(port)}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("redis-cli %v: %v: %s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if out := cli("DEBUG", "POPULATE", "2000000", "k", "64"); out != "OK" {
		t.Fatalf("DEBUG POPULATE: %s", out)
	}
	if out := cli("SAVE"); out != "OK" {
		t.Fatalf("SAVE: %s", out)
	}
	_ = first.Process.Kill()
	_ = first.Wait()

	// A second Redis on the same data answers LOADING at first.
	port = freePort(t)
	startRedisAt(t, bin, dir, port)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t0 := time.Now()
	rdb, err := store.Dial(ctx, store.DialOptions{Addrs: []string{fmt.Sprintf("127.0.0.1:%d", port)}})
	if err != nil {
		t.Fatalf("dial while loading: %v", err)
	}
	defer rdb.Close()
	if n, err := rdb.DBSize(ctx).Result(); err != nil || n != 2000000 {
		t.Fatalf("after the wait: %d keys, %v; want the whole dataset", n, err)
	}
	t.Logf("waited %v for Redis to load", time.Since(t0).Round(time.Millisecond))
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startRedisAt runs redis-server on dir and port until the test ends and
// waits until it accepts connections (not until it has loaded).
func startRedisAt(t *testing.T, bin, dir string, port int, extra ...string) *exec.Cmd {
	t.Helper()
	args := append([]string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--daemonize", "no", "--logfile", filepath.Join(dir, fmt.Sprintf("redis-%d.log", port))}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %d did not start", port)
		}
	}
}
