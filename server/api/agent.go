package api

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/wire"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/agentca"
)

// Store is the part of the site database AgentService uses (store.Store).
type Store interface {
	ConsumeEnrollmentToken(ctx context.Context, token string) (domain.Enrollment, error)
	PutAgent(ctx context.Context, a domain.Agent) error
	GetAgent(ctx context.Context, id string) (domain.Agent, error)
	Heartbeat(ctx context.Context, agentID string, at time.Time) error
	RecordLoad(ctx context.Context, agentID string, l domain.AgentLoad) error
	CountHellos(ctx context.Context, agentID string, n int) error
	AppendEvent(ctx context.Context, e domain.OperationEvent) error
	AppendEvents(ctx context.Context, evs []domain.OperationEvent) error
	GetBatch(ctx context.Context, id string) (domain.Batch, error)
}

// Queue is the part of the phase-2 lease queue AgentService uses
// (store.LeaseQueue): heartbeats extend leases.
type Queue interface {
	Extend(ctx context.Context, subnet netip.Prefix, jobID, token string, ttl time.Duration) (time.Time, error)
}

// Leaser long-polls the queue (dispatch.Dispatcher).
type Leaser interface {
	Lease(ctx context.Context, agentID string, subnets []netip.Prefix, max int, ttl, wait time.Duration) ([]domain.Leased, error)
}

// Options tunes AgentService. The zero value is usable.
type Options struct {
	// LeaseTTL is how long a lease lasts between heartbeats; default 60s.
	LeaseTTL time.Duration
	// DefaultWait is the long-poll wait when the agent names none; 25s.
	DefaultWait time.Duration
	// Clock; default time.Now.
	Clock func() time.Time
	Log   zerolog.Logger
	// Hellos records ReportHellos; nil refuses the call.
	Hellos Hellos
}

// AgentService implements amtops.v1.AgentService.
type AgentService struct {
	pb.UnimplementedAgentServiceServer
	st          Store
	q           Queue
	l           Leaser
	ca          *agentca.CA
	jobs        Jobs
	discoveries Discoveries
	opts        Options
}

// Jobs is what the agent service asks of a job's life (jobs.Service).
type Jobs interface {
	Completer
	Signer
	ProvisioningSigner
}

// NewAgentService builds the service. l is normally a dispatch.Dispatcher
// over q, j the jobs.Service over both and d a discover.Recorder.
func NewAgentService(st Store, q Queue, l Leaser, ca *agentca.CA, j Jobs, d Discoveries, o Options) *AgentService {
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 60 * time.Second
	}
	if o.DefaultWait <= 0 {
		o.DefaultWait = 25 * time.Second
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	return &AgentService{st: st, q: q, l: l, ca: ca, jobs: j, discoveries: d, opts: o}
}

// Register adds svc to s. The server must use ServerTLS credentials and
// svc.UnaryInterceptor (see ServerOptions).
func Register(s *grpc.Server, svc *AgentService) { pb.RegisterAgentServiceServer(s, svc) }

// ServerTLS is the TLS configuration for the gRPC listener: the server
// certificate from the agent CA, and client certificates verified when
// given (Enroll comes without one; the interceptor demands one for every
// other AgentService call).
func ServerTLS(ca *agentca.CA, cert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    ca.Pool(),
		ClientAuth:   tls.VerifyClientCertIfGiven,
	}
}

// ServerOptions are the grpc.NewServer options AgentService needs: TLS
// credentials and the authenticating interceptor.
func ServerOptions(svc *AgentService, cert tls.Certificate) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(ServerTLS(svc.ca, cert))),
		grpc.ChainUnaryInterceptor(svc.UnaryInterceptor()),
	}
}

type agentKey struct{}

const servicePrefix = "/" + "amtops.v1.AgentService" + "/"

// UnaryInterceptor authenticates AgentService calls: every method but
// Enroll needs a client certificate from the agent CA naming an enrolled
// agent. Other services' calls pass through untouched.
func (s *AgentService) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if !strings.HasPrefix(info.FullMethod, servicePrefix) || info.FullMethod == pb.AgentService_Enroll_FullMethodName {
			return h(ctx, req)
		}
		a, err := s.authenticate(ctx)
		if err != nil {
			s.opts.Log.Warn().Str("method", info.FullMethod).Err(err).Msg("agent call refused")
			return nil, ToStatus(err)
		}
		return h(context.WithValue(ctx, agentKey{}, a), req)
	}
}

func (s *AgentService) authenticate(ctx context.Context) (domain.Agent, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return domain.Agent{}, fmt.Errorf("api: no peer: %w", domain.ErrUnauthorized)
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return domain.Agent{}, fmt.Errorf("api: client certificate required: %w", domain.ErrUnauthorized)
	}
	id, err := s.ca.VerifyAgentConn(ti.State)
	if err != nil {
		return domain.Agent{}, fmt.Errorf("api: %w", err)
	}
	a, err := s.st.GetAgent(ctx, id)
	if errors.Is(err, domain.ErrNotFound) {
		// Deleting an agent revokes it.
		return domain.Agent{}, fmt.Errorf("api: agent %s is not enrolled: %w", id, domain.ErrUnauthorized)
	}
	return a, err
}

func agentFrom(ctx context.Context) (domain.Agent, error) {
	a, ok := ctx.Value(agentKey{}).(domain.Agent)
	if !ok {
		return domain.Agent{}, status.Error(codes.Unauthenticated, "api: call not authenticated (interceptor missing)")
	}
	return a, nil
}

// authorize parses a subnet the agent named and checks it may serve it.
func authorize(a domain.Agent, subnet string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(subnet)
	if err != nil {
		return netip.Prefix{}, domain.InvalidField("subnet", subnet, "not a CIDR prefix")
	}
	if !a.Authorized(p) {
		return netip.Prefix{}, fmt.Errorf("api: agent %s on subnet %s: %w", a.ID, p, domain.ErrUnauthorized)
	}
	return p.Masked(), nil
}

// leaseRef checks a LeaseRef and returns its subnet and the job's batch
// and device, which the job ID carries (domain.JobID).
func leaseRef(a domain.Agent, ref *pb.LeaseRef) (netip.Prefix, string, string, error) {
	if ref == nil {
		return netip.Prefix{}, "", "", domain.InvalidField("lease", "", "required")
	}
	p, err := authorize(a, ref.GetSubnet())
	if err != nil {
		return p, "", "", err
	}
	batch, dev, ok := domain.SplitJobID(ref.GetJobId())
	if !ok {
		return p, "", "", domain.InvalidField("lease.job_id", ref.GetJobId(), "not a batch:device job ID")
	}
	if ref.GetToken() == "" {
		return p, "", "", domain.InvalidField("lease.token", "", "required")
	}
	return p, batch, dev, nil
}

// Enroll redeems a bootstrap token for a client certificate.
func (s *AgentService) Enroll(ctx context.Context, req *pb.EnrollRequest) (*pb.EnrollResponse, error) {
	if req.GetBootstrapToken() == "" {
		return nil, ToStatus(domain.InvalidField("bootstrap_token", "", "required"))
	}
	if len(req.GetCsrDer()) == 0 {
		return nil, ToStatus(domain.InvalidField("csr_der", "", "required"))
	}
	if n := req.GetAgentName(); printable(n, 64) != n {
		return nil, ToStatus(domain.InvalidField("agent_name", "", "at most 64 printable characters"))
	}
	if v := req.GetAgentVersion(); printable(v, 64) != v {
		return nil, ToStatus(domain.InvalidField("agent_version", "", "at most 64 printable characters"))
	}
	e, err := s.st.ConsumeEnrollmentToken(ctx, req.GetBootstrapToken())
	if err != nil {
		return nil, ToStatus(err)
	}
	id := e.AgentID
	if id == "" {
		id = "agent-" + uuid.NewString()
	}
	cert, err := s.ca.SignAgent(req.GetCsrDer(), id)
	if err != nil {
		return nil, ToStatus(err)
	}
	a := domain.Agent{ID: id, Name: req.GetAgentName(), Version: req.GetAgentVersion(), Subnets: e.Subnets,
		CertSerial: cert.SerialNumber.String(), EnrolledAt: s.opts.Clock().UTC()}
	if err := s.st.PutAgent(ctx, a); err != nil {
		return nil, ToStatus(err)
	}
	s.opts.Log.Info().Str("agent", id).Str("name", req.GetAgentName()).Str("version", a.Version).Int("subnets", len(a.Subnets)).Msg("agent enrolled")
	return s.certResponse(a, cert.Raw, cert.NotAfter), nil
}

func (s *AgentService) certResponse(a domain.Agent, der []byte, notAfter time.Time) *pb.EnrollResponse {
	subnets := make([]string, len(a.Subnets))
	for i, p := range a.Subnets {
		subnets[i] = p.String()
	}
	return &pb.EnrollResponse{AgentId: a.ID, CertificateDer: der, CaChainDer: [][]byte{s.ca.Certificate().Raw},
		Subnets: subnets, NotAfter: timestamppb.New(notAfter)}
}

// Renew signs a new client certificate for the calling agent.
func (s *AgentService) Renew(ctx context.Context, req *pb.RenewRequest) (*pb.EnrollResponse, error) {
	a, err := agentFrom(ctx)
	if err != nil {
		return nil, err
	}
	cert, err := s.ca.SignAgent(req.GetCsrDer(), a.ID)
	if err != nil {
		return nil, ToStatus(err)
	}
	a.CertSerial = cert.SerialNumber.String()
	if err := s.st.PutAgent(ctx, a); err != nil {
		return nil, ToStatus(err)
	}
	s.opts.Log.Info().Str("agent", a.ID).Time("not_after", cert.NotAfter).Msg("agent certificate renewed")
	return s.certResponse(a, cert.Raw, cert.NotAfter), nil
}

// Lease long-polls for jobs on the agent's subnets.
func (s *AgentService) Lease(ctx context.Context, req *pb.LeaseRequest) (*pb.LeaseResponse, error) {
	a, err := agentFrom(ctx)
	if err != nil {
		return nil, err
	}
	max := int(req.GetMaxJobs())
	if max <= 0 || max > 1000 {
		return nil, ToStatus(domain.InvalidField("max_jobs", fmt.Sprint(max), "must be 1 to 1000"))
	}
	wait := s.opts.DefaultWait
	if req.GetWait() != nil {
		wait = req.GetWait().AsDuration()
	}
	resp := &pb.LeaseResponse{LeaseTtl: durationpb.New(s.opts.LeaseTTL)}
	// An agent long-polling is alive, and serves its subnets, before its
	// first heartbeat is due.
	if err := s.st.Heartbeat(ctx, a.ID, s.opts.Clock()); err != nil {
		s.opts.Log.Warn().Str("agent", a.ID).Err(err).Msg("record agent seen")
	}
	if len(a.Subnets) == 0 {
		return resp, nil
	}
	leased, err := s.l.Lease(ctx, a.ID, a.Subnets, max, s.opts.LeaseTTL, wait)
	for _, l := range leased {
		job := &pb.Phase2Job{}
		if uerr := proto.Unmarshal(l.Payload, job); uerr != nil {
			// Leave it leased: it comes back after the TTL and ends in
			// the dead letters, where an operator sees it.
			s.opts.Log.Error().Str("job", l.JobID).Err(uerr).Msg("undecodable phase-2 payload")
			continue
		}
		job.Lease = &pb.LeaseRef{Subnet: l.Subnet.String(), JobId: l.JobID, Token: l.Token}
		job.Attempt = int32(l.Attempt)
		if l.Attempt > 1 {
			ref := domain.LeaseRef{Subnet: l.Subnet, JobID: l.JobID, Token: l.Token}
			if done, ferr := s.jobs.Finished(ctx, ref); ferr != nil {
				s.opts.Log.Warn().Str("job", l.JobID).Err(ferr).Msg("finished-job check failed")
			} else if done {
				continue
			}
		}
		s.attachEarlier(ctx, job)
		resp.Jobs = append(resp.Jobs, job)
	}
	if err != nil && len(resp.Jobs) == 0 {
		return nil, ToStatus(err)
	}
	if err != nil {
		s.opts.Log.Warn().Str("agent", a.ID).Err(err).Msg("lease partly failed")
	}
	return resp, nil
}

// attachEarlier gives a retried key-on-device job the certificate an
// earlier attempt had signed, so that the agent recognises a device that
// attempt already activated (it serves that leaf). Best effort: without
// it the retry starts over.
func (s *AgentService) attachEarlier(ctx context.Context, job *pb.Phase2Job) {
	t := job.GetTls()
	if job.GetAttempt() <= 1 || !t.GetKeyOnDevice() || len(t.GetCertificateDer()) > 0 {
		return
	}
	prev, ok, err := s.jobs.SignedEarlier(ctx, job.GetLease().GetJobId(), job.GetDeviceId())
	if err != nil {
		s.opts.Log.Warn().Str("job", job.GetLease().GetJobId()).Err(err).Msg("earlier device certificate not read")
		return
	}
	if ok {
		t.CertificateDer, t.ChainDer, t.Serial = prev.Leaf, prev.Chain, prev.Serial
	}
}

// Heartbeat extends every lease the agent still holds.
func (s *AgentService) Heartbeat(ctx context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	a, err := agentFrom(ctx)
	if err != nil {
		return nil, err
	}
	// A malformed lease refuses the whole call. A lease on a subnet the
	// agent does not (or no longer) serve is not extended and is reported
	// lost, so an agent whose subnet an administrator took away drops that
	// work while its other leases live on.
	type ref struct {
		p            netip.Prefix
		batch, jobID string
		token        string
	}
	refs := make([]ref, 0, len(req.GetLeases()))
	resp := &pb.HeartbeatResponse{}
	for _, l := range req.GetLeases() {
		p, batch, _, err := leaseRef(a, l)
		if errors.Is(err, domain.ErrUnauthorized) {
			resp.LostJobIds = append(resp.LostJobIds, l.GetJobId())
			continue
		}
		if err != nil {
			return nil, ToStatus(err)
		}
		refs = append(refs, ref{p, batch, l.GetJobId(), l.GetToken()})
	}
	if err := s.st.Heartbeat(ctx, a.ID, s.opts.Clock()); err != nil {
		s.opts.Log.Warn().Str("agent", a.ID).Err(err).Msg("record heartbeat")
	} else if err := s.st.RecordLoad(ctx, a.ID, domain.AgentLoad{InFlight: int(req.GetInFlight()), Capacity: int(req.GetCapacity()),
		Version: printable(req.GetAgentVersion(), 64), Address: peerAddr(ctx)}); err != nil {
		s.opts.Log.Warn().Str("agent", a.ID).Err(err).Msg("record agent load")
	}
	for _, p := range a.Subnets {
		resp.Subnets = append(resp.Subnets, p.String())
	}
	cancelled := map[string]bool{}
	for _, r := range refs {
		if _, err := s.q.Extend(ctx, r.p, r.jobID, r.token, s.opts.LeaseTTL); err != nil {
			if errors.Is(err, domain.ErrLeaseLost) || errors.Is(err, domain.ErrAlreadyCompleted) {
				resp.LostJobIds = append(resp.LostJobIds, r.jobID)
				continue
			}
			return nil, ToStatus(err)
		}
		c, seen := cancelled[r.batch]
		if !seen {
			b, err := s.st.GetBatch(ctx, r.batch)
			c = err == nil && b.CancelRequested
			cancelled[r.batch] = c
		}
		if c {
			resp.CancelledJobIds = append(resp.CancelledJobIds, r.jobID)
		}
	}
	return resp, nil
}

// ReportProgress appends the agent's step events to the device's log.
func (s *AgentService) ReportProgress(ctx context.Context, req *pb.ReportProgressRequest) (*pb.ReportProgressResponse, error) {
	a, err := agentFrom(ctx)
	if err != nil {
		return nil, err
	}
	p, _, dev, err := leaseRef(a, req.GetLease())
	if err != nil {
		return nil, ToStatus(err)
	}
	// Only the holder of the job's live lease writes its device's log: the
	// token is given to one agent per attempt, so a forged or stale lease
	// (another device's job, an attempt that was reaped) is refused. A job
	// this token has just completed still takes its last events.
	jobID := req.GetLease().GetJobId()
	if _, err := s.q.Extend(ctx, p, jobID, req.GetLease().GetToken(), s.opts.LeaseTTL); err != nil && !errors.Is(err, domain.ErrAlreadyCompleted) {
		return nil, ToStatus(fmt.Errorf("api: report progress for %s: %w", jobID, err))
	}
	evs := make([]domain.OperationEvent, 0, len(req.GetEvents()))
	for _, ev := range req.GetEvents() {
		if ev.GetDeviceId() != "" && ev.GetDeviceId() != dev {
			return nil, ToStatus(domain.InvalidField("events.device_id", ev.GetDeviceId(), "not the lease's device "+dev))
		}
		e := domain.OperationEvent{DeviceID: dev, JobID: jobID, Phase: 2, Step: ev.GetStep(),
			Outcome: cmp.Or(wire.OutcomeFrom(ev.GetOutcome()), domain.OutcomeOK), Detail: ev.GetDetail(), Actor: a.ID, Time: s.opts.Clock().UTC()}
		if ev.GetTime() != nil {
			e.Time = ev.GetTime().AsTime()
		}
		evs = append(evs, e)
	}
	if len(evs) > 0 {
		if err := s.st.AppendEvents(ctx, evs); err != nil {
			return nil, ToStatus(err)
		}
	}
	return &pb.ReportProgressResponse{}, nil
}

// printable is s when it is at most max printable characters; otherwise
// "" (a heartbeat's odd version is not worth refusing the heartbeat).
func printable(s string, max int) string {
	if len(s) > max || strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return ""
	}
	return s
}

// peerAddr is the network address the call came from ("" when unknown).
func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
