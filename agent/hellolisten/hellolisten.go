// Package hellolisten is the agent's provisioning port: it accepts the Hello
// messages factory AMT devices send to TCP 9971, keeps those that parse
// strictly and come from the agent's authorised subnets, and hands them to
// the server in short batches so a fleet powering on at once costs a few RPCs.
//
// A device writes its Hello and closes the connection (MeshCentral's
// provisioning server, which activates real devices, also parses on close),
// so a message is what arrives before EOF; a connection still open at the
// read deadline is dropped.
package hellolisten

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/hello"
)

// DefaultAddr is the provisioning port firmware sends Hellos to.
const DefaultAddr = ":9971"

// Report is one accepted Hello with where and when it arrived.
type Report struct {
	Addr  netip.Addr
	Hello hello.Hello
	At    time.Time
}

// Reporter forwards Hellos to the server; one call per batch.
type Reporter interface {
	ReportHello(ctx context.Context, reports []Report) error
}

// Config configures a Listener; zero values take the defaults noted.
type Config struct {
	Addr string // listen address; DefaultAddr
	// Subnets returns the prefixes the agent is currently authorised for
	// (agent.Agent.Subnets); a Hello from elsewhere is dropped unread.
	Subnets  func() []netip.Prefix
	Reporter Reporter
	Log      zerolog.Logger

	ReadTimeout   time.Duration // whole message, from accept to EOF; 5 s
	MaxConns      int           // connections read at once; 256
	BatchSize     int           // Hellos per ReportHello; 256
	BatchWait     time.Duration // longest a Hello waits for its batch; 200 ms
	DedupWindow   time.Duration // same device and address reported once per window; 30 s
	QueueSize     int           // Hellos waiting for a batch before new ones are dropped; 8192
	ReportTimeout time.Duration // per ReportHello call; 10 s
}

func (c *Config) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(n *int, v int) {
		if *n <= 0 {
			*n = v
		}
	}
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	def(&c.ReadTimeout, 5*time.Second)
	def(&c.BatchWait, 200*time.Millisecond)
	def(&c.DedupWindow, 30*time.Second)
	def(&c.ReportTimeout, 10*time.Second)
	defInt(&c.MaxConns, 256)
	defInt(&c.BatchSize, 256)
	defInt(&c.QueueSize, 8192)
}

// Stats counts what the listener saw since it started.
type Stats struct {
	Accepted     int64 // connections accepted from authorised subnets
	Foreign      int64 // connections from outside the authorised subnets
	Oversized    int64 // more than hello.MaxSize bytes
	Malformed    int64 // rejected by hello.Parse
	Timeouts     int64 // not closed by the sender within ReadTimeout
	ReadErrors   int64 // other read failures (reset, …)
	Duplicates   int64 // same device and address within DedupWindow
	QueueFull    int64 // dropped because the batch queue was full
	Reported     int64 // Hellos the Reporter accepted
	Batches      int64 // ReportHello calls that succeeded
	ReportErrors int64 // ReportHello calls that failed (their Hellos are dropped)
}

type counters struct {
	accepted, foreign, oversized, malformed, timeouts, readErrors,
	duplicates, queueFull, reported, batches, reportErrors atomic.Int64
}

type seenKey struct {
	uuid hello.UUID
	addr netip.Addr
}

// maxSeen bounds the de-duplication table; beyond it Hellos go undeduplicated.
const maxSeen = 1 << 16

// Listener serves the provisioning port. Create with Listen, then Run.
type Listener struct {
	cfg   Config
	ln    net.Listener
	queue chan Report
	c     counters

	mu   sync.Mutex
	seen map[seenKey]time.Time
}

// Listen binds the provisioning port.
func Listen(cfg Config) (*Listener, error) {
	cfg.defaults()
	if cfg.Subnets == nil {
		return nil, errors.New("hellolisten: Config.Subnets is required")
	}
	if cfg.Reporter == nil {
		return nil, errors.New("hellolisten: Config.Reporter is required")
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("hellolisten: listen %s: %w", cfg.Addr, err)
	}
	return &Listener{cfg: cfg, ln: ln, queue: make(chan Report, cfg.QueueSize), seen: map[seenKey]time.Time{}}, nil
}

// Addr is the bound address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Stats returns a snapshot of the counters.
func (l *Listener) Stats() Stats {
	return Stats{
		Accepted: l.c.accepted.Load(), Foreign: l.c.foreign.Load(), Oversized: l.c.oversized.Load(),
		Malformed: l.c.malformed.Load(), Timeouts: l.c.timeouts.Load(), ReadErrors: l.c.readErrors.Load(),
		Duplicates: l.c.duplicates.Load(), QueueFull: l.c.queueFull.Load(), Reported: l.c.reported.Load(),
		Batches: l.c.batches.Load(), ReportErrors: l.c.reportErrors.Load(),
	}
}

// Run serves until ctx ends, then closes the port, waits for its connections
// and sends the Hellos already queued. Call it once. It returns nil after ctx ends, or the
// accept error that stopped it.
func (l *Listener) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopClose := context.AfterFunc(ctx, func() { l.ln.Close() })
	defer stopClose()

	batchDone := make(chan struct{})
	go func() {
		defer close(batchDone)
		l.batch(ctx)
	}()

	var conns sync.WaitGroup
	err := l.accept(ctx, &conns)
	cancel()
	l.ln.Close()
	conns.Wait()
	close(l.queue)
	<-batchDone
	return err
}

func (l *Listener) accept(ctx context.Context, conns *sync.WaitGroup) error {
	sem := make(chan struct{}, l.cfg.MaxConns)
	for {
		// Waiting for a slot before Accept leaves further devices in the
		// kernel's backlog, where their Hello is buffered, instead of
		// refusing them.
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		conn, err := l.ln.Accept()
		if err != nil {
			<-sem
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("hellolisten: accept: %w", err)
			}
			// EMFILE and the like: back off briefly rather than spin.
			l.cfg.Log.Warn().Err(err).Msg("hello accept failed")
			select {
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer func() { <-sem }()
			l.serve(ctx, conn)
		}()
	}
}

// serve reads one Hello from conn and queues it.
func (l *Listener) serve(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	ta, ok := conn.RemoteAddr().(*net.TCPAddr)
	addr := netip.Addr{}
	if ok {
		addr = ta.AddrPort().Addr().Unmap()
	}
	if !addr.IsValid() || !l.authorised(addr) {
		l.c.foreign.Add(1)
		return
	}
	l.c.accepted.Add(1)
	log := l.cfg.Log.With().Str("addr", addr.String()).Logger()

	if err := conn.SetReadDeadline(time.Now().Add(l.cfg.ReadTimeout)); err != nil {
		l.c.readErrors.Add(1)
		return
	}
	b, err := io.ReadAll(io.LimitReader(conn, hello.MaxSize+1))
	switch {
	case len(b) > hello.MaxSize:
		l.c.oversized.Add(1)
		log.Debug().Msg("hello oversized, dropped")
		return
	case err != nil:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			l.c.timeouts.Add(1)
			log.Debug().Int("bytes", len(b)).Msg("hello not closed within the read timeout, dropped")
		} else {
			l.c.readErrors.Add(1)
			log.Debug().Err(err).Msg("hello read failed")
		}
		return
	}
	h, err := hello.Parse(b)
	if err != nil {
		l.c.malformed.Add(1)
		log.Debug().Err(err).Msg("hello malformed, dropped")
		return
	}
	now := time.Now()
	if !l.markSeen(seenKey{h.UUID, addr}, now) {
		l.c.duplicates.Add(1)
		return
	}
	select {
	case l.queue <- Report{Addr: addr, Hello: h, At: now}:
	default:
		l.forget(seenKey{h.UUID, addr})
		// A storm can overflow the queue thousands of times: log the first
		// drop and every thousandth, the counter has the rest.
		if n := l.c.queueFull.Add(1); n == 1 || n%1000 == 0 {
			log.Warn().Int64("dropped", n).Msg("hello queue full, dropped")
		}
	}
}

func (l *Listener) authorised(a netip.Addr) bool {
	for _, p := range l.cfg.Subnets() {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// markSeen records k and reports whether it was not seen within the window.
func (l *Listener) markSeen(k seenKey, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.seen[k]; ok && now.Sub(t) < l.cfg.DedupWindow {
		return false
	}
	if len(l.seen) < maxSeen {
		l.seen[k] = now
	}
	return true
}

func (l *Listener) forget(k seenKey) {
	l.mu.Lock()
	delete(l.seen, k)
	l.mu.Unlock()
}

func (l *Listener) prune(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, t := range l.seen {
		if now.Sub(t) >= l.cfg.DedupWindow {
			delete(l.seen, k)
		}
	}
}

// batch collects queued Hellos into ReportHello calls of up to BatchSize,
// each sent at most BatchWait after its first Hello arrived. Sends outlive
// ctx (each bounded by ReportTimeout) so the Hellos queued at shutdown still
// reach the server; the batcher ends when the queue closes.
func (l *Listener) batch(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	var pending []Report
	wait := time.NewTimer(time.Hour)
	wait.Stop()
	defer wait.Stop()
	pruneTick := time.NewTicker(l.cfg.DedupWindow)
	defer pruneTick.Stop()
	for {
		select {
		case r, ok := <-l.queue:
			if !ok {
				l.send(ctx, pending)
				return
			}
			pending = append(pending, r)
			if len(pending) == 1 {
				wait.Reset(l.cfg.BatchWait)
			}
			if len(pending) >= l.cfg.BatchSize {
				wait.Stop()
				l.send(ctx, pending)
				pending = nil
			}
		case <-wait.C:
			l.send(ctx, pending)
			pending = nil
		case now := <-pruneTick.C:
			l.prune(now)
		}
	}
}

func (l *Listener) send(ctx context.Context, batch []Report) {
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.ReportTimeout)
	defer cancel()
	if err := l.cfg.Reporter.ReportHello(ctx, batch); err != nil {
		l.c.reportErrors.Add(1)
		l.cfg.Log.Warn().Err(err).Int("hellos", len(batch)).Msg("report hellos failed")
		// The device sends its next Hello within minutes; let it through.
		for _, r := range batch {
			l.forget(seenKey{r.Hello.UUID, r.Addr})
		}
		return
	}
	l.c.batches.Add(1)
	l.c.reported.Add(int64(len(batch)))
}
