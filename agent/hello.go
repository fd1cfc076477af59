package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/amtops/amtops/agent/hellolisten"
	"github.com/amtops/amtops/internal/hello"
	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// dropFlushEvery is how often drop counters go to the server when no
// Hello arrives to carry them.
const dropFlushEvery = time.Minute

// helloLoop serves the provisioning port (hello.listen) for the agent's
// authorised subnets until ctx ends. A port that cannot be bound is
// logged, not fatal: jobs and sweeps go on without Hellos.
func (a *Agent) helloLoop(ctx context.Context) {
	rep := &helloReporter{report: a.client.ReportHellos, subnets: a.Subnets}
	ln, err := hellolisten.Listen(hellolisten.Config{Addr: a.cfg.Hello.Listen, Subnets: a.Subnets, Reporter: rep, Log: a.log})
	if err != nil {
		a.log.Error().Err(err).Str("addr", a.cfg.Hello.Listen).Msg("hello listener not started")
		return
	}
	rep.stats = ln.Stats
	a.mu.Lock()
	a.helloAddr, a.helloStats = ln.Addr().String(), ln.Stats
	a.mu.Unlock()
	a.log.Info().Str("addr", ln.Addr().String()).Msg("hello listener started")
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(dropFlushEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := rep.ReportHello(ctx, nil); err != nil {
					a.log.Warn().Err(err).Msg("report hello drops failed")
				}
			}
		}
	}()
	if err := ln.Run(ctx); err != nil {
		a.log.Error().Err(err).Msg("hello listener stopped")
	}
	<-done
}

// HelloAddr is the bound address of the provisioning port ("" until it
// listens, or when hello.listen is empty).
func (a *Agent) HelloAddr() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.helloAddr
}

// helloReporter hands a listener's batches to ReportHellos, one call per
// subnet, with the listener's drops since the last report that got
// through (on the first call of a batch).
type helloReporter struct {
	report  func(context.Context, *pb.ReportHellosRequest, ...grpc.CallOption) (*pb.ReportHellosResponse, error)
	subnets func() []netip.Prefix
	stats   func() hellolisten.Stats

	mu   sync.Mutex // one report at a time, so drops are counted once
	sent hellolisten.Stats
}

// ReportHello implements hellolisten.Reporter. With no reports it sends
// only the drops, if any.
func (h *helloReporter) ReportHello(ctx context.Context, reports []hellolisten.Report) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var now hellolisten.Stats
	if h.stats != nil {
		now = h.stats()
	}
	drops := dropsSince(now, h.sent)
	reqs := groupHellos(h.subnets(), reports)
	if len(reqs) == 0 {
		if drops == nil {
			return nil
		}
		subnets := h.subnets()
		if len(subnets) == 0 {
			return nil
		}
		reqs = []*pb.ReportHellosRequest{{Subnet: subnets[0].String()}}
	}
	reqs[0].Drops = drops
	for i, req := range reqs {
		if _, err := h.report(ctx, req); err != nil {
			return fmt.Errorf("agent: report hellos %s: %w", req.GetSubnet(), err)
		}
		if i == 0 {
			h.sent = now
		}
	}
	return nil
}

// groupHellos converts reports to one request per authorised subnet, in
// the order of the subnets; a report no subnet holds (the subnets changed
// since it was accepted) is left out.
func groupHellos(subnets []netip.Prefix, reports []hellolisten.Report) []*pb.ReportHellosRequest {
	by := map[netip.Prefix]*pb.ReportHellosRequest{}
	var out []*pb.ReportHellosRequest
	for _, r := range reports {
		i := slices.IndexFunc(subnets, func(p netip.Prefix) bool { return p.Contains(r.Addr) })
		if i < 0 {
			continue
		}
		req := by[subnets[i]]
		if req == nil {
			req = &pb.ReportHellosRequest{Subnet: subnets[i].String()}
			by[subnets[i]] = req
			out = append(out, req)
		}
		req.Hellos = append(req.Hellos, helloToPB(r))
	}
	return out
}

// helloToPB is the one conversion of a received Hello to the wire.
func helloToPB(r hellolisten.Report) *pb.Hello {
	h := &pb.Hello{Ip: r.Addr.String(), Uuid: strings.ToLower(r.Hello.UUID.String()), Version: hello.Version,
		Flags: uint32(r.Hello.Flags), RetryCount: r.Hello.RetryCount, ReceivedAt: timestamppb.New(r.At)}
	for _, x := range r.Hello.Hashes {
		h.TrustedRoots = append(h.TrustedRoots, &pb.CertHash{Algorithm: hashAlgorithm(x.Alg), Hash: slices.Clone(x.Sum)})
	}
	return h
}

func hashAlgorithm(a hello.HashAlg) pb.HashAlgorithm {
	switch a {
	case hello.SHA1:
		return pb.HashAlgorithm_HASH_ALGORITHM_SHA1
	case hello.SHA256:
		return pb.HashAlgorithm_HASH_ALGORITHM_SHA256
	case hello.SHA384:
		return pb.HashAlgorithm_HASH_ALGORITHM_SHA384
	}
	return pb.HashAlgorithm_HASH_ALGORITHM_UNSPECIFIED
}

// dropsSince is the drops between two snapshots, nil when none.
func dropsSince(now, then hellolisten.Stats) *pb.HelloDrops {
	d := &pb.HelloDrops{Malformed: now.Malformed - then.Malformed, Oversized: now.Oversized - then.Oversized,
		Foreign: now.Foreign - then.Foreign, TimedOut: now.Timeouts - then.Timeouts}
	if d.Malformed == 0 && d.Oversized == 0 && d.Foreign == 0 && d.TimedOut == 0 {
		return nil
	}
	return d
}
