package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/amtops/amtops/agent/discovery"
	"github.com/amtops/amtops/agent/phase2"
	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// subnetsFile keeps the subnets the server last said the agent may
// serve (EnrollResponse.subnets), so a restarted agent can sweep them.
const subnetsFile = "subnets"

// stepDiscover is the error_step of a failed discover job.
const stepDiscover = "discover"

// Subnets are the subnets the agent is authorised for, as the server last
// said at enrollment or renewal; scheduled sweeps cover them.
func (a *Agent) Subnets() []netip.Prefix {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]netip.Prefix(nil), a.subnets...)
}

func parseSubnets(lines []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, l := range lines {
		if l = strings.TrimSpace(l); l == "" {
			continue
		}
		p, err := netip.ParsePrefix(l)
		if err != nil {
			return nil, fmt.Errorf("agent: subnet %q: %w", l, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func (a *Agent) saveSubnets(subnets []string) error {
	ps, err := parseSubnets(subnets)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	for _, p := range ps {
		b.WriteString(p.String() + "\n")
	}
	return writeFile(filepath.Join(a.cfg.StateDir, subnetsFile), b.Bytes())
}

// refreshSubnets takes the subnets a heartbeat reported, saving them when
// they changed.
func (a *Agent) refreshSubnets(subnets []string) error {
	ps, err := parseSubnets(subnets)
	if err != nil {
		return err
	}
	a.mu.Lock()
	same := slices.Equal(ps, a.subnets)
	a.mu.Unlock()
	if same {
		return nil
	}
	if err := a.saveSubnets(subnets); err != nil {
		return err
	}
	a.mu.Lock()
	a.subnets = ps
	a.mu.Unlock()
	a.log.Info().Strs("subnets", subnets).Msg("authorised subnets changed")
	return nil
}

// loadSubnets reads the saved subnets; none saved is no subnets.
func (a *Agent) loadSubnets() error {
	f, err := os.Open(filepath.Join(a.cfg.StateDir, subnetsFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("agent: load subnets: %w", err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("agent: load subnets: %w", err)
	}
	ps, err := parseSubnets(lines)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.subnets = ps
	a.mu.Unlock()
	return nil
}

// sweepLoop sweeps every authorised subnet each Discovery.Interval, the
// first time one interval after start (a restart does not re-sweep at
// once; a discover job does). It returns when ctx ends.
func (a *Agent) sweepLoop(ctx context.Context) {
	every := a.cfg.Discovery.Interval
	if every <= 0 {
		return
	}
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		subnets := a.Subnets()
		if len(subnets) == 0 {
			a.log.Info().Msg("no subnets to sweep")
		}
		for _, p := range subnets {
			id := "sched-" + uuid.NewString()
			if err := a.sweep(ctx, p, p, id, discovery.Options{}); err != nil {
				if ctx.Err() != nil {
					return
				}
				a.log.Warn().Str("subnet", p.String()).Str("sweep", id).Err(err).Msg("scheduled sweep failed")
			}
		}
		t.Reset(every)
	}
}

// runDiscover serves a leased discover job: it sweeps the job's subnets
// (default: the lease's) and reports each under the authorised subnet
// holding it. The job can only narrow the agent's concurrency and rate.
func (a *Agent) runDiscover(ctx context.Context, job *pb.Phase2Job) phase2.Result {
	fail := func(err error, permanent bool) phase2.Result {
		return phase2.Result{Err: err, ErrorStep: stepDiscover, Permanent: permanent || domain.IsPermanent(err)}
	}
	lease, err := netip.ParsePrefix(job.GetLease().GetSubnet())
	if err != nil {
		return fail(domain.InvalidField("lease.subnet", job.GetLease().GetSubnet(), "not a CIDR prefix"), true)
	}
	lease = lease.Masked()
	names := job.GetDiscover().GetSubnets()
	if len(names) == 0 {
		names = []string{lease.String()}
	}
	targets := make([]netip.Prefix, 0, len(names))
	reports := make([]netip.Prefix, 0, len(names))
	for _, n := range names {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			return fail(domain.InvalidField("discover.subnets", n, "not a CIDR prefix"), true)
		}
		r, ok := a.authorisedFor(lease, p.Masked())
		if !ok {
			return fail(domain.InvalidField("discover.subnets", n, "not within the agent's subnets"), true)
		}
		targets, reports = append(targets, p.Masked()), append(reports, r)
	}
	o := discovery.Options{Concurrency: int(job.GetDiscover().GetConcurrency()), Rate: int(job.GetDiscover().GetRatePerSecond())}
	for i, p := range targets {
		if err := a.sweep(ctx, reports[i], p, job.GetLease().GetJobId()+"/"+p.String(), o); err != nil {
			c := status.Code(err)
			return fail(err, c == codes.InvalidArgument || c == codes.PermissionDenied || c == codes.Unauthenticated)
		}
	}
	return phase2.Result{}
}

// authorisedFor finds the authorised subnet holding p: the lease's, or
// one of the agent's.
func (a *Agent) authorisedFor(lease, p netip.Prefix) (netip.Prefix, bool) {
	within := func(outer netip.Prefix) bool { return outer.Bits() <= p.Bits() && outer.Contains(p.Addr()) }
	if within(lease) {
		return lease, true
	}
	for _, s := range a.Subnets() {
		if within(s) {
			return s, true
		}
	}
	return netip.Prefix{}, false
}

// sweep probes target and reports its findings under report, in chunks.
func (a *Agent) sweep(ctx context.Context, report, target netip.Prefix, sweepID string, o discovery.Options) error {
	st, err := a.sweeper.Sweep(ctx, target, o, func(ctx context.Context, found []discovery.Result, last bool) error {
		req := &pb.ReportDiscoveryRequest{Subnet: report.String(), SweepId: sweepID, SweepComplete: last,
			Devices: make([]*pb.DiscoveredDevice, len(found))}
		for i, r := range found {
			// No site credentials here: the server keeps statuses it
			// learned with them (credentials_known false, no facts).
			req.Devices[i] = &pb.DiscoveredDevice{Ip: r.Addr.String(), Port_16992: r.HTTP, Port_16993: r.TLS,
				ProductVendor: r.ProductVendor, ProductVersion: r.ProductVersion, ProtocolVersion: r.ProtocolVersion}
		}
		return a.reportDiscovery(ctx, req)
	})
	if err != nil {
		return err
	}
	a.log.Info().Str("subnet", target.String()).Str("sweep", sweepID).Int("addresses", st.Addresses).
		Int("found", st.Found).Int("identified", st.Identified).Msg("sweep reported")
	return nil
}

// reportDiscovery sends one chunk, retrying while the server is away.
func (a *Agent) reportDiscovery(ctx context.Context, req *pb.ReportDiscoveryRequest) error {
	for n := 0; ; n++ {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := a.client.ReportDiscovery(cctx, req)
		cancel()
		if err == nil {
			return nil
		}
		if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded || n >= 5 || !a.backoff(ctx, n) {
			return fmt.Errorf("agent: report discovery %s: %w", req.GetSubnet(), err)
		}
	}
}
