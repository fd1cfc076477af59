package discovery_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/agent/discovery"
	"github.com/amtops/amtops/internal/amtsim"
	"github.com/amtops/amtops/internal/amtsim/amtsimtest"
	"github.com/amtops/amtops/internal/domain"
)

const wsmanNS = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"

// fleet is a running simulator on a random loopback /24, from .1 onwards.
type fleet struct {
	sim    *amtsim.Sim
	subnet netip.Prefix // the /24 holding the fleet
}

// startFleet runs n simulated devices from <random /24>.1; over maps host
// numbers (1 = the first device) to overrides.
func startFleet(t testing.TB, n int, over map[int]amtsim.Override) fleet {
	t.Helper()
	byIndex := map[int]amtsim.Override{}
	for h, o := range over {
		byIndex[h-1] = o
	}
	sim := amtsimtest.Start(t, amtsim.Config{Devices: n, Kind: amtsim.KindMEBx, Password: "P@ssw0rd1"}, byIndex)
	return fleet{sim: sim, subnet: netip.PrefixFrom(sim.Addrs()[0], 24).Masked()}
}

// host is the address h places after the network address of base's /24.
func host(base netip.Addr, h int) netip.Addr {
	b := base.As4()
	b[3] = byte(h)
	return netip.AddrFrom4(b)
}

// probeDialer dials for real and counts dials and open connections.
type probeDialer struct {
	dials   atomic.Int64
	open    atomic.Int64
	maxOpen atomic.Int64
}

func (d *probeDialer) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.dials.Add(1)
	n := d.open.Add(1)
	for m := d.maxOpen.Load(); n > m && !d.maxOpen.CompareAndSwap(m, n); m = d.maxOpen.Load() {
	}
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		d.open.Add(-1)
		return nil, err
	}
	return &countedConn{Conn: c, d: d}, nil
}

type countedConn struct {
	net.Conn
	d    *probeDialer
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.d.open.Add(-1) })
	return c.Conn.Close()
}

// countingLimiter counts consultations of a real, generous limiter.
type countingLimiter struct {
	n   atomic.Int64
	lim *discovery.RateLimiter
}

func (l *countingLimiter) Wait(ctx context.Context) error {
	l.n.Add(1)
	return l.lim.Wait(ctx)
}

// chunks records Emit calls.
type chunks struct {
	mu    sync.Mutex
	sizes []int
	last  []bool
	found []discovery.Result
}

func (c *chunks) emit(_ context.Context, found []discovery.Result, last bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sizes = append(c.sizes, len(found))
	c.last = append(c.last, last)
	c.found = append(c.found, found...)
	return nil
}

func (c *chunks) byAddr() map[netip.Addr]discovery.Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[netip.Addr]discovery.Result{}
	for _, r := range c.found {
		m[r.Addr] = r
	}
	return m
}

type rig struct {
	sw   *discovery.Sweeper
	dial *probeDialer
	lim  *countingLimiter
}

func newRig(t *testing.T, f fleet, concurrency, chunk int) rig {
	t.Helper()
	d := &probeDialer{}
	l := &countingLimiter{lim: discovery.NewLimiter(100000, nil)}
	sw, err := discovery.New(discovery.Config{HTTPPort: f.sim.HTTPPort(), TLSPort: f.sim.TLSPort(),
		Concurrency: concurrency, ChunkSize: chunk, DialTimeout: 2 * time.Second, IdentifyTimeout: 5 * time.Second,
		Dial: d.Dial, Limiter: l, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	return rig{sw: sw, dial: d, lim: l}
}

func TestSweepFindsFleet(t *testing.T) {
	// 20 devices on .1–.20; .5 has nothing listening; .21–.30 are empty.
	f := startFleet(t, 20, map[int]amtsim.Override{
		5: {Kind: amtsim.KindNotAMT},
		6: {Kind: amtsim.KindMEBx},
		7: {Kind: amtsim.KindExternal},
		8: {Version: "16.1.25"},
	})
	r := newRig(t, f, 4, 5)
	subnet := netip.PrefixFrom(f.subnet.Addr(), 27) // .1–.30
	var got chunks
	st, err := r.sw.Sweep(context.Background(), subnet, discovery.Options{}, got.emit)
	if err != nil {
		t.Fatal(err)
	}

	want := map[netip.Addr]string{}
	for h := 1; h <= 20; h++ {
		if h != 5 {
			want[host(f.subnet.Addr(), h)] = "AMT 11.8.50"
		}
	}
	want[host(f.subnet.Addr(), 8)] = "AMT 16.1.25"
	found := got.byAddr()
	if len(found) != len(want) || len(got.found) != len(want) {
		t.Errorf("found %d results (%d distinct), want %d", len(got.found), len(found), len(want))
	}
	for a, version := range want {
		res, ok := found[a]
		switch {
		case !ok:
			t.Errorf("%s not found", a)
		case a == host(f.subnet.Addr(), 8) && (res.HTTP || !res.TLS): // CSME 16.1+: TLS only
			t.Errorf("%s: http=%v tls=%v, want the TLS port only", a, res.HTTP, res.TLS)
		case a != host(f.subnet.Addr(), 8) && (!res.HTTP || res.TLS):
			t.Errorf("%s: http=%v tls=%v, want the HTTP port only", a, res.HTTP, res.TLS)
		case !res.Identified || res.ProductVendor != "Intel Corporation" || res.ProductVersion != version || res.ProtocolVersion != wsmanNS:
			t.Errorf("%s: identify = %+v, want Intel Corporation, %s, %s", a, res, version, wsmanNS)
		}
	}
	if st.Addresses != 30 || st.Found != 19 || st.Identified != 19 {
		t.Errorf("stats = %+v, want 30 addresses, 19 found, 19 identified", st)
	}

	// Chunks of 5, then the rest with last set, exactly once, at the end.
	if !slices.Equal(got.sizes, []int{5, 5, 5, 4}) || !slices.Equal(got.last, []bool{false, false, false, true}) {
		t.Errorf("chunks = %v last = %v, want [5 5 5 4] [false false false true]", got.sizes, got.last)
	}

	// Every connection took a token: two ports per address, one Identify
	// per device that answered.
	if w, d := r.lim.n.Load(), r.dial.dials.Load(); w != 2*30+19 || d != w {
		t.Errorf("limiter consulted %d times, %d dials; want %d of each", w, d, 2*30+19)
	}
	if m := r.dial.maxOpen.Load(); m > 4 || m < 1 {
		t.Errorf("max open connections = %d, want 1..4", m)
	}
	if o := r.dial.open.Load(); o != 0 {
		t.Errorf("%d connections left open after the sweep", o)
	}
}

func TestConcurrencyBound(t *testing.T) {
	f := startFleet(t, 30, nil)
	cases := []struct {
		name    string
		cfg     int
		opts    discovery.Options
		sweeps  int
		wantMax int64
	}{
		{name: "shared by two sweeps", cfg: 3, sweeps: 2, wantMax: 3},
		{name: "lowered by the sweep", cfg: 8, opts: discovery.Options{Concurrency: 2}, sweeps: 1, wantMax: 2},
		{name: "never raised by the sweep", cfg: 2, opts: discovery.Options{Concurrency: 50}, sweeps: 1, wantMax: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, f, tc.cfg, 256)
			var wg sync.WaitGroup
			errs := make(chan error, tc.sweeps)
			for range tc.sweeps {
				wg.Go(func() {
					var c chunks
					_, err := r.sw.Sweep(context.Background(), netip.PrefixFrom(f.subnet.Addr(), 26), tc.opts, c.emit)
					if err == nil && len(c.found) != 30 {
						err = fmt.Errorf("found %d devices, want 30", len(c.found))
					}
					errs <- err
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
			if m := r.dial.maxOpen.Load(); m > tc.wantMax || m < 1 {
				t.Errorf("max open connections = %d, want 1..%d", m, tc.wantMax)
			}
		})
	}
}

func TestSweepRefusesBadSubnets(t *testing.T) {
	d := &probeDialer{}
	sw, err := discovery.New(discovery.Config{Dial: d.Dial})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, subnet, want string
	}{
		{name: "IPv4 /8", subnet: "127.0.0.0/8", want: `subnet "127.0.0.0/8": larger than /16`},
		{name: "IPv4 /15", subnet: "127.76.0.0/15", want: `subnet "127.76.0.0/15": larger than /16`},
		{name: "IPv6 /64", subnet: "fd00::/64", want: `subnet "fd00::/64": larger than /112`},
		{name: "invalid", subnet: "", want: "subnet"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := netip.ParsePrefix(tc.subnet)
			_, err := sw.Sweep(context.Background(), p, discovery.Options{}, func(context.Context, []discovery.Result, bool) error {
				t.Error("emit called")
				return nil
			})
			var fe *domain.FieldError
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.As(err, &fe) {
				t.Errorf("err = %v, want a field error containing %q", err, tc.want)
			}
		})
	}
	if n := d.dials.Load(); n != 0 {
		t.Errorf("%d dials for refused subnets", n)
	}
}

func TestHosts(t *testing.T) {
	cases := []struct {
		name         string
		subnet       string
		n            int
		first, last  string
		wantErrField bool
	}{
		{name: "/24 skips network and broadcast", subnet: "127.77.1.0/24", n: 254, first: "127.77.1.1", last: "127.77.1.254"},
		{name: "unmasked input", subnet: "127.77.1.77/30", n: 2, first: "127.77.1.77", last: "127.77.1.78"},
		{name: "/31 keeps both", subnet: "127.77.1.4/31", n: 2, first: "127.77.1.4", last: "127.77.1.5"},
		{name: "/32", subnet: "127.77.1.9/32", n: 1, first: "127.77.1.9", last: "127.77.1.9"},
		{name: "/16", subnet: "127.77.0.0/16", n: 65534, first: "127.77.0.1", last: "127.77.255.254"},
		{name: "IPv6 /112 keeps all", subnet: "::1/112", n: 65536, first: "::", last: "::ffff"},
		{name: "IPv4 /8 refused", subnet: "127.0.0.0/8", wantErrField: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, seq, err := discovery.Hosts(netip.MustParsePrefix(tc.subnet))
			if tc.wantErrField {
				var fe *domain.FieldError
				if !errors.As(err, &fe) || fe.Field != "subnet" {
					t.Fatalf("err = %v, want a field error on subnet", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var all []netip.Addr
			for a := range seq {
				all = append(all, a)
			}
			if len(all) != tc.n || n != tc.n {
				t.Fatalf("got %d addresses (count %d), want %d", len(all), n, tc.n)
			}
			if all[0].String() != tc.first || all[len(all)-1].String() != tc.last {
				t.Errorf("range %s–%s, want %s–%s", all[0], all[len(all)-1], tc.first, tc.last)
			}
		})
	}
}

func TestLimiterSpacing(t *testing.T) {
	now := time.Unix(1000, 0)
	l := discovery.NewLimiter(10, func() time.Time { return now })
	ctx := context.Background()
	// Calls at the same instant are booked 100 ms apart; Wait on a
	// booked slot in the past returns at once.
	for i := range 3 {
		if d := discovery.Reserve(l); d != time.Duration(i)*100*time.Millisecond {
			t.Errorf("reservation %d: wait %v, want %v", i, d, time.Duration(i)*100*time.Millisecond)
		}
	}
	now = now.Add(time.Second) // idle long enough: no debt carried over
	if err := l.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if d := discovery.Reserve(l); d != 100*time.Millisecond {
		t.Errorf("after idle: wait %v, want 100ms", d)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := l.Wait(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Wait = %v", err)
	}
}

func TestSweepStops(t *testing.T) {
	f := startFleet(t, 4, nil)
	r := newRig(t, f, 2, 1)
	boom := errors.New("report failed")
	cases := []struct {
		name string
		ctx  func() context.Context
		emit discovery.Emit
		want error
	}{
		{name: "emit error", ctx: context.Background, want: boom,
			emit: func(context.Context, []discovery.Result, bool) error { return boom }},
		{name: "cancelled", want: context.Canceled, ctx: func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, emit: func(context.Context, []discovery.Result, bool) error { return nil }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.sw.Sweep(tc.ctx(), netip.PrefixFrom(f.subnet.Addr(), 29), discovery.Options{}, tc.emit)
			if !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
	// An HTTP client closes a finished connection on its own goroutine,
	// a moment after the sweep returned.
	deadline := time.Now().Add(2 * time.Second)
	for r.dial.open.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if o := r.dial.open.Load(); o != 0 {
		t.Errorf("%d connections left open", o)
	}
}

// TestIdentifyOverTLS covers a device whose HTTP port is closed: the
// Identify goes over TLS, pinned to the certificate the probe saw.
func TestIdentifyOverTLS(t *testing.T) {
	body, err := os.ReadFile("testdata/identify_response.xml")
	if err != nil {
		t.Fatal(err)
	}
	var lis net.Listener
	var addr netip.AddrPort
	for range 8 {
		v, _ := rand.Int(rand.Reader, big.NewInt(1<<20))
		r := v.Int64()
		addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 77, byte(r % 250), 1}), uint16(20000+r>>8%20000))
		if lis, err = net.Listen("tcp", addr.String()); err == nil {
			break
		}
	}
	if lis == nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/soap+xml; charset=UTF-8")
		_, _ = w.Write(body)
	}))
	srv.Listener = lis
	srv.StartTLS()
	t.Cleanup(srv.Close)

	d := &probeDialer{}
	// HTTPPort: the port below, where nothing listens.
	sw, err := discovery.New(discovery.Config{HTTPPort: int(addr.Port()) - 1, TLSPort: int(addr.Port()), Dial: d.Dial,
		Limiter: discovery.NewLimiter(100000, nil)})
	if err != nil {
		t.Fatal(err)
	}
	var got chunks
	if _, err := sw.Sweep(context.Background(), netip.PrefixFrom(addr.Addr(), 32), discovery.Options{}, got.emit); err != nil {
		t.Fatal(err)
	}
	want := discovery.Result{Addr: addr.Addr(), TLS: true, Identified: true, ProductVendor: "Intel Corporation",
		ProductVersion: "AMT 16.1", ProtocolVersion: wsmanNS}
	if len(got.found) != 1 || got.found[0] != want {
		t.Errorf("found %+v, want [%+v]", got.found, want)
	}
}

func TestBadSettings(t *testing.T) {
	cases := []struct {
		name  string
		cfg   discovery.Config
		opts  discovery.Options
		field string
	}{
		{name: "negative concurrency", cfg: discovery.Config{Concurrency: -1}, field: "concurrency"},
		{name: "port out of range", cfg: discovery.Config{TLSPort: 70000}, field: "tls_port"},
		{name: "negative dial timeout", cfg: discovery.Config{DialTimeout: -time.Second}, field: "dial_timeout"},
		{name: "negative sweep rate", opts: discovery.Options{Rate: -5}, field: "rate"},
		{name: "negative sweep concurrency", opts: discovery.Options{Concurrency: -5}, field: "concurrency"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := &probeDialer{}
			tc.cfg.Dial = d.Dial
			sw, err := discovery.New(tc.cfg)
			if err == nil {
				_, err = sw.Sweep(context.Background(), netip.MustParsePrefix("127.77.253.0/30"), tc.opts,
					func(context.Context, []discovery.Result, bool) error { return nil })
			}
			var fe *domain.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Errorf("err = %v, want a field error on %s", err, tc.field)
			}
			if n := d.dials.Load(); n != 0 {
				t.Errorf("%d dials despite bad settings", n)
			}
		})
	}
}
