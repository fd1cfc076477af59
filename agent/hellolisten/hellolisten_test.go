package hellolisten

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/amtops/amtops/internal/hello"
)

// Loopback range assigned to this package's tests: the listener on
// 127.85.0.1, authorised devices in 127.85.16.0/20, foreign ones in 127.85.2.0/24.
var (
	listenIP   = "127.85.0.1"
	authorised = netip.MustParsePrefix("127.85.16.0/20")
	foreignIP  = netip.MustParseAddr("127.85.2.1")
)

// recorder is the server side of ReportHello as the test sees it.
type recorder struct {
	mu      sync.Mutex
	calls   [][]Report
	failing bool
	gate    chan struct{} // when set, each call waits for it: a slow server
}

func (r *recorder) ReportHello(ctx context.Context, reports []Report) error {
	if r.gate != nil {
		select {
		case <-r.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failing {
		return errors.New("server unavailable")
	}
	r.calls = append(r.calls, append([]Report(nil), reports...))
	return nil
}

func (r *recorder) all() []Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Report
	for _, c := range r.calls {
		out = append(out, c...)
	}
	return out
}

func (r *recorder) setFailing(v bool) {
	r.mu.Lock()
	r.failing = v
	r.mu.Unlock()
}

type harness struct {
	l    *Listener
	rec  *recorder
	addr string
	done chan error
	stop context.CancelFunc
}

func start(t *testing.T, tune func(*Config)) *harness {
	t.Helper()
	rec := &recorder{}
	cfg := Config{
		Addr:        net.JoinHostPort(listenIP, "0"),
		Subnets:     func() []netip.Prefix { return []netip.Prefix{authorised} },
		Reporter:    rec,
		Log:         zerolog.Nop(),
		ReadTimeout: 2 * time.Second,
		BatchWait:   50 * time.Millisecond,
	}
	if tune != nil {
		tune(&cfg)
	}
	l, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{l: l, rec: rec, addr: l.Addr().String(), done: make(chan error, 1), stop: cancel}
	go func() { h.done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-h.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not stop within 10 s")
		}
	})
	return h
}

func device(i int) netip.Addr {
	b := authorised.Addr().As4()
	b[2] += byte(i >> 8)
	b[3] += byte(i)
	return netip.AddrFrom4(b)
}

func helloBytes(t testing.TB, i int, retry uint32) []byte {
	t.Helper()
	var u hello.UUID
	u[0], u[1], u[15] = byte(i), byte(i>>8), 0x42
	b, err := hello.Hello{Flags: 0, RetryCount: retry, UUID: u, Hashes: []hello.Hash{
		{Alg: hello.SHA256, Sum: bytes.Repeat([]byte{byte(i)}, 32)},
		{Alg: hello.SHA1, Sum: bytes.Repeat([]byte{0x11}, 20)},
	}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// send writes b from src and closes, as a device does.
func send(addr string, src netip.Addr, b []byte) error {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write(b)
	return err
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestReportsGoodHello(t *testing.T) {
	h := start(t, nil)
	before := time.Now()
	if err := send(h.addr, device(7), helloBytes(t, 7, 3)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "one report", func() bool { return len(h.rec.all()) == 1 })
	r := h.rec.all()[0]
	want, _ := hello.Parse(helloBytes(t, 7, 3))
	if r.Addr != device(7) || r.Hello.UUID != want.UUID || r.Hello.RetryCount != 3 || len(r.Hello.Hashes) != 2 ||
		!bytes.Equal(r.Hello.Hashes[0].Sum, want.Hashes[0].Sum) || r.At.Before(before) {
		t.Fatalf("report = %+v, want addr %s uuid %s retry 3", r, device(7), want.UUID)
	}
	if s := h.l.Stats(); s.Accepted != 1 || s.Reported != 1 || s.Batches != 1 {
		t.Errorf("stats = %+v", s)
	}
}

func TestDropsAndCountsBadInput(t *testing.T) {
	bad := helloBytes(t, 1, 0)
	bad[2] = 2 // version 2
	for _, tc := range []struct {
		name  string
		src   netip.Addr
		b     []byte
		count func(Stats) int64
	}{
		{"foreign sender", foreignIP, helloBytes(t, 1, 0), func(s Stats) int64 { return s.Foreign }},
		{"oversized", device(2), make([]byte, 64<<10), func(s Stats) int64 { return s.Oversized }},
		{"just over the cap", device(3), append(helloBytes(t, 3, 0), make([]byte, hello.MaxSize)...), func(s Stats) int64 { return s.Oversized }},
		{"wrong version", device(4), bad, func(s Stats) int64 { return s.Malformed }},
		{"trailing byte", device(5), append(helloBytes(t, 5, 0), 0), func(s Stats) int64 { return s.Malformed }},
		{"truncated", device(6), helloBytes(t, 6, 0)[:30], func(s Stats) int64 { return s.Malformed }},
		{"empty", device(8), nil, func(s Stats) int64 { return s.Malformed }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, nil)
			// The oversized writer may see a reset once the listener stops reading.
			_ = send(h.addr, tc.src, tc.b)
			eventually(t, 5*time.Second, "counted", func() bool { return tc.count(h.l.Stats()) == 1 })
			// A good Hello afterwards still gets through: nothing crashed.
			if err := send(h.addr, device(100), helloBytes(t, 100, 0)); err != nil {
				t.Fatal(err)
			}
			eventually(t, 5*time.Second, "good hello after bad", func() bool { return len(h.rec.all()) == 1 })
			if got := h.rec.all()[0].Addr; got != device(100) {
				t.Errorf("reported %s, want only %s", got, device(100))
			}
		})
	}
}

// A sender that trickles bytes and never closes holds one slot until the
// read deadline, not longer, and does not delay others.
func TestSlowLoris(t *testing.T) {
	h := start(t, func(c *Config) { c.ReadTimeout = 500 * time.Millisecond; c.MaxConns = 2 })
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: device(9).AsSlice()}}
	c, err := d.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	closed := make(chan time.Duration, 1)
	go func() {
		t0 := time.Now()
		for _, b := range helloBytes(t, 9, 0) {
			if _, err := c.Write([]byte{b}); err != nil {
				closed <- time.Since(t0)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		closed <- -1
	}()
	if err := send(h.addr, device(10), helloBytes(t, 10, 0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "other device reported while the slow one is open", func() bool { return len(h.rec.all()) == 1 })
	eventually(t, 3*time.Second, "slow sender timed out", func() bool { return h.l.Stats().Timeouts == 1 })
	select {
	case d := <-closed:
		if d < 0 || d > 3*time.Second {
			t.Errorf("slow sender could write for %v after the deadline", d)
		}
	case <-time.After(5 * time.Second):
		t.Error("slow sender's connection was never closed")
	}
	if n := len(h.rec.all()); n != 1 {
		t.Errorf("%d reports, want only the fast device", n)
	}
}

func TestDeduplicates(t *testing.T) {
	h := start(t, nil)
	for i := 0; i < 5; i++ {
		if err := send(h.addr, device(11), helloBytes(t, 11, uint32(i))); err != nil {
			t.Fatal(err)
		}
	}
	// The same UUID from another address is news (the device moved).
	if err := send(h.addr, device(12), helloBytes(t, 11, 0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "dedup counted", func() bool { return h.l.Stats().Duplicates == 4 })
	eventually(t, 5*time.Second, "two reports", func() bool { return len(h.rec.all()) == 2 })
	time.Sleep(100 * time.Millisecond)
	if n := len(h.rec.all()); n != 2 {
		t.Errorf("%d reports, want 2", n)
	}
}

func TestDedupWindowExpires(t *testing.T) {
	h := start(t, func(c *Config) { c.DedupWindow = 300 * time.Millisecond })
	for i := 0; i < 2; i++ {
		if err := send(h.addr, device(13), helloBytes(t, 13, uint32(i))); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, fmt.Sprintf("report %d", i+1), func() bool { return len(h.rec.all()) == i+1 })
		time.Sleep(400 * time.Millisecond)
	}
	if got := h.rec.all(); got[1].Hello.RetryCount != 1 {
		t.Errorf("second report retry %d, want 1", got[1].Hello.RetryCount)
	}
}

// A failed ReportHello is counted and does not swallow the device's next Hello.
func TestReportFailure(t *testing.T) {
	h := start(t, nil)
	h.rec.setFailing(true)
	if err := send(h.addr, device(14), helloBytes(t, 14, 0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "report error counted", func() bool { return h.l.Stats().ReportErrors == 1 })
	h.rec.setFailing(false)
	if err := send(h.addr, device(14), helloBytes(t, 14, 1)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "retry reported", func() bool { return len(h.rec.all()) == 1 })
}

// A server slower than the devices: the queue bounds memory, drops are
// counted, and a dropped device's next Hello is not taken for a duplicate.
func TestQueueFull(t *testing.T) {
	gate := make(chan struct{})
	h := start(t, func(c *Config) {
		c.QueueSize, c.BatchSize = 2, 1
		c.Reporter.(*recorder).gate = gate
	})
	const n = 10
	for i := 0; i < n; i++ {
		if err := send(h.addr, device(200+i), helloBytes(t, 200+i, 0)); err != nil {
			t.Fatal(err)
		}
		if i == 0 { // let the batcher take the first and block on the server
			time.Sleep(100 * time.Millisecond)
		}
	}
	eventually(t, 5*time.Second, "all accepted", func() bool { return h.l.Stats().Accepted == n })
	eventually(t, 5*time.Second, "drops counted", func() bool { return h.l.Stats().QueueFull == n-3 })
	close(gate)
	eventually(t, 5*time.Second, "queued ones reported", func() bool { return h.l.Stats().Reported == 3 })
	dropped := device(200 + n - 1)
	if err := send(h.addr, dropped, helloBytes(t, 200+n-1, 1)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "dropped device's retry reported", func() bool { return h.l.Stats().Reported == 4 })
	if got := h.rec.all()[3].Addr; got != dropped {
		t.Errorf("4th report from %s, want %s", got, dropped)
	}
}

// Subnets are read per connection: a subnet the server withdraws stops
// being served at once.
func TestSubnetsFollowTheAgent(t *testing.T) {
	var mu sync.Mutex
	current := []netip.Prefix{authorised}
	h := start(t, func(c *Config) {
		c.Subnets = func() []netip.Prefix { mu.Lock(); defer mu.Unlock(); return current }
	})
	mu.Lock()
	current = nil
	mu.Unlock()
	_ = send(h.addr, device(15), helloBytes(t, 15, 0))
	eventually(t, 5*time.Second, "foreign counted", func() bool { return h.l.Stats().Foreign == 1 })
	if n := len(h.rec.all()); n != 0 {
		t.Errorf("%d reports from a withdrawn subnet", n)
	}
}

// 2,000 devices at once: every Hello reported, in few RPCs, in bounded time.
func TestStorm(t *testing.T) {
	const n = 2000
	h := start(t, func(c *Config) { c.BatchWait = 200 * time.Millisecond })
	t0 := time.Now()
	var g errgroup.Group
	g.SetLimit(64)
	for i := 0; i < n; i++ {
		g.Go(func() error { return send(h.addr, device(i), helloBytes(t, i, 0)) })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "all reported", func() bool { return len(h.rec.all()) == n })
	took := time.Since(t0)
	seen := map[netip.Addr]bool{}
	for _, r := range h.rec.all() {
		seen[r.Addr] = true
	}
	s := h.l.Stats()
	h.rec.mu.Lock()
	calls := len(h.rec.calls)
	h.rec.mu.Unlock()
	t.Logf("%d hellos in %v, %d ReportHello calls, stats %+v", n, took, calls, s)
	if len(seen) != n || s.Reported != n || s.Duplicates != 0 {
		t.Errorf("%d distinct devices, stats %+v; want %d", len(seen), s, n)
	}
	if calls > n/20 {
		t.Errorf("%d ReportHello calls for %d Hellos; batching should make it at most %d", calls, n, n/20)
	}
}

// Stopping closes the port, ends open connections and still reports what
// was queued.
func TestRunStopsCleanly(t *testing.T) {
	h := start(t, func(c *Config) { c.BatchWait = time.Hour; c.ReadTimeout = time.Hour })
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: device(16).AsSlice()}}
	idle, err := d.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if err := send(h.addr, device(17), helloBytes(t, 17, 0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "accepted", func() bool { return h.l.Stats().Accepted == 2 })
	time.Sleep(50 * time.Millisecond) // let the good Hello reach the queue
	t0 := time.Now()
	h.stop()
	select {
	case err := <-h.done:
		h.done <- err // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("stop took %v", d)
	}
	if got := h.rec.all(); len(got) != 1 || got[0].Addr != device(17) {
		t.Errorf("reports after stop = %+v, want the queued Hello", got)
	}
	if _, err := net.DialTimeout("tcp", h.addr, time.Second); err == nil {
		t.Error("port still open after Run returned")
	}
}
