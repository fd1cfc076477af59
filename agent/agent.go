// Package agent is the per-subnet agent runtime (C4, C6): it enrolls with
// the site server once, keeps its client certificate renewed, long-polls
// phase-2 jobs, runs up to Concurrency of them at once through the phase-2
// executor (discover jobs through the discovery sweeper), heartbeats their leases in one batched call, reports progress
// and completes them; it sweeps its subnets every Discovery.Interval
// (S21); on shutdown it stops leasing, lets running jobs end
// within a grace period and hands the rest back.
package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/amtops/amtops/agent/hellolisten"
	agentmetrics "github.com/amtops/amtops/agent/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/amtops/amtops/agent/discovery"
	"github.com/amtops/amtops/agent/phase2"
	"github.com/amtops/amtops/internal/amt"
	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/failure"
	"github.com/amtops/amtops/internal/profiling"
	"github.com/amtops/amtops/internal/version"
	"github.com/amtops/amtops/internal/wire"
	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// Config is the agent's configuration.
type Config = config.Agent

// Executor runs one phase-2 job (phase2.Executor).
type Executor interface {
	Run(ctx context.Context, job *pb.Phase2Job, rep phase2.Reporter) phase2.Result
}

var (
	errLeaseLost = errors.New("lease lost")
	// errLeaseExpired is the lease fence's errLeaseLost: the server may
	// still hold the lease (a lease past its deadline but not yet reaped
	// can still be extended), unlike one it leased again or called lost.
	errLeaseExpired = fmt.Errorf("%w: it ran out with no heartbeat extending it", errLeaseLost)
	errCancelled    = errors.New("batch cancelled")
)

// Option changes an Agent built by New.
type Option func(*Agent)

// WithExecutor replaces the phase-2 executor (tests).
func WithExecutor(e Executor) Option { return func(a *Agent) { a.exec = e } }

// WithBootstrapToken gives the enrollment token directly instead of
// bootstrap_token_file or $AMTOPS_AGENT_BOOTSTRAP_TOKEN.
func WithBootstrapToken(tok string) Option { return func(a *Agent) { a.token = tok } }

// WithBackoff sets the retry backoff after failed calls; default 250ms to 30s.
func WithBackoff(lo, hi time.Duration) Option {
	return func(a *Agent) { a.backoffMin, a.backoffMax = lo, hi }
}

// WithShutdownGrace is how long running jobs may go on after Run's
// context ends; default 30s.
func WithShutdownGrace(d time.Duration) Option { return func(a *Agent) { a.grace = d } }

// WithDialOptions adds options to the agent's connection to the server
// (interceptors, keepalive).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(a *Agent) { a.dialOpts = append(a.dialOpts, opts...) }
}

// Agent is one running agent.
type Agent struct {
	cfg        Config
	log        zerolog.Logger
	exec       Executor
	sweeper    *discovery.Sweeper
	token      string
	backoffMin time.Duration
	backoffMax time.Duration
	grace      time.Duration
	roots      *x509.CertPool
	serverName string
	dialOpts   []grpc.DialOption

	mu       sync.Mutex
	cert     *tls.Certificate
	agentID  string
	subnets  []netip.Prefix // authorised, as last told by the server
	ttl      time.Duration
	ttlSet   chan struct{} // a shorter ttl: re-arm the heartbeat timer
	held     map[string]*heldJob
	inflight int
	freed    chan struct{}
	client   pb.AgentServiceClient
	// helloAddr is the provisioning port's bound address.
	helloAddr  string
	helloStats func() hellolisten.Stats
	// metricsAddr is where /metrics is served.
	metricsAddr string

	registry *prometheus.Registry
	metrics  *agentmetrics.Metrics
}

// heldJob is one attempt at a leased job: held maps a job ID to its
// latest attempt only.
type heldJob struct {
	ref    *pb.LeaseRef
	ctx    context.Context // the attempt's; its cause says why it stopped
	cancel context.CancelCauseFunc
	rep    *reporter
	// expiry stops the attempt when its lease runs out by the agent's own
	// clock (leaseFence), reset by every heartbeat that extends it.
	expiry *time.Timer
}

// leaseFence is how long before the server's view of a lease's end an
// attempt stops by the agent's own monotonic clock, which runs on while
// the process is frozen: an agent resumed past the TTL stops its stale
// attempts at once instead of working the device until a heartbeat tells
// it, while the server leases the job again. A fifth of the TTL covers
// the round trip and a late timer; heartbeats come every third.
func leaseFence(ttl time.Duration) time.Duration { return ttl - ttl/5 }

// New checks cfg and loads the server CA; it makes no network call.
func New(cfg Config, log zerolog.Logger, opts ...Option) (*Agent, error) {
	if cfg.ServerCAFile == "" {
		return nil, fmt.Errorf("agent: server_ca_file: required")
	}
	pemCA, err := os.ReadFile(cfg.ServerCAFile)
	if err != nil {
		return nil, fmt.Errorf("agent: server_ca_file: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemCA) {
		return nil, fmt.Errorf("agent: server_ca_file %s: no PEM certificate", cfg.ServerCAFile)
	}
	if cfg.StateDir == "" {
		return nil, fmt.Errorf("agent: state_dir: required")
	}
	if cfg.Concurrency <= 0 {
		return nil, fmt.Errorf("agent: concurrency %d: must be positive", cfg.Concurrency)
	}
	if cfg.LongPoll <= 0 {
		cfg.LongPoll = 25 * time.Second
	}
	if cfg.DeviceDeadline <= 0 {
		cfg.DeviceDeadline = 10 * time.Minute
	}
	name := cfg.ServerName
	if name == "" {
		host, _, err := net.SplitHostPort(cfg.Server)
		if err != nil {
			return nil, fmt.Errorf("agent: server %q: %w", cfg.Server, err)
		}
		name = host
	}
	a := &Agent{cfg: cfg, log: log, roots: roots, serverName: name, backoffMin: 250 * time.Millisecond,
		backoffMax: 30 * time.Second, grace: 30 * time.Second, ttl: 30 * time.Second,
		held: map[string]*heldJob{}, freed: make(chan struct{}, 1), ttlSet: make(chan struct{}, 1)}
	for _, o := range opts {
		o(a)
	}
	a.registry = prometheus.NewRegistry()
	a.metrics = agentmetrics.New(a.registry, a.inFlight)
	a.registry.MustRegister(agentmetrics.NewHellos(a.helloCounters), collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if a.sweeper, err = discovery.New(discovery.Config{HTTPPort: cfg.AMT.HTTPPort, TLSPort: cfg.AMT.TLSPort,
		Concurrency: cfg.Discovery.Concurrency, Rate: cfg.Discovery.Rate, DialTimeout: cfg.Discovery.DialTimeout,
		Log: log}); err != nil {
		return nil, fmt.Errorf("agent: discovery: %w", err)
	}
	if a.exec == nil {
		a.exec = phase2.NewExecutor(phase2.Config{HTTPPort: cfg.AMT.HTTPPort, TLSPort: cfg.AMT.TLSPort,
			CallTimeout: cfg.AMT.CallTimeout, CommitWait: cfg.AMT.CommitWait, CommitDeadline: cfg.AMT.CommitDeadline,
			SignCSR: a.signDeviceCSR, ProvisioningSigner: a, MutualTLS: a.mutualTLS, ObserveCall: a.metrics.Call, Log: log})
	}
	return a, nil
}

// ID is the agent's ID once enrolled.
func (a *Agent) ID() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.agentID
}

// Run enrolls if needed and serves jobs until ctx ends, then shuts down
// gracefully.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.enroll(ctx); err != nil {
		return err
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: a.roots, ServerName: a.serverName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			a.mu.Lock()
			defer a.mu.Unlock()
			return a.cert, nil
		}}
	conn, err := grpc.NewClient(a.cfg.Server, append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tc))}, a.dialOpts...)...)
	if err != nil {
		return fmt.Errorf("agent: dial %s: %w", a.cfg.Server, err)
	}
	defer conn.Close()
	a.client = pb.NewAgentServiceClient(conn)

	// Heartbeats and renewal outlive ctx until the jobs are drained.
	bgCtx, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var bg errgroup.Group
	bg.Go(func() error { a.heartbeatLoop(bgCtx); return nil })
	bg.Go(func() error { a.progressLoop(bgCtx); return nil })
	bg.Go(func() error { a.renewLoop(bgCtx); return nil })
	// Sweeps stop with ctx: a half-done sweep is simply redone.
	bg.Go(func() error { a.sweepLoop(ctx); return nil })
	if a.cfg.Hello.Listen != "" {
		// So does the provisioning port: a device sends its Hello again.
		bg.Go(func() error { a.helloLoop(ctx); return nil })
	}
	if a.cfg.Metrics.Listen != "" {
		bg.Go(func() error { a.serveMetrics(bgCtx); return nil })
	}

	jobsCtx, stopJobs := context.WithCancel(context.WithoutCancel(ctx))
	var jobs errgroup.Group
	a.leaseLoop(ctx, jobsCtx, &jobs)

	drained := make(chan struct{})
	go func() { _ = jobs.Wait(); close(drained) }()
	t := time.NewTimer(a.grace)
	select {
	case <-drained:
	case <-t.C:
		a.log.Warn().Msg("shutdown grace over, releasing running jobs")
		stopJobs()
		<-drained
	}
	t.Stop()
	stopJobs()
	stopBG()
	_ = bg.Wait()
	a.log.Info().Msg("agent stopped")
	return nil
}

// backoff sleeps a jittered delay; false when ctx ended.
func (a *Agent) backoff(ctx context.Context, n int) bool {
	d := a.backoffMin << min(n, 16)
	if d > a.backoffMax || d <= 0 {
		d = a.backoffMax
	}
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (a *Agent) leaseLoop(ctx, jobsCtx context.Context, jobs *errgroup.Group) {
	fails := 0
	for ctx.Err() == nil {
		a.mu.Lock()
		free := a.cfg.Concurrency - a.inflight
		a.mu.Unlock()
		if free <= 0 {
			select {
			case <-ctx.Done():
				return
			case <-a.freed:
			}
			continue
		}
		callCtx, cancel := context.WithTimeout(ctx, a.cfg.LongPoll+5*time.Second)
		resp, err := a.client.Lease(callCtx, &pb.LeaseRequest{MaxJobs: int32(min(free, 1000)), Wait: durationpb.New(a.cfg.LongPoll)})
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			a.log.Warn().Err(err).Int("failures", fails+1).Msg("lease failed")
			if !a.backoff(ctx, fails) {
				return
			}
			fails++
			continue
		}
		fails = 0
		a.mu.Lock()
		if ttl := resp.GetLeaseTtl().AsDuration(); ttl > 0 && ttl != a.ttl {
			if ttl < a.ttl {
				select {
				case a.ttlSet <- struct{}{}:
				default:
				}
			}
			a.ttl = ttl
		}
		a.inflight += len(resp.GetJobs())
		a.mu.Unlock()
		for _, j := range resp.GetJobs() {
			h := a.hold(jobsCtx, j)
			jobs.Go(func() error { a.runJob(jobsCtx, j, h); return nil })
		}
	}
}

// hold records a newly leased job for heartbeats, in lease order. The
// server leases a job again only once the earlier lease is gone: an
// attempt of this agent still holding it is stale (the agent was frozen
// or cut off past the TTL) and stops now, before it works the device
// against the new attempt.
func (a *Agent) hold(jobsCtx context.Context, job *pb.Phase2Job) *heldJob {
	ref := job.GetLease()
	ctx, cancel := context.WithCancelCause(jobsCtx)
	h := &heldJob{ref: ref, ctx: ctx, cancel: cancel, rep: &reporter{deviceID: job.GetDeviceId(), jobID: ref.GetJobId()}}
	a.mu.Lock()
	h.expiry = time.AfterFunc(leaseFence(a.ttl), func() { h.expire(a.log) })
	old := a.held[ref.GetJobId()]
	a.held[ref.GetJobId()] = h
	a.mu.Unlock()
	if old != nil {
		a.log.Warn().Str("job", ref.GetJobId()).Msg("job leased again: stale attempt stopped")
		old.cancel(errLeaseLost)
	}
	return h
}

// expire stops an attempt whose lease ran out without a heartbeat
// extending it (the server unreachable, or the agent frozen).
func (h *heldJob) expire(log zerolog.Logger) {
	if h.ctx.Err() == nil {
		log.Warn().Str("job", h.ref.GetJobId()).Msg("lease ran out with no heartbeat extending it: attempt stopped")
		h.cancel(errLeaseExpired)
	}
}

func (a *Agent) runJob(jobsCtx context.Context, job *pb.Phase2Job, h *heldJob) {
	ref, rep, cctx := h.ref, h.rep, h.ctx
	log := a.log.With().Str("job", ref.GetJobId()).Str("device", job.GetDeviceId()).Logger()
	discover := job.GetKind() == pb.JobKind_JOB_KIND_DISCOVER
	ctx, cancelT := context.WithTimeout(cctx, a.cfg.DeviceDeadline)
	if discover {
		// A sweep's length follows from its size and rate (a /16 at 200
		// connections/s takes about 11 minutes) and every probe is bounded
		// by dial_timeout: the per-device deadline does not apply.
		cancelT()
		ctx, cancelT = context.WithCancel(cctx)
	}
	defer func() {
		cancelT()
		h.expiry.Stop()
		h.cancel(nil)
		a.mu.Lock()
		// A stale attempt ending late must not drop the newer one.
		if a.held[ref.GetJobId()] == h {
			delete(a.held, ref.GetJobId())
		}
		a.inflight--
		a.mu.Unlock()
		select {
		case a.freed <- struct{}{}:
		default:
		}
	}()

	var res phase2.Result
	began := time.Now()
	if discover {
		res = a.runDiscover(ctx, job)
	} else {
		res = a.exec.Run(context.WithValue(ctx, leaseKey{}, ref), job, a.metrics.Steps(rep))
	}
	result := domain.ResultSucceeded
	switch {
	case res.Err != nil && res.Permanent:
		result = domain.ResultFailedPermanent
	case res.Err != nil:
		result = domain.ResultFailed
	}
	a.metrics.Job(string(wire.KindFrom(job.GetKind())), string(result), time.Since(began))
	req := &pb.CompleteRequest{Lease: ref, Result: wire.Result(result), ErrorStep: res.ErrorStep, Facts: res.Facts, Warnings: res.Warnings}
	if res.Err != nil {
		// A line for people first ("unreachable: 16993 refused"), the
		// chain after it.
		req.Error = failure.Text(res.Err)
	}
	switch cause := context.Cause(cctx); {
	case errors.Is(cause, errLeaseExpired) && activatedDevice(job, res):
		// Only this attempt knows the device is activated: abandoned, the
		// reaper failed the job on its last attempt with the site's record
		// in state 0, the passwords the device now has only pending and
		// the certificate it serves revoked (make chaos, simulator faults:
		// 5 of 1,000 devices). The server takes the result while it still
		// holds the lease, and refuses it as stale otherwise.
		log.Warn().Msg("lease ran out after the activation's commit: reporting the device activated")
	case errors.Is(cause, errLeaseLost):
		log.Warn().Msg("lease lost, job abandoned")
		return
	case errors.Is(cause, errCancelled):
		req.Result, req.Error = wire.Result(domain.ResultCancelled), "batch cancelled"
	case jobsCtx.Err() != nil:
		req = &pb.CompleteRequest{Lease: ref, Result: wire.Result(domain.ResultReleased), Error: "agent shutting down"}
	}
	// The result is worth waiting for: given up, a finished device is
	// done again. So Complete is retried through a server restart or a
	// Redis outage, for as long as the lease lives (the job stays held,
	// so heartbeats keep it), at most completeWindow; once the agent
	// shuts down, for 15 s more.
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(jobsCtx), completeWindow)
	defer fcancel()
	stop := context.AfterFunc(jobsCtx, func() { time.AfterFunc(15*time.Second, fcancel) })
	defer stop()
	a.flush(fctx, ref, rep)
	for n := 0; ; n++ {
		resp, err := a.client.Complete(fctx, req)
		if err == nil {
			log.Info().Str("result", string(wire.ResultFrom(req.Result))).Str("step", req.ErrorStep).Bool("already", resp.GetAlreadyCompleted()).Msg("job completed")
			return
		}
		if errors.Is(context.Cause(cctx), errLeaseLost) {
			log.Warn().Err(err).Msg("lease lost before the result was recorded")
			return
		}
		if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded && c != codes.Internal || !a.backoff(fctx, n) {
			log.Warn().Err(err).Msg("complete failed")
			return
		}
	}
}

// activatedDevice: the attempt's facts say its activation committed
// (phase2 records state 2 once the commit is answered or proven).
func activatedDevice(job *pb.Phase2Job, res phase2.Result) bool {
	return job.GetActivation() != nil && res.Facts.GetProvisioningState() == amt.ProvisioningStatePost
}

// completeWindow bounds how long a result is retried while the server
// cannot take it.
const completeWindow = 10 * time.Minute

// leaseKey carries a running job's lease to signDeviceCSR: the executor
// is shared by all jobs and its SignCSR hook gets only the context.
type leaseKey struct{}

// signDeviceCSR is the executor's SignCSR (key_on_device): the server
// signs the device's CSR for the job whose lease ctx carries.
func (a *Agent) signDeviceCSR(ctx context.Context, csr []byte) ([]byte, [][]byte, string, error) {
	ref, _ := ctx.Value(leaseKey{}).(*pb.LeaseRef)
	if ref == nil || a.client == nil {
		return nil, nil, "", errors.New("agent: sign device csr: no job lease in context")
	}
	resp, err := a.client.SignDeviceCSR(ctx, &pb.SignDeviceCSRRequest{Lease: ref, CsrDer: csr})
	if err != nil {
		return nil, nil, "", fmt.Errorf("agent: sign device csr: %w", err)
	}
	return resp.GetCertificateDer(), resp.GetChainDer(), resp.GetSerial(), nil
}

// flush sends rep's buffered events, one call per job at a time so they
// arrive in order. The call is bounded by a heartbeat interval (at most
// 5 s): progress is worth less than the lease and the completion.
func (a *Agent) flush(ctx context.Context, ref *pb.LeaseRef, rep *reporter) {
	rep.sending.Lock()
	defer rep.sending.Unlock()
	evs := rep.take()
	if len(evs) == 0 {
		return
	}
	a.mu.Lock()
	limit := min(a.ttl/3, 5*time.Second)
	a.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	if _, err := a.client.ReportProgress(cctx, &pb.ReportProgressRequest{Lease: ref, Events: evs}); err != nil {
		a.log.Warn().Str("job", ref.GetJobId()).Int("events", len(evs)).Err(err).Msg("report progress failed")
	}
}

// progressLoop flushes every held job's events, concurrently, every third
// of the lease TTL. It is apart from the heartbeat so that a slow or hung
// progress call never delays lease extension.
func (a *Agent) progressLoop(ctx context.Context) {
	for {
		a.mu.Lock()
		every := a.ttl / 3
		held := make([]*heldJob, 0, len(a.held))
		for _, h := range a.held {
			held = append(held, h)
		}
		a.mu.Unlock()
		var wg sync.WaitGroup
		for _, h := range held {
			wg.Go(func() { a.flush(ctx, h.ref, h.rep) })
		}
		wg.Wait()
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// heartbeatLoop extends the held leases every third of the lease TTL. The
// TTL starts at a default and is learnt from Lease responses: a shorter
// one re-arms the timer at once, or the first leases would expire before
// their first heartbeat.
func (a *Agent) heartbeatLoop(ctx context.Context) {
	// The first at once: the server learns the version and address
	// without waiting a third of a TTL.
	last := time.Time{}
	for {
		a.mu.Lock()
		every := a.ttl / 3
		a.mu.Unlock()
		t := time.NewTimer(time.Until(last.Add(every)))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-a.ttlSet:
			t.Stop()
			continue
		case <-t.C:
		}
		last = time.Now()
		a.heartbeat(ctx)
	}
}

func (a *Agent) heartbeat(ctx context.Context) {
	a.mu.Lock()
	held := make([]*heldJob, 0, len(a.held))
	for _, h := range a.held {
		held = append(held, h)
	}
	inflight, ttl := a.inflight, a.ttl
	a.mu.Unlock()
	sent := time.Now()
	req := &pb.HeartbeatRequest{InFlight: int32(inflight), Capacity: int32(a.cfg.Concurrency), AgentVersion: version.String()}
	byID := map[string]*heldJob{}
	for _, h := range held {
		req.Leases = append(req.Leases, h.ref)
		byID[h.ref.GetJobId()] = h
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	resp, err := a.client.Heartbeat(cctx, req)
	if err != nil {
		a.log.Warn().Err(err).Int("leases", len(req.Leases)).Msg("heartbeat failed")
		return
	}
	if err := a.refreshSubnets(resp.GetSubnets()); err != nil {
		a.log.Warn().Err(err).Msg("authorised subnets not saved")
	}
	for _, id := range resp.GetLostJobIds() {
		if h := byID[id]; h != nil {
			h.cancel(errLeaseLost)
			delete(byID, id)
		}
	}
	// The server extended the others by the TTL from when it read the
	// request, which is no earlier than sent.
	for _, h := range byID {
		h.expiry.Reset(time.Until(sent.Add(leaseFence(ttl))))
	}
	for _, id := range resp.GetCancelledJobIds() {
		if h := byID[id]; h != nil {
			h.cancel(errCancelled)
		}
	}
}

func (a *Agent) inFlight() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.inflight
}

func (a *Agent) helloCounters() func() hellolisten.Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.helloStats
}

// serveMetrics serves /metrics on metrics.listen until ctx ends.
func (a *Agent) serveMetrics(ctx context.Context) {
	ln, err := net.Listen("tcp", a.cfg.Metrics.Listen)
	if err != nil {
		a.log.Error().Err(err).Str("addr", a.cfg.Metrics.Listen).Msg("metrics not served")
		return
	}
	a.mu.Lock()
	a.metricsAddr = ln.Addr().String()
	a.mu.Unlock()
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{}))
	if a.cfg.Metrics.Pprof {
		profiling.Register(mux)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: mux}
	stop := context.AfterFunc(ctx, func() { _ = srv.Close() })
	defer stop()
	a.log.Info().Str("addr", ln.Addr().String()).Msg("metrics served")
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		a.log.Error().Err(err).Msg("metrics server stopped")
	}
}

// MetricsAddr is where /metrics is served, once it is.
func (a *Agent) MetricsAddr() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.metricsAddr
}
