package api

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/uuid"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/discover"
)

// Hellos records the Hellos agents heard (discover.HelloRecorder).
type Hellos interface {
	Record(ctx context.Context, agentID string, subnet netip.Prefix, hellos []discover.Hello) (discover.HelloCounts, error)
}

// MaxHellos is the most Hellos one report may carry.
const MaxHellos = 10000

// hashSizes are the digest lengths of the hash algorithms a Hello lists.
var hashSizes = map[pb.HashAlgorithm]int{pb.HashAlgorithm_HASH_ALGORITHM_SHA1: 20,
	pb.HashAlgorithm_HASH_ALGORITHM_SHA256: 32, pb.HashAlgorithm_HASH_ALGORITHM_SHA384: 48}

// ReportHellos records the Hellos an agent's listener received on one of
// its subnets; every sender must be inside it. discover.HelloRecorder has
// the rules (matching, the same-subnet guard, auto-provisioning).
func (s *AgentService) ReportHellos(ctx context.Context, req *pb.ReportHellosRequest) (*pb.ReportHellosResponse, error) {
	a, err := agentFrom(ctx)
	if err != nil {
		return nil, err
	}
	subnet, err := authorize(a, req.GetSubnet())
	if err != nil {
		return nil, ToStatus(err)
	}
	if s.opts.Hellos == nil {
		return nil, ToStatus(fmt.Errorf("api: report hellos: remote configuration is not served here: %w", domain.ErrConflict))
	}
	if n := len(req.GetHellos()); n > MaxHellos {
		return nil, ToStatus(domain.InvalidField("hellos", fmt.Sprint(n), fmt.Sprintf("at most %d a report", MaxHellos)))
	}
	hellos := make([]discover.Hello, 0, len(req.GetHellos()))
	now := s.opts.Clock().UTC()
	for i, h := range req.GetHellos() {
		dh, err := helloFrom(i, h, subnet)
		if err != nil {
			return nil, ToStatus(err)
		}
		if dh.At.IsZero() || dh.At.After(now) {
			dh.At = now
		}
		hellos = append(hellos, dh)
	}
	if err := s.st.CountHellos(ctx, a.ID, len(hellos)); err != nil {
		s.opts.Log.Warn().Str("agent", a.ID).Err(err).Msg("count hellos")
	}
	n, err := s.opts.Hellos.Record(ctx, a.ID, subnet, hellos)
	if err != nil {
		return nil, ToStatus(err)
	}
	dr := req.GetDrops()
	s.opts.Log.Info().Str("agent", a.ID).Str("subnet", subnet.String()).Int("hellos", len(hellos)).
		Int("matched", n.Matched).Int("unknown", n.Unknown).Int("queued", n.Queued).Int("refused", n.Refused).
		Int64("dropped_malformed", dr.GetMalformed()).Int64("dropped_oversized", dr.GetOversized()).
		Int64("dropped_foreign", dr.GetForeign()).Int64("dropped_timed_out", dr.GetTimedOut()).Msg("hellos reported")
	return &pb.ReportHellosResponse{Matched: int32(n.Matched), Unknown: int32(n.Unknown), Queued: int32(n.Queued)}, nil
}

// helloFrom checks one Hello of a report: its sender inside subnet, a
// UUID, and hashes of the lengths their algorithms give.
func helloFrom(i int, h *pb.Hello, subnet netip.Prefix) (discover.Hello, error) {
	ip, err := netip.ParseAddr(h.GetIp())
	if err != nil {
		return discover.Hello{}, domain.InvalidField("hellos.ip", h.GetIp(), fmt.Sprintf("hello %d: not an IP address", i))
	}
	if ip = ip.Unmap(); !subnet.Contains(ip) {
		return discover.Hello{}, domain.InvalidField("hellos.ip", h.GetIp(), fmt.Sprintf("hello %d: outside subnet %s", i, subnet))
	}
	u, err := uuid.Parse(h.GetUuid())
	if err != nil {
		return discover.Hello{}, domain.InvalidField("hellos.uuid", h.GetUuid(), fmt.Sprintf("hello %d: not a UUID", i))
	}
	out := discover.Hello{IP: ip, UUID: strings.ToLower(u.String()), RetryCount: h.GetRetryCount(), AdminCredentialsSet: h.GetFlags() != 0}
	if h.GetReceivedAt() != nil {
		out.At = h.GetReceivedAt().AsTime().UTC()
	}
	for _, r := range h.GetTrustedRoots() {
		size, ok := hashSizes[r.GetAlgorithm()]
		if !ok || len(r.GetHash()) != size {
			return discover.Hello{}, domain.InvalidField("hellos.trusted_roots", r.GetAlgorithm().String(),
				fmt.Sprintf("hello %d: a hash of %d bytes", i, len(r.GetHash())))
		}
		out.TrustedRoots = append(out.TrustedRoots, domain.RootHash{Alg: int(r.GetAlgorithm()), Sum: r.GetHash()})
	}
	return out, nil
}
