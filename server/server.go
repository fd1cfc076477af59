// Package server wires the amtops site server: the Redis store, the
// phase-1 asynq worker, the phase-2 lease queue, the gRPC services for
// agents and administrators, and the HTTP endpoints (CRL, metrics, health).
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/hibiken/asynq"

	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/directory"
	"github.com/amtops/amtops/internal/logging"
	"github.com/amtops/amtops/internal/pki"
	"github.com/amtops/amtops/internal/profiling"
	"github.com/amtops/amtops/internal/secrets"
	"github.com/amtops/amtops/server/admin"
	"github.com/amtops/amtops/server/agentca"
	"github.com/amtops/amtops/server/api"
	"github.com/amtops/amtops/server/batch"
	"github.com/amtops/amtops/server/console"
	"github.com/amtops/amtops/server/dispatch"
	"github.com/amtops/amtops/server/jobs"
	"github.com/amtops/amtops/server/metrics"
	"github.com/amtops/amtops/server/store"
	"github.com/amtops/amtops/server/sweep"
)

// Server is one site-server replica. Several may run against one Redis.
type Server struct {
	cfg     config.Server
	log     zerolog.Logger
	rdb     redis.UniversalClient
	closeDB func()
	store   *store.Store
	metrics *prometheus.Registry
	work    *metrics.Work
	grpcMet *grpcprom.ServerMetrics
	health  *health.Server
	grpc    *grpc.Server
	http    *http.Server
	grpcLis net.Listener
	httpLis net.Listener

	site *siteState // nil with the embedded Redis

	console    *http.Server // nil when configured off
	hub        *console.Hub
	consoleLis net.Listener

	queue    *store.LeaseQueue
	ca       pki.CA
	crl      http.Handler // the built-in CA's /crl and /ca.pem
	dir      *directory.Client
	jobs     *jobs.Service
	worker   *jobs.Worker
	asynq    *asynq.Client
	enqueuer *jobs.Enqueuer
	batches  *batch.Service
	sweeper  *sweep.Sweeper

	agentCA    *agentca.CA
	dispatcher *dispatch.Dispatcher
	reaper     *dispatch.Reaper
	unserved   *dispatch.Unserved
	agents     *api.AgentService
	admin      *admin.Service
}

// New builds a server from cfg: it connects to Redis (or starts the
// embedded one), loads the site key and binds its listeners, so that a
// bad address fails here rather than later.
func New(ctx context.Context, cfg config.Server, log zerolog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, metrics: prometheus.NewRegistry()}
	s.work = metrics.NewWork(s.metrics)
	s.grpcMet = grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	s.metrics.MustRegister(s.grpcMet)
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("server: data_dir: %w", err)
	}
	var err error
	if s.grpcLis, err = net.Listen("tcp", cfg.GRPC.Listen); err != nil {
		return nil, fmt.Errorf("server: grpc.listen: %w", err)
	}
	if s.httpLis, err = net.Listen("tcp", cfg.HTTP.Listen); err != nil {
		return nil, fmt.Errorf("server: http.listen: %w", err)
	}
	if err := s.listenConsole(); err != nil {
		return nil, err
	}
	sealer, err := s.siteKey()
	if err != nil {
		return nil, err
	}
	if err := s.openRedis(ctx); err != nil {
		return nil, err
	}
	s.store = store.New(s.rdb, sealer, store.Options{Prefix: cfg.Redis.KeyPrefix})
	// Before anything writes: an empty Redis must not become a new site.
	if err := s.checkSite(ctx); err != nil {
		return nil, err
	}
	s.queue = store.NewLeaseQueue(s.store, store.QueueOptions{MaxAttempts: cfg.Phase2.MaxAttempts})
	if s.ca, err = s.buildCA(ctx, sealer); err != nil {
		return nil, err
	}
	if s.dir, err = s.buildDirectory(); err != nil {
		return nil, err
	}
	if err := s.buildPhase1(ctx, s.ca, s.dir, s.queue); err != nil {
		return nil, err
	}

	if err := s.buildGRPC(ctx); err != nil {
		return nil, err
	}
	if err := s.buildConsole(); err != nil {
		return nil, err
	}

	s.metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		metrics.NewSite(s.store, s.queue, asynq.NewInspectorFromRedisClient(s.rdb), s.cfg.Phase2.LeaseTTL, s.log))
	s.grpcMet.InitializeMetrics(s.grpc)
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", s.healthz)
	if s.crl != nil {
		mux.Handle("GET /crl", s.crl)
		mux.Handle("GET /ca.pem", s.crl)
	}
	mux.HandleFunc("GET /grpc-ca.pem", s.grpcCA)
	if s.cfg.HTTP.Pprof {
		profiling.Register(mux)
	}
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: logging.Std(s.log, "http server")}

	ok = true
	return s, nil
}

// siteKey loads the sealing key; with none configured it creates one in
// data_dir so that a first start needs no preparation.
func (s *Server) siteKey() (*secrets.Sealer, error) {
	path := s.cfg.SiteKeyFile
	if path == "" && os.Getenv(secrets.KeyEnv) == "" {
		path = filepath.Join(s.cfg.DataDir, "site.key")
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			if err := secrets.WriteNewKey(path); err != nil {
				return nil, fmt.Errorf("server: %w", err)
			}
			s.log.Warn().Str("path", path).Msg("created a new site key; back it up: sealed secrets cannot be read without it")
		}
	}
	sealer, err := secrets.LoadKey(path)
	if err != nil {
		return nil, fmt.Errorf("server: site_key_file: %w", err)
	}
	return sealer, nil
}

func (s *Server) openRedis(ctx context.Context) error {
	r := s.cfg.Redis
	if len(r.Addresses()) == 0 {
		rdb, closeFn, err := store.Embedded(ctx, s.log)
		if err != nil {
			return fmt.Errorf("server: embedded redis: %w", err)
		}
		s.rdb, s.closeDB = rdb, closeFn
		return nil
	}
	password, err := config.Secret(r.PasswordFile, "AMTOPS_REDIS_PASSWORD")
	if err != nil {
		return fmt.Errorf("server: redis.password_file: %w", err)
	}
	tlsCfg, err := redisTLS(r.TLS)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	rdb, err := store.Dial(ctx, store.DialOptions{Addrs: r.Addresses(), Cluster: r.Cluster, Username: r.Username,
		Password: password, DB: r.DB, TLS: tlsCfg, ClientName: "amtops-server-" + host, Log: s.log})
	if err != nil {
		return fmt.Errorf("server: redis: %w", err)
	}
	s.rdb, s.closeDB = rdb, func() { _ = rdb.Close() }
	return nil
}

// redisTLS builds the TLS configuration for Redis; nil when off.
func redisTLS(c config.RedisTLS) (*tls.Config, error) {
	if !c.Enabled {
		return nil, nil
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if c.CAFile != "" {
		b, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("server: redis.tls.ca_file: %w", err)
		}
		t.RootCAs = x509.NewCertPool()
		if !t.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("server: redis.tls.ca_file %s: no PEM certificate in it", c.CAFile)
		}
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("server: redis.tls.cert_file: %w", err)
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return t, nil
}

// GRPCAddr is the bound gRPC address (useful when configured with port 0).
func (s *Server) GRPCAddr() string { return s.grpcLis.Addr().String() }

// HTTPAddr is the bound HTTP address.
func (s *Server) HTTPAddr() string { return s.httpLis.Addr().String() }

// Run serves until ctx is done, then stops every part gracefully.
func (s *Server) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := s.grpc.Serve(s.grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("server: grpc: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := s.http.Serve(s.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("server: http: %w", err)
		}
		return nil
	})
	g.Go(s.serveConsole)
	if s.hub != nil {
		// The hub ends with gctx, and its event streams with it, so that
		// the console's Shutdown does not wait on them.
		g.Go(func() error { return s.hub.Run(gctx) })
	}
	g.Go(func() error { return s.worker.Run(gctx) })
	g.Go(func() error { return s.dispatcher.Run(gctx) })
	g.Go(func() error { return s.sweeper.Run(gctx) })
	g.Go(func() error { return s.reaper.Run(gctx) })
	g.Go(func() error { return s.unserved.Run(gctx) })
	g.Go(func() error { return s.watchSite(gctx) })
	g.Go(func() error {
		// Batches a crash left half-queued; a failure here is not fatal.
		if err := s.batches.Recover(gctx); err != nil && gctx.Err() == nil {
			s.log.Error().Err(err).Msg("batch recovery failed")
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		s.health.Shutdown()
		stopped := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(10 * time.Second):
			s.grpc.Stop()
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if s.console != nil && s.console.Shutdown(sctx) != nil {
			_ = s.console.Close()
		}
		return s.http.Shutdown(sctx)
	})
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.log.Info().Str("grpc", s.GRPCAddr()).Str("http", s.HTTPAddr()).Str("console", s.ConsoleAddr()).Bool("embedded_redis", len(s.cfg.Redis.Addresses()) == 0).Msg("site server running")
	err := g.Wait()
	s.log.Info().Msg("site server stopped")
	return err
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if err := s.store.Ping(r.Context()); err != nil {
		http.Error(w, "redis unavailable", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// Close releases what New acquired; Run's caller calls it after Run.
func (s *Server) Close() {
	for _, l := range []net.Listener{s.grpcLis, s.httpLis, s.consoleLis} {
		if l != nil {
			_ = l.Close()
		}
	}
	if s.asynq != nil {
		_ = s.asynq.Close()
	}
	if s.dir != nil {
		_ = s.dir.Close()
	}
	if s.closeDB != nil {
		s.closeDB()
	}
}
