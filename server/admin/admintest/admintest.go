// Package admintest runs a real AdminService for tests: a private Redis,
// the store, the real batch service with the phase-1 asynq enqueuer, and
// a gRPC server on a loopback port wired as the site server wires it
// (TLS from the site's agent CA, AgentService and AdminService on one
// port, each with its interceptor), with one operate and one read token.
package admintest

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
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/pki/builtin"
	"github.com/amtops/amtops/internal/pki/pkitest"
	"github.com/amtops/amtops/internal/secrets"
	"github.com/amtops/amtops/internal/testpeers"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/admin"
	"github.com/amtops/amtops/server/agentca"
	"github.com/amtops/amtops/server/api"
	"github.com/amtops/amtops/server/batch"
	"github.com/amtops/amtops/server/discover"
	"github.com/amtops/amtops/server/dispatch"
	"github.com/amtops/amtops/server/jobs"
	"github.com/amtops/amtops/server/store"
)

// Epoch is the store's fixed clock in tests, so that golden output of
// device records is stable.
var Epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// Server is a running AdminService.
type Server struct {
	Store   *store.Store
	Batches *batch.Service
	// DeviceCA is the CA the job service issues and revokes devices'
	// certificates with.
	DeviceCA *builtin.CA
	Svc      *admin.Service
	CA       *agentca.CA
	RDB      redis.UniversalClient
	Addr     string
	// CAFile holds the CA certificate (PEM) the server's TLS chains to.
	CAFile string
	// Operate and Read are tokens of each role.
	Operate, Read string
}

// Options tunes Start.
type Options struct {
	Sweeper admin.Sweeper
	// Batches replaces the real batch service when not nil.
	Batches admin.Batches
	Log     zerolog.Logger
	// NoCA leaves admin.Options.CA nil: no certificate issuance or login.
	NoCA bool
	// Activation is the job service's remote configuration, which
	// DeviceReadiness judges by; nil: off.
	Activation *jobs.Activation
	// Discoverer serves StartBatch with kind discover; nil: unavailable.
	Discoverer admin.Discoverer
	// SummaryMaxAge is admin.Options.SummaryMaxAge (benchmarks set it
	// tiny to measure the computation, not the cache).
	SummaryMaxAge time.Duration
}

// Start runs a server until t ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: testpeers.Redis(t)})
	t.Cleanup(func() { _ = rdb.Close() })
	sealer, err := secrets.New(bytes.Repeat([]byte{5}, 32))
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(rdb, sealer, store.Options{Clock: func() time.Time { return Epoch }})
	ca, err := agentca.Open(ctx, st, agentca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	aq := asynq.NewClientFromRedisClient(rdb)
	bs := batch.New(st, jobs.NewEnqueuer(aq, 3, 0), o.Log)
	var batches admin.Batches = bs
	if o.Batches != nil {
		batches = o.Batches
	}
	q := store.NewLeaseQueue(st, store.QueueOptions{})
	dca, err := builtin.New(ctx, &pkitest.MemStorage{}, builtin.Config{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	js := jobs.New(st, q, dca, nil, jobs.Config{Site: jobs.Site{Activation: o.Activation}}, o.Log)
	ao := admin.Options{Log: o.Log, WatchInterval: 50 * time.Millisecond, Readiness: js, Discoverer: o.Discoverer, SummaryMaxAge: o.SummaryMaxAge,
		Forgetter: js, Claimer: bs}
	if !o.NoCA {
		ao.CA = ca
	}
	svc := admin.New(st, batches, o.Sweeper, ao)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ServerCertificate(lis.Addr().String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The production wiring: one TLS port for agents (mTLS, AgentService's
	// interceptor) and administrators (bearer tokens, AdminService's).
	agents := api.NewAgentService(st, q, dispatch.New(q, q, dispatch.Options{}), ca,
		js, discover.NewRecorder(st, o.Log, nil), api.Options{Log: o.Log})
	gs := grpc.NewServer(append(api.ServerOptions(agents, cert),
		grpc.ChainUnaryInterceptor(svc.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(svc.StreamInterceptor()))...)
	api.Register(gs, agents)
	admin.Register(gs, svc)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	t.Cleanup(func() {
		gs.Stop()
		<-done
	})

	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	operate, _, err := st.CreateAdminToken(ctx, "ops", domain.RoleOperate)
	if err != nil {
		t.Fatal(err)
	}
	read, _, err := st.CreateAdminToken(ctx, "viewer", domain.RoleRead)
	if err != nil {
		t.Fatal(err)
	}
	return &Server{Store: st, Batches: bs, DeviceCA: dca, Svc: svc, CA: ca, RDB: rdb, Addr: lis.Addr().String(), CAFile: caFile,
		Operate: operate, Read: read}
}

// bearer sends a token with every call.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	if b == "" {
		return nil, nil
	}
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

// Dial connects over TLS, presenting token (none when empty).
func (s *Server) Dial(t testing.TB, token string) pb.AdminServiceClient {
	t.Helper()
	return pb.NewAdminServiceClient(s.Conn(t, token, nil))
}

// DialCert connects over TLS presenting the client certificate cert and
// no token.
func (s *Server) DialCert(t testing.TB, cert *tls.Certificate) pb.AdminServiceClient {
	t.Helper()
	return pb.NewAdminServiceClient(s.Conn(t, "", cert))
}

// Conn connects over TLS, presenting token (none when empty) and cert
// (none when nil), for any service on the port.
func (s *Server) Conn(t testing.TB, token string, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	tc := &tls.Config{RootCAs: s.CA.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(s.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithPerRPCCredentials(bearer(token)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// AdminCert has a fresh key certified for name and role through
// IssueAdminCertificate, called with the operate token.
func (s *Server) AdminCert(t testing.TB, name, role string) *tls.Certificate {
	t.Helper()
	return IssueCert(t, s.Dial(t, s.Operate), name, role)
}

// IssueCert has a fresh key certified for name and role through c's
// IssueAdminCertificate.
func IssueCert(t testing.TB, c pb.AdminServiceClient, name, role string) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.IssueAdminCertificate(context.Background(),
		&pb.IssueAdminCertificateRequest{Name: name, Role: role, CsrDer: csr})
	if err != nil {
		t.Fatalf("issue admin certificate %s: %v", name, err)
	}
	return &tls.Certificate{Certificate: [][]byte{resp.GetCertificateDer()}, PrivateKey: key}
}

// Device stores a device in the /24 around ip and returns it.
func (s *Server) Device(t testing.TB, id, host string, ip string, status domain.Status) domain.Device {
	t.Helper()
	d := domain.Device{ID: id, HostName: host, Domain: "amt.test", Status: status}
	if ip != "" {
		d.IP = mustAddr(t, ip)
		d.Subnet = netPrefix(d.IP)
	}
	if err := s.Store.PutDevice(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	return d
}

func mustAddr(t testing.TB, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// netPrefix is the /24 (IPv4) or /64 (IPv6) around a.
func netPrefix(a netip.Addr) netip.Prefix {
	bits := 24
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}
