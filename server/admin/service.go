package admin

import (
	"context"
	"crypto/x509"
	"net/netip"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/provcert"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/batch"
	"github.com/amtops/amtops/server/store"
)

// Batches starts and cancels bulk operations (batch.Service).
type Batches interface {
	Start(ctx context.Context, r batch.Request) (b domain.Batch, created bool, err error)
	Cancel(ctx context.Context, id string) (cancelled int, err error)
}

// Sweeper runs the auto-provisioning sweep on demand (S22).
type Sweeper interface {
	SweepNow(ctx context.Context, requester string) (domain.Batch, error)
}

// Options tunes a Service. The zero value is usable.
type Options struct {
	Log zerolog.Logger
	// WatchInterval is how often WatchBatch reads the counters; default
	// 300 ms.
	WatchInterval time.Duration
	// Clock gives the time; default time.Now.
	Clock func() time.Time
	// Discoverer runs on-demand discovery (StartBatch with kind
	// discover); nil refuses it.
	Discoverer Discoverer
	// CA signs and verifies administrators' client certificates (the
	// site's agentca.CA, whose pool the gRPC listener trusts). nil
	// refuses IssueAdminCertificate (FailedPrecondition) and certificate
	// login (Unauthenticated); tokens work either way.
	CA AdminCA
	// Readiness judges devices for remote configuration (jobs.Service);
	// nil: DeviceReadiness answers FailedPrecondition.
	Readiness Readiness
	// AgentOnlineWithin is how recent an agent's last heartbeat must be
	// for it to count as online; default 90 s (agents long-poll every
	// 25 s by default).
	AgentOnlineWithin time.Duration
	// SummaryMaxAge is how long one FleetSummary is shared; default 5 s.
	SummaryMaxAge time.Duration
	// Forgetter and Claimer serve DeleteDevice (jobs.Service and
	// batch.Service); either nil refuses it.
	Forgetter Forgetter
	Claimer   Claimer
}

// Readiness tells whether remote configuration can activate d, with the
// trusted domain it checks and whether a provision job would activate it.
type Readiness interface {
	Readiness(d domain.Device) (provcert.Readiness, string, bool)
}

// AdminCA issues and checks administrators' client certificates
// (agentca.CA).
type AdminCA interface {
	SignAdmin(csrDER []byte, name, role string) (*x509.Certificate, error)
	VerifyAdmin(cert *x509.Certificate, intermediates []*x509.Certificate) (name, role, serial string, err error)
	Certificate() *x509.Certificate
}

// Discoverer asks the agents of subnets (all authorised subnets when
// empty) to sweep them now (S21).
type Discoverer interface {
	Discover(ctx context.Context, subnets []netip.Prefix) (jobIDs []string, err error)
}

// Service implements pb.AdminServiceServer.
type Service struct {
	pb.UnimplementedAdminServiceServer
	st      *store.Store
	batches Batches
	sweeper Sweeper
	opts    Options
	summary summaryCache
}

// New builds the service. sweeper may be nil: SweepNow then answers
// Unimplemented.
func New(st *store.Store, batches Batches, sweeper Sweeper, o Options) *Service {
	if o.WatchInterval <= 0 {
		o.WatchInterval = 300 * time.Millisecond
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.AgentOnlineWithin <= 0 {
		o.AgentOnlineWithin = 90 * time.Second
	}
	if o.SummaryMaxAge <= 0 {
		o.SummaryMaxAge = 5 * time.Second
	}
	return &Service{st: st, batches: batches, sweeper: sweeper, opts: o}
}

// Register adds svc to s. The server must run svc's interceptors (see
// UnaryInterceptor and StreamInterceptor) and TLS credentials.
func Register(s *grpc.Server, svc *Service) { pb.RegisterAdminServiceServer(s, svc) }
