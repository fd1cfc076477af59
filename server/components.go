package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"

	"github.com/hibiken/asynq"

	"github.com/amtops/amtops/internal/amt"
	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/directory"
	"github.com/amtops/amtops/internal/pki"
	"github.com/amtops/amtops/internal/pki/builtin"
	"github.com/amtops/amtops/internal/pki/stepca"
	"github.com/amtops/amtops/internal/secrets"
	"github.com/amtops/amtops/server/admin"
	"github.com/amtops/amtops/server/agentca"
	"github.com/amtops/amtops/server/api"
	"github.com/amtops/amtops/server/batch"
	"github.com/amtops/amtops/server/discover"
	"github.com/amtops/amtops/server/dispatch"
	"github.com/amtops/amtops/server/jobs"
	"github.com/amtops/amtops/server/metrics"
	"github.com/amtops/amtops/server/store"
	"github.com/amtops/amtops/server/sweep"
)

// buildCA opens the configured certificate authority. The built-in CA
// keeps its keys sealed in Redis, so every replica shares one CA.
func (s *Server) buildCA(ctx context.Context, sealer *secrets.Sealer) (pki.CA, error) {
	c := s.cfg.CA
	if c.Backend == "step-ca" {
		password, err := config.Secret(c.StepCA.PasswordFile, "")
		if err != nil {
			return nil, fmt.Errorf("server: ca.step_ca.password_file: %w", err)
		}
		ca, err := stepca.New(stepca.Config{URL: c.StepCA.URL, RootFile: c.StepCA.RootFile, Provisioner: c.StepCA.Provisioner,
			CAConfigFile: c.StepCA.CAConfigFile, Password: secrets.Redacted(password), Validity: c.Validity, Log: s.log})
		if err != nil {
			return nil, fmt.Errorf("server: ca.step_ca: %w", err)
		}
		return ca, nil
	}
	crl := c.CRLURL
	if crl == "" {
		// The bound address, not the configured one: ":0" in tests, and
		// config refuses an unspecified host.
		crl = "http://" + s.httpLis.Addr().String() + "/crl"
		s.log.Warn().Str("crl_url", crl).Msg("ca.crl_url not set: certificates name this server's own address; set it when running replicas")
	}
	ca, err := builtin.New(ctx, builtin.Sealed(s.store.Blobs("ca"), sealer), builtin.Config{
		Validity: c.Validity, CRLURL: crl, Log: s.log})
	if err != nil {
		return nil, fmt.Errorf("server: built-in ca: %w", err)
	}
	s.crl = ca.Handler()
	return ca, nil
}

// buildDirectory connects Active Directory, or returns nil when none is
// configured: S4–S6 are then skipped and Kerberos stays off.
func (s *Server) buildDirectory() (*directory.Client, error) {
	d := s.cfg.Directory
	if d.URL == "" {
		s.log.Warn().Msg("no directory configured: AMT accounts, SPNs and Kerberos are skipped")
		return nil, nil
	}
	password, err := config.Secret(d.PasswordFile, "AMTOPS_DIRECTORY_PASSWORD")
	if err != nil {
		return nil, fmt.Errorf("server: directory.password_file: %w", err)
	}
	dc, err := directory.New(directory.Config{URLs: []string{d.URL}, StartTLS: d.StartTLS, CAFile: d.CAFile, BindDN: d.BindDN,
		Password: secrets.Redacted(password), BaseDN: d.BaseDN, AccountOU: d.AccountOU, AccountSuffix: d.AccountSuffix,
		Realm: d.Realm, AddToGroups: d.AddToGroups, Groups8021X: d.Groups8021X, GroupsWiFi: d.GroupsWiFi,
		Timeout: d.Timeout, PoolSize: d.PoolSize}, s.log)
	if err != nil {
		return nil, fmt.Errorf("server: directory: %w", err)
	}
	return dc, nil
}

// buildPhase1 assembles the job service, the phase-1 worker and the enqueuer.
func (s *Server) buildPhase1(ctx context.Context, ca pki.CA, dc *directory.Client, q *store.LeaseQueue) error {
	provisioning, err := config.Secret(s.cfg.AMT.ProvisioningPasswordFile, "AMTOPS_PROVISIONING_PASSWORD")
	if err != nil {
		return fmt.Errorf("server: amt.provisioning_password_file: %w", err)
	}
	if provisioning == "" {
		s.log.Warn().Msg("no AMT provisioning password (amt.provisioning_password_file or $AMTOPS_PROVISIONING_PASSWORD): devices set up by hand in the MEBx cannot be reached")
	}
	site := jobs.Site{
		ProvisioningUser: s.cfg.AMT.ProvisioningUser, ProvisioningPassword: provisioning,
		KeyOnDevice: s.cfg.AMT.KeyOnDevice, MutualTLS: s.cfg.AMT.MutualTLS, Settings: s.cfg.AMT.Settings,
		Kerberos: s.cfg.AMT.Kerberos, Networks: s.cfg.Networks, AddToGroups: s.cfg.Directory.AddToGroups,
		JobDeadline: s.cfg.Phase2.JobDeadline,
		NewPassword: func() (string, error) { return amt.GeneratePassword(rand.Reader) },
	}
	if site.Activation, err = jobs.LoadActivation(ctx, s.store, s.cfg.AMT.RemoteConfig, s.log); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	var dir jobs.Directory
	if dc != nil {
		dir = dc
	}
	host, _ := os.Hostname()
	p2 := s.cfg.Phase2
	s.jobs = jobs.New(s.store, q, ca, dir, jobs.Config{Site: site, Actor: "server/" + host,
		LeaseTTL: p2.LeaseTTL, MaxAttempts: p2.MaxAttempts, RetryDelay: p2.RetryDelay, Observer: s.work}, s.log)
	s.asynq = asynq.NewClientFromRedisClient(s.rdb)
	s.enqueuer = jobs.NewEnqueuer(s.asynq, s.cfg.Phase1.MaxRetry, s.cfg.Phase1.Timeout)
	s.batches = batch.New(s.store, s.enqueuer, s.log)
	s.batches.Observe(s.work.BatchStarted)
	s.batches.WarnUnserved(s.cfg.Phase2.LeaseTTL)
	sw, err := sweep.New(s.store, s.batches, s.asynq, sweep.Config{Interval: s.cfg.Sweep.Interval}, s.log)
	if err != nil {
		return fmt.Errorf("server: sweep: %w", err)
	}
	s.sweeper = sw
	s.worker = jobs.NewWorker(s.rdb, jobs.WorkerConfig{Concurrency: s.cfg.Phase1.Concurrency,
		Extra: map[string]asynq.Handler{sweep.TaskType: asynq.HandlerFunc(sw.Handle)}}, s.jobs, s.jobs, s.log)
	return nil
}

// buildGRPC opens the agent CA and builds the gRPC server: AgentService
// with its long-poll dispatcher and lease reaper, and AdminService. The gRPC
// certificate is made fresh at each start from the agent CA, so agents
// and administrators trust that one CA (GET /grpc-ca.pem).
func (s *Server) buildGRPC(ctx context.Context) error {
	ca, err := agentca.Open(ctx, s.store, agentca.Options{})
	if err != nil {
		return fmt.Errorf("server: agent ca: %w", err)
	}
	cert, err := ca.ServerCertificate(s.cfg.GRPC.Listen, s.cfg.GRPC.Names)
	if err != nil {
		return fmt.Errorf("server: grpc certificate: %w", err)
	}
	p2 := s.cfg.Phase2
	s.agentCA = ca
	s.dispatcher = dispatch.New(s.queue, s.queue, dispatch.Options{MaxWait: p2.LongPoll + 5*time.Second, Log: s.log})
	s.agents = api.NewAgentService(s.store, s.queue, s.dispatcher, ca, s.jobs, discover.NewRecorder(s.store, s.log, nil), api.Options{LeaseTTL: p2.LeaseTTL,
		DefaultWait: p2.LongPoll, Log: s.log,
		Hellos: metrics.Hellos{Recorder: discover.NewHelloRecorder(s.store, s.batches, s.jobs, s.log, nil), Work: s.work}})
	s.reaper = dispatch.NewReaper(s.queue, dispatch.ReaperOptions{Interval: p2.ReapEvery, OnDead: s.jobs.OnDead, Log: s.log})
	s.unserved = dispatch.NewUnserved(s.queue, dispatch.UnservedOptions{Deadline: p2.UnservedDeadline, LiveWithin: p2.LeaseTTL,
		Agents: s.store.ListAgents, OnFailed: s.jobs.FailUnserved, Log: s.log})
	s.admin = admin.New(s.store, s.batches, s.sweeper, admin.Options{Log: s.log,
		Discoverer: discover.NewRequester(s.store, s.queue, nil), CA: ca, Readiness: s.jobs,
		Forgetter: s.jobs, Claimer: s.batches,
		// Agents heartbeat every third of the lease TTL: one silent for a
		// whole TTL has lost its leases, and is offline.
		AgentOnlineWithin: p2.LeaseTTL})
	// The metrics interceptors first, so refused calls are counted too.
	opts := append([]grpc.ServerOption{grpc.ChainUnaryInterceptor(s.grpcMet.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(s.grpcMet.StreamServerInterceptor())}, api.ServerOptions(s.agents, cert)...)
	opts = append(opts, grpc.ChainUnaryInterceptor(s.admin.UnaryInterceptor()), grpc.ChainStreamInterceptor(s.admin.StreamInterceptor()))
	s.grpc = grpc.NewServer(opts...)
	api.Register(s.grpc, s.agents)
	admin.Register(s.grpc, s.admin)
	path, created, err := admin.Bootstrap(ctx, s.store, s.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if created {
		s.log.Warn().Str("path", path).Msg("created the first administrator token (operate role); amtopsctl reads it with --token-file")
	}
	// Next to the data, for agents and amtopsctl on this machine.
	if err := os.WriteFile(filepath.Join(s.cfg.DataDir, "grpc-ca.pem"), ca.CertPEM(), 0o644); err != nil {
		return fmt.Errorf("server: write grpc-ca.pem: %w", err)
	}
	sum := sha256.Sum256(ca.Certificate().Raw)
	s.log.Info().Str("sha256", hex.EncodeToString(sum[:])).Msg("agent and admin CA; verify this fingerprint when you fetch /grpc-ca.pem")
	return nil
}

func (s *Server) grpcCA(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(s.agentCA.CertPEM())
}
