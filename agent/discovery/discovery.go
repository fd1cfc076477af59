// Package discovery finds Intel AMT controllers on a subnet (S21): it
// tries a TCP connect to each address's WS-Man ports (16992 HTTP, 16993
// TLS) and, where one answers, sends the unauthenticated WS-Man Identify
// for vendor, product and protocol versions. Sweeps are bounded in
// concurrency (a fixed number of connections open at once, shared by all
// sweeps of one Sweeper) and in rate (new connections a second), and hand
// their findings over in chunks so that a /16 never sits in memory whole.
package discovery

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"iter"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/wsman"
)

// MaxAddresses is the largest subnet a sweep accepts: an IPv4 /16 or an
// IPv6 /112. A bigger one is almost always a typo, and would take hours.
const MaxAddresses = 1 << 16

// Config tunes a Sweeper. Zero values get the defaults noted.
type Config struct {
	// HTTPPort and TLSPort are the WS-Man ports; default 16992 and 16993.
	HTTPPort, TLSPort int
	// Concurrency is how many connections may be open at once across all
	// sweeps; default 64.
	Concurrency int
	// Rate is how many connections may be opened a second; default 200.
	// Ignored when Limiter is set.
	Rate int
	// DialTimeout bounds one TCP connect (and TLS handshake); default 2s.
	DialTimeout time.Duration
	// IdentifyTimeout bounds one Identify exchange; default 5s.
	IdentifyTimeout time.Duration
	// ChunkSize is how many findings are handed over at once; default 256.
	ChunkSize int
	// Dial opens connections (tests, proxies); default a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Limiter paces new connections; default NewLimiter(Rate, nil).
	Limiter Limiter
	Log     zerolog.Logger
}

// Options narrow one sweep; zero fields keep the Sweeper's values. They
// can only lower the Sweeper's bounds, never raise them: the agent's
// configuration is the operator's limit for the subnet.
type Options struct {
	Concurrency int
	Rate        int
}

// Result is what one address answered. Only addresses where a port
// answered are reported.
type Result struct {
	Addr netip.Addr
	// HTTP and TLS say which WS-Man port accepted a connection.
	HTTP, TLS bool
	// Identified says the Identify answered; the fields below come from it.
	Identified      bool
	ProductVendor   string
	ProductVersion  string
	ProtocolVersion string
}

// Stats counts one sweep.
type Stats struct {
	Addresses  int // addresses probed
	Found      int // addresses where a port answered
	Identified int // of those, the ones that answered Identify
}

// Emit receives a sweep's findings in chunks of at most Config.ChunkSize;
// the last call has last set (its chunk may be empty). An error stops
// the sweep.
type Emit func(ctx context.Context, found []Result, last bool) error

// Sweeper probes subnets. It is safe for concurrent use; concurrent
// sweeps share its concurrency and rate bounds.
type Sweeper struct {
	cfg   Config
	slots chan struct{} // one per open connection allowed
}

// New applies defaults; it makes no network call.
func New(cfg Config) (*Sweeper, error) {
	if cfg.HTTPPort == 0 {
		cfg.HTTPPort = wsman.PortHTTP
	}
	if cfg.TLSPort == 0 {
		cfg.TLSPort = wsman.PortHTTPS
	}
	for name, p := range map[string]int{"http_port": cfg.HTTPPort, "tls_port": cfg.TLSPort} {
		if p < 1 || p > 65535 {
			return nil, fmt.Errorf("discovery: %w", domain.InvalidField(name, strconv.Itoa(p), "must be 1 to 65535"))
		}
	}
	for _, f := range []struct {
		name string
		v    int64
	}{{"concurrency", int64(cfg.Concurrency)}, {"rate", int64(cfg.Rate)}, {"dial_timeout", int64(cfg.DialTimeout)},
		{"identify_timeout", int64(cfg.IdentifyTimeout)}, {"chunk_size", int64(cfg.ChunkSize)}} {
		if f.v < 0 {
			return nil, fmt.Errorf("discovery: %w", domain.InvalidField(f.name, strconv.FormatInt(f.v, 10), "must not be negative"))
		}
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 64
	}
	if cfg.Rate == 0 {
		cfg.Rate = 200
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	if cfg.IdentifyTimeout == 0 {
		cfg.IdentifyTimeout = 5 * time.Second
	}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = 256
	}
	if cfg.Dial == nil {
		cfg.Dial = (&net.Dialer{}).DialContext
	}
	if cfg.Limiter == nil {
		cfg.Limiter = NewLimiter(cfg.Rate, nil)
	}
	return &Sweeper{cfg: cfg, slots: make(chan struct{}, cfg.Concurrency)}, nil
}

// Hosts checks subnet and returns how many addresses a sweep probes and
// the addresses themselves: all of them, except an IPv4 subnet's network
// and broadcast addresses when it has them (shorter than /31).
func Hosts(subnet netip.Prefix) (int, iter.Seq[netip.Addr], error) {
	if !subnet.IsValid() {
		return 0, nil, domain.InvalidField("subnet", subnet.String(), "not a valid prefix")
	}
	subnet = subnet.Masked()
	hostBits := subnet.Addr().BitLen() - subnet.Bits()
	if hostBits > 16 {
		limit := "/16"
		if subnet.Addr().Is6() {
			limit = "/112"
		}
		return 0, nil, domain.InvalidField("subnet", subnet.String(),
			"larger than "+limit+" (more than "+strconv.Itoa(MaxAddresses)+" addresses); sweep smaller subnets")
	}
	n, skip := 1<<hostBits, 0
	if subnet.Addr().Is4() && hostBits >= 2 {
		skip = 1
	}
	seq := func(yield func(netip.Addr) bool) {
		a := subnet.Addr()
		for i := range n {
			if i >= skip && i < n-skip && !yield(a) {
				return
			}
			a = a.Next()
		}
	}
	return n - 2*skip, seq, nil
}

// Sweep probes every host address of subnet and hands what answered to
// emit. It returns when every address was probed and the last chunk was
// emitted, or with the first error (ctx's, emit's or a bad subnet).
func (s *Sweeper) Sweep(ctx context.Context, subnet netip.Prefix, o Options, emit Emit) (Stats, error) {
	n, hosts, err := Hosts(subnet)
	if err != nil {
		return Stats{}, fmt.Errorf("discovery: sweep: %w", err)
	}
	if o.Concurrency < 0 {
		return Stats{}, fmt.Errorf("discovery: sweep %s: %w", subnet, domain.InvalidField("concurrency", strconv.Itoa(o.Concurrency), "must not be negative"))
	}
	if o.Rate < 0 {
		return Stats{}, fmt.Errorf("discovery: sweep %s: %w", subnet, domain.InvalidField("rate", strconv.Itoa(o.Rate), "must not be negative"))
	}
	workers := s.cfg.Concurrency
	if o.Concurrency > 0 {
		workers = min(workers, o.Concurrency)
	}
	workers = max(min(workers, n), 1)
	lims := []Limiter{s.cfg.Limiter}
	if o.Rate > 0 && o.Rate < s.cfg.Rate {
		lims = append(lims, NewLimiter(o.Rate, nil))
	}
	log := s.cfg.Log.With().Str("subnet", subnet.Masked().String()).Logger()
	log.Debug().Int("addresses", n).Int("workers", workers).Msg("sweep started")

	g, gctx := errgroup.WithContext(ctx)
	addrs := make(chan netip.Addr)
	found := make(chan Result)
	g.Go(func() error {
		defer close(addrs)
		for a := range hosts {
			select {
			case addrs <- a:
			case <-gctx.Done():
				return nil
			}
		}
		return nil
	})
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for a := range addrs {
				r, ok := s.probe(gctx, a, lims)
				if !ok {
					continue
				}
				select {
				case found <- r:
				case <-gctx.Done():
					return
				}
			}
		})
	}
	g.Go(func() error { wg.Wait(); close(found); return nil })

	var st Stats
	g.Go(func() error {
		buf := make([]Result, 0, s.cfg.ChunkSize)
		for r := range found {
			st.Found++
			if r.Identified {
				st.Identified++
			}
			buf = append(buf, r)
			if len(buf) == s.cfg.ChunkSize {
				if err := emit(gctx, buf, false); err != nil {
					return err
				}
				buf = make([]Result, 0, s.cfg.ChunkSize)
			}
		}
		// The workers stop early only when gctx ended.
		if err := gctx.Err(); err != nil {
			return err
		}
		return emit(gctx, buf, true)
	})
	if err := g.Wait(); err != nil {
		if cerr := ctx.Err(); cerr != nil {
			err = cerr
		}
		return st, fmt.Errorf("discovery: sweep %s: %w", subnet.Masked(), err)
	}
	st.Addresses = n
	log.Info().Int("addresses", n).Int("found", st.Found).Int("identified", st.Identified).Msg("sweep done")
	return st, nil
}

// probe checks one address; ok is false when no port answered or ctx
// ended.
func (s *Sweeper) probe(ctx context.Context, a netip.Addr, lims []Limiter) (Result, bool) {
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return Result{}, false
	}
	defer func() { <-s.slots }()

	r := Result{Addr: a}
	var pin []byte
	var err error
	if r.HTTP, err = s.connect(ctx, a, s.cfg.HTTPPort, lims, nil); err != nil {
		return r, false
	}
	if r.TLS, err = s.connect(ctx, a, s.cfg.TLSPort, lims, &pin); err != nil {
		return r, false
	}
	if !r.HTTP && !r.TLS {
		return r, false
	}
	s.identify(ctx, &r, lims, pin)
	return r, true
}

// wait takes a token from every limiter.
func wait(ctx context.Context, lims []Limiter) error {
	for _, l := range lims {
		if err := l.Wait(ctx); err != nil {
			return err
		}
	}
	return nil
}

// connect reports whether port accepts a TCP connection; err is only
// ctx's. With pin set it also does a TLS handshake and keeps the SHA-256
// of the leaf the device presented, so that Identify can pin it.
func (s *Sweeper) connect(ctx context.Context, a netip.Addr, port int, lims []Limiter, pin *[]byte) (bool, error) {
	if err := wait(ctx, lims); err != nil {
		return false, err
	}
	dctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	c, err := s.cfg.Dial(dctx, "tcp", netip.AddrPortFrom(a, uint16(port)).String())
	if err != nil {
		return false, ctx.Err()
	}
	defer c.Close()
	if pin != nil {
		// Trust on first use is enough here: Identify carries no secret
		// and its answer is only informative.
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) //nolint:gosec // see above
		if err := tc.HandshakeContext(dctx); err == nil {
			if pcs := tc.ConnectionState().PeerCertificates; len(pcs) > 0 {
				sum := sha256.Sum256(pcs[0].Raw)
				*pin = sum[:]
			}
		}
	}
	return true, nil
}

// identify fills r from the unauthenticated Identify, over HTTP when
// that port answered, else over TLS pinned to the certificate seen.
func (s *Sweeper) identify(ctx context.Context, r *Result, lims []Limiter, pin []byte) {
	cfg := wsman.Config{Address: netip.AddrPortFrom(r.Addr, uint16(s.cfg.HTTPPort)).String(), Timeout: s.cfg.IdentifyTimeout}
	if !r.HTTP {
		if pin == nil {
			return // the TLS port spoke no TLS we accept
		}
		cfg.Address = netip.AddrPortFrom(r.Addr, uint16(s.cfg.TLSPort)).String()
		cfg.TLS = &wsman.TLSConfig{PinSHA256: pin}
	}
	// The HTTP client pools connections; closing ours ourselves keeps the
	// concurrency bound exact instead of leaving idle ones behind.
	var mu sync.Mutex
	var conns []net.Conn
	done := false
	cfg.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if err := wait(ctx, lims); err != nil {
			return nil, err
		}
		dctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
		defer cancel()
		c, err := s.cfg.Dial(dctx, network, addr)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		if done { // a dial that outlived Identify
			_ = c.Close()
			return nil, net.ErrClosed
		}
		conns = append(conns, c)
		return c, nil
	}
	ws, err := wsman.New(cfg)
	if err != nil {
		s.cfg.Log.Debug().Str("ip", r.Addr.String()).Err(err).Msg("identify not attempted")
		return
	}
	defer func() {
		ws.Close()
		mu.Lock()
		defer mu.Unlock()
		done = true
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	id, err := ws.Identify(ctx)
	if err != nil {
		// A 401 or a garbled answer still proves a listener; the ports
		// say enough for the status.
		lvl := zerolog.DebugLevel
		if !errors.Is(err, wsman.ErrUnauthorized) && ctx.Err() == nil {
			lvl = zerolog.InfoLevel
		}
		s.cfg.Log.WithLevel(lvl).Str("ip", r.Addr.String()).Err(err).Msg("identify failed")
		return
	}
	r.Identified = true
	r.ProductVendor, r.ProductVersion, r.ProtocolVersion = id.ProductVendor, id.ProductVersion, id.ProtocolVersion
}
