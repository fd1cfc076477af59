// Package apitest runs a real AgentService for tests: a private Redis,
// the store, the lease queue with its dispatcher and reaper, the agent CA
// and a gRPC server with mTLS on a loopback port.
package apitest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/secrets"
	"github.com/amtops/amtops/internal/testpeers"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/agentca"
	"github.com/amtops/amtops/server/api"
	"github.com/amtops/amtops/server/batch"
	"github.com/amtops/amtops/server/discover"
	"github.com/amtops/amtops/server/dispatch"
	"github.com/amtops/amtops/server/jobs"
	"github.com/amtops/amtops/server/store"
)

// Server is a running AgentService.
type Server struct {
	Store   *store.Store
	Queue   *store.LeaseQueue
	CA      *agentca.CA
	Svc     *api.AgentService
	Jobs    *jobs.Service
	Batches *batch.Service
	Asynq   *asynq.Client
	Addr    string
}

// Options tunes Start.
type Options struct {
	API api.Options
	// Jobs tunes the job service; its LeaseTTL defaults to API's.
	Jobs jobs.Config
	// DeviceCA signs device-made keys (SignDeviceCSR); nil refuses.
	DeviceCA jobs.CA
	Queue    store.QueueOptions
	// Reap, when positive, runs the reaper at this interval.
	Reap time.Duration
	CA   agentca.Options
}

// Start runs a server until t ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: testpeers.Redis(t)})
	t.Cleanup(func() { _ = rdb.Close() })
	sealer, err := secrets.New(bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(rdb, sealer, store.Options{})
	q := store.NewLeaseQueue(st, o.Queue)
	ctx, cancel := context.WithCancel(context.Background())
	ca, err := agentca.Open(ctx, st, o.CA)
	if err != nil {
		t.Fatal(err)
	}
	d := dispatch.New(q, q, dispatch.Options{Recheck: 200 * time.Millisecond, Margin: 300 * time.Millisecond})
	if o.Jobs.LeaseTTL == 0 {
		o.Jobs.LeaseTTL = o.API.LeaseTTL
	}
	j := jobs.New(st, q, o.DeviceCA, nil, o.Jobs, zerolog.Nop())
	// Hellos start real batches: phase-1 tasks land in asynq on the same
	// Redis (no worker runs them here).
	ac := asynq.NewClientFromRedisClient(rdb)
	t.Cleanup(func() { _ = ac.Close() })
	batches := batch.New(st, jobs.NewEnqueuer(ac, 3, time.Minute), zerolog.Nop())
	if o.API.Hellos == nil {
		o.API.Hellos = discover.NewHelloRecorder(st, batches, j, zerolog.Nop(), nil)
	}
	svc := api.NewAgentService(st, q, d, ca, j, discover.NewRecorder(st, zerolog.Nop(), nil), o.API)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ServerCertificate(lis.Addr().String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(api.ServerOptions(svc, cert)...)
	api.Register(gs, svc)
	var g errgroup.Group
	g.Go(func() error { return gs.Serve(lis) })
	g.Go(func() error { _ = d.Run(ctx); return nil })
	if o.Reap > 0 {
		r := dispatch.NewReaper(q, dispatch.ReaperOptions{Interval: o.Reap, OnDead: j.OnDead, Log: zerolog.Nop()})
		g.Go(func() error { _ = r.Run(ctx); return nil })
	}
	t.Cleanup(func() {
		cancel()
		gs.Stop()
		_ = g.Wait()
	})
	select {
	case <-d.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("dispatcher never subscribed")
	}
	return &Server{Store: st, Queue: q, CA: ca, Svc: svc, Jobs: j, Batches: batches, Asynq: ac, Addr: lis.Addr().String()}
}

// Token makes a one-time enrollment token for subnets.
func (s *Server) Token(t testing.TB, subnets ...string) string {
	t.Helper()
	e := domain.Enrollment{}
	for _, sn := range subnets {
		e.Subnets = append(e.Subnets, netip.MustParsePrefix(sn))
	}
	tok, err := s.Store.CreateEnrollmentToken(context.Background(), e, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Job creates a device on subnet, a one-job batch for it and the job's
// phase-2 payload in the queue, and returns the job ID.
func (s *Server) Job(t testing.TB, batchID, subnet, ip string, kind domain.JobKind) string {
	t.Helper()
	ctx := context.Background()
	p := netip.MustParsePrefix(subnet)
	devID := "dev-" + bytesToName(ip)
	d := domain.Device{ID: devID, HostName: "h-" + bytesToName(ip), Domain: "example.test", IP: netip.MustParseAddr(ip),
		Subnet: p, Status: domain.StatusNotProvisioned}
	if err := s.Store.PutDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	jobID := domain.JobID(batchID, devID)
	if _, err := s.Store.CreateBatch(ctx, domain.Batch{ID: batchID, Kind: kind, Origin: "admin"},
		[]domain.Job{{ID: jobID, DeviceID: devID, Kind: kind}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Store.MoveJob(ctx, batchID, jobID, domain.JobPhase1); err != nil {
		t.Fatal(err)
	}
	if err := s.Store.MoveJob(ctx, batchID, jobID, domain.JobPhase2); err != nil {
		t.Fatal(err)
	}
	payload, err := proto.Marshal(&pb.Phase2Job{BatchId: batchID, DeviceId: devID, Kind: pb.JobKind_JOB_KIND_PROVISION,
		Target: &pb.Target{Ip: ip, HostName: d.HostName, Domain: d.Domain}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Queue.Enqueue(ctx, p, jobID, payload); err != nil {
		t.Fatal(err)
	}
	return jobID
}

func bytesToName(ip string) string {
	out := make([]byte, 0, len(ip))
	for i := 0; i < len(ip); i++ {
		if c := ip[i]; c >= '0' && c <= '9' {
			out = append(out, c)
		} else {
			out = append(out, '-')
		}
	}
	return string(out)
}

// Key makes a fresh ECDSA key and a CSR for it.
func Key(t testing.TB) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, csr
}

// Dial connects to the server, presenting cert when not nil.
func (s *Server) Dial(t testing.TB, cert *tls.Certificate) pb.AgentServiceClient {
	t.Helper()
	tc := &tls.Config{RootCAs: s.CA.Pool(), ServerName: "127.0.0.1"}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(s.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return pb.NewAgentServiceClient(conn)
}

// Enroll enrolls an agent for subnets and returns a client using its
// certificate, and its ID.
func (s *Server) Enroll(t testing.TB, subnets ...string) (pb.AgentServiceClient, string) {
	t.Helper()
	key, csr := Key(t)
	resp, err := s.Dial(t, nil).Enroll(context.Background(), &pb.EnrollRequest{BootstrapToken: s.Token(t, subnets...), CsrDer: csr})
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	cert := tls.Certificate{Certificate: [][]byte{resp.GetCertificateDer()}, PrivateKey: key}
	return s.Dial(t, &cert), resp.GetAgentId()
}
