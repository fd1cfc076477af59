package admin

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/api"
	"github.com/amtops/amtops/server/batch"
)

// StartBatch starts provision, update or removal on the devices named
// (by ID, FQDN or IP) and/or a collection's members.
func (s *Service) StartBatch(ctx context.Context, req *pb.StartBatchRequest) (*pb.Batch, error) {
	p, err := principalFrom(ctx)
	if err != nil {
		return nil, err
	}
	kind, err := kindFrom(req.GetKind())
	if err != nil {
		return nil, api.ToStatus(err)
	}
	if kind == domain.KindDiscover {
		return s.discover(ctx, p, req.GetSubnets())
	}
	if len(req.GetSubnets()) > 0 {
		return nil, api.ToStatus(domain.InvalidField("subnets", strings.Join(req.GetSubnets(), ","), "only discovery takes subnets"))
	}
	opts := map[string]string{}
	if req.GetSuppressAutoProvision() {
		if kind != domain.KindRemoveConfig && kind != domain.KindRemoveAll {
			return nil, api.ToStatus(domain.InvalidField("suppress_auto_provision", "true", "only a removal can suppress automatic provisioning"))
		}
		opts["suppress_auto"] = "true"
	}
	if req.GetConfirm_8021X() {
		if kind != domain.KindUpdate {
			return nil, api.ToStatus(domain.InvalidField("confirm_8021x", "true", "only an update applies 802.1X settings"))
		}
		opts["confirm_8021x"] = "true"
	}
	if len(req.GetDeviceIds()) == 0 && req.GetCollection() == "" {
		return nil, api.ToStatus(domain.InvalidField("devices", "", "name devices or a collection"))
	}
	ds, err := s.resolveAll(ctx, req.GetDeviceIds())
	if err != nil {
		return nil, api.ToStatus(err)
	}
	if req.GetCollection() != "" {
		if _, err := s.collection(ctx, req.GetCollection()); err != nil {
			return nil, api.ToStatus(err)
		}
	}
	if len(opts) == 0 {
		opts = nil
	}
	b, _, err := s.batches.Start(ctx, batch.Request{Kind: kind, DeviceIDs: ids(ds), Collection: req.GetCollection(),
		Origin: "admin", Requester: p.Name, Options: opts})
	if err != nil {
		return nil, api.ToStatus(err)
	}
	out := batchToPB(b)
	if kind == domain.KindUpdate && !req.GetConfirm_8021X() {
		out.Warnings, err = s.warn8021X(ctx, b.ID)
		if err != nil {
			return nil, api.ToStatus(err)
		}
	}
	s.opts.Log.Info().Str("batch", b.ID).Str("kind", string(kind)).Str("admin", p.Name).Int("devices", b.Total).Msg("batch started by administrator")
	return out, nil
}

// warn8021X lists the batch's devices on 802.1X wired links: their update
// stops before changing 802.1X settings unless confirmed (S15).
func (s *Service) warn8021X(ctx context.Context, batchID string) ([]string, error) {
	var out []string
	var page domain.JobPage
	for first := true; first || page.Next != ""; first = false {
		var err error
		if page, err = s.st.ListJobs(ctx, batchID, domain.JobFilter{Limit: 1000, Cursor: page.Next}); err != nil {
			return nil, err
		}
		for _, j := range page.Jobs {
			d, err := s.st.GetDevice(ctx, j.DeviceID)
			if err != nil {
				continue
			}
			if d.Link == domain.LinkWired8021X {
				if len(out) == 50 {
					out = append(out, "… and more devices on 802.1X wired links")
					return out, nil
				}
				out = append(out, "device "+d.ID+" is on an 802.1X wired link: settings incompatible with the network may drop the link while no OS runs; "+
					"its update stops before changing 802.1X settings unless confirmed (--confirm-8021x)")
			}
		}
	}
	return out, nil
}

func (s *Service) batch(ctx context.Context, id string) (domain.Batch, error) {
	if id == "" {
		return domain.Batch{}, domain.InvalidField("id", "", "name a batch")
	}
	b, err := s.st.GetBatch(ctx, id)
	if errors.Is(err, domain.ErrNotFound) {
		return b, fmt.Errorf("unknown batch %q: %w", id, domain.ErrNotFound)
	}
	return b, err
}

// GetBatch returns a batch with its exact counters.
func (s *Service) GetBatch(ctx context.Context, req *pb.GetBatchRequest) (*pb.Batch, error) {
	b, err := s.batch(ctx, req.GetId())
	if err != nil {
		return nil, api.ToStatus(err)
	}
	return batchToPB(b), nil
}

// ListBatches returns the newest batches first.
func (s *Service) ListBatches(ctx context.Context, req *pb.ListBatchesRequest) (*pb.ListBatchesResponse, error) {
	limit := int(req.GetLimit())
	if limit <= 0 {
		limit = 20
	}
	idList, err := s.st.ListBatches(ctx, min(limit, 1000))
	if err != nil {
		return nil, api.ToStatus(err)
	}
	resp := &pb.ListBatchesResponse{}
	for _, id := range idList {
		b, err := s.st.GetBatch(ctx, id)
		if errors.Is(err, domain.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, api.ToStatus(err)
		}
		resp.Batches = append(resp.Batches, batchToPB(b))
	}
	return resp, nil
}

// WatchBatch sends the batch whenever its counters change, until every
// job has ended or the caller goes away.
func (s *Service) WatchBatch(req *pb.GetBatchRequest, stream grpc.ServerStreamingServer[pb.Batch]) error {
	ctx := stream.Context()
	t := time.NewTicker(s.opts.WatchInterval)
	defer t.Stop()
	var last *pb.Batch
	for {
		b, err := s.batch(ctx, req.GetId())
		if err != nil {
			return api.ToStatus(err)
		}
		cur := batchToPB(b)
		if last == nil || !proto.Equal(cur, last) {
			if err := stream.Send(cur); err != nil {
				return err
			}
			last = cur
		}
		if cur.GetDone() {
			return nil
		}
		select {
		case <-ctx.Done():
			return api.ToStatus(ctx.Err())
		case <-t.C:
		}
	}
}

// CancelBatch cancels the jobs still queued now; running ones stop at
// their next step.
func (s *Service) CancelBatch(ctx context.Context, req *pb.GetBatchRequest) (*pb.Batch, error) {
	if _, err := s.batch(ctx, req.GetId()); err != nil {
		return nil, api.ToStatus(err)
	}
	n, err := s.batches.Cancel(ctx, req.GetId())
	if err != nil {
		return nil, api.ToStatus(err)
	}
	b, err := s.batch(ctx, req.GetId())
	if err != nil {
		return nil, api.ToStatus(err)
	}
	p, _ := principalFrom(ctx)
	s.opts.Log.Info().Str("batch", b.ID).Str("admin", p.Name).Int("cancelled", n).Msg("batch cancelled by administrator")
	return batchToPB(b), nil
}

// ListBatchJobs pages through a batch's jobs: each device's outcome.
func (s *Service) ListBatchJobs(ctx context.Context, req *pb.ListBatchJobsRequest) (*pb.ListBatchJobsResponse, error) {
	if _, err := s.batch(ctx, req.GetBatchId()); err != nil {
		return nil, api.ToStatus(err)
	}
	f := domain.JobFilter{State: domain.JobState(req.GetState()), Limit: int(req.GetLimit()), Cursor: req.GetCursor()}
	if f.State != "" && !validJobState(f.State) {
		return nil, api.ToStatus(domain.InvalidField("state", req.GetState(), "want queued, phase1, phase2, succeeded, failed or cancelled"))
	}
	page, err := s.st.ListJobs(ctx, req.GetBatchId(), f)
	if err != nil {
		return nil, api.ToStatus(err)
	}
	resp := &pb.ListBatchJobsResponse{NextCursor: page.Next}
	for _, j := range page.Jobs {
		resp.Jobs = append(resp.Jobs, jobToPB(j))
	}
	return resp, nil
}

func validJobState(s domain.JobState) bool {
	switch s {
	case domain.JobQueued, domain.JobPhase1, domain.JobPhase2, domain.JobSucceeded, domain.JobFailed, domain.JobCancelled:
		return true
	}
	return false
}

// BeginRename starts S19 for devices about to be renamed or moved: each
// is marked rename-pending (which blocks provisioning) with automatic
// provisioning suppressed, then all provisioning information is removed
// in one batch. Running it again on a pending device repeats the removal.
func (s *Service) BeginRename(ctx context.Context, req *pb.BeginRenameRequest) (*pb.Batch, error) {
	p, err := principalFrom(ctx)
	if err != nil {
		return nil, err
	}
	if len(req.GetDeviceIds()) == 0 {
		return nil, api.ToStatus(domain.InvalidField("device_ids", "", "name at least one device"))
	}
	ds, err := s.resolveAll(ctx, req.GetDeviceIds())
	if err != nil {
		return nil, api.ToStatus(err)
	}
	for _, d := range ds {
		_, err := s.st.UpdateDevice(ctx, d.ID, func(c *domain.Device) error {
			c.RenamePending, c.SuppressAutoProvision = true, true
			return nil
		})
		if err != nil {
			return nil, api.ToStatus(err)
		}
		s.logEvent(ctx, d.ID, "rename", "rename begun by "+p.Name+": provisioning blocked until it completes")
	}
	b, _, err := s.batches.Start(ctx, batch.Request{Kind: domain.KindRemoveAll, DeviceIDs: ids(ds), Origin: "rename",
		Requester: p.Name, Options: map[string]string{"rename": "true", "suppress_auto": "true"}})
	if err != nil {
		return nil, api.ToStatus(err)
	}
	s.opts.Log.Info().Str("batch", b.ID).Str("admin", p.Name).Int("devices", b.Total).Msg("rename begun")
	return batchToPB(b), nil
}

// CompleteRename ends S19 for one device: it takes the new name, lifts
// both marks and provisions the device again. It is refused unless a
// rename is pending and the removal has finished.
func (s *Service) CompleteRename(ctx context.Context, req *pb.CompleteRenameRequest) (*pb.Batch, error) {
	p, err := principalFrom(ctx)
	if err != nil {
		return nil, err
	}
	d, err := s.resolve(ctx, req.GetDeviceId())
	if err != nil {
		return nil, api.ToStatus(err)
	}
	fqdn := strings.TrimSuffix(strings.TrimSpace(req.GetNewFqdn()), ".")
	host, dom, _ := strings.Cut(fqdn, ".")
	if err := domain.ValidateHostName(host); err != nil {
		return nil, api.ToStatus(domain.InvalidField("new_fqdn", fqdn, "the host name (first label) must be 1 to 63 letters, digits or '-'"))
	}
	if reason := checkDomain(dom); reason != "" {
		return nil, api.ToStatus(domain.InvalidField("new_fqdn", fqdn, "domain: "+reason))
	}
	_, err = s.st.UpdateDevice(ctx, d.ID, func(c *domain.Device) error {
		if !c.RenamePending {
			return fmt.Errorf("device %s: no rename pending (start one with `rename begin`): %w", c.ID, domain.ErrConflict)
		}
		if c.Status == domain.StatusProvisioned {
			return fmt.Errorf("device %s: provisioning information not removed yet: wait for the rename's removal batch, or run `rename begin` again: %w", c.ID, domain.ErrConflict)
		}
		c.HostName, c.Domain = host, dom
		c.RenamePending, c.SuppressAutoProvision = false, false
		return nil
	})
	if err != nil {
		return nil, api.ToStatus(err)
	}
	s.logEvent(ctx, d.ID, "rename", "rename completed by "+p.Name+": now "+fqdn+"; provisioning again")
	b, _, err := s.batches.Start(ctx, batch.Request{Kind: domain.KindProvision, DeviceIDs: []string{d.ID}, Origin: "rename", Requester: p.Name})
	if err != nil {
		return nil, api.ToStatus(err)
	}
	return batchToPB(b), nil
}

// SweepNow runs the auto-provisioning sweep at once (S22).
func (s *Service) SweepNow(ctx context.Context, _ *pb.SweepNowRequest) (*pb.Batch, error) {
	if s.sweeper == nil {
		return nil, status.Error(codes.Unimplemented, "admin: no sweeper configured on this server")
	}
	p, err := principalFrom(ctx)
	if err != nil {
		return nil, err
	}
	b, err := s.sweeper.SweepNow(ctx, p.Name)
	if err != nil {
		return nil, api.ToStatus(err)
	}
	return batchToPB(b), nil
}

// discover queues one sweep per subnet; the agents report what they find
// through ReportDiscovery, so there is no per-device job to count.
func (s *Service) discover(ctx context.Context, p Principal, subnets []string) (*pb.Batch, error) {
	if s.opts.Discoverer == nil {
		return nil, status.Error(codes.Unimplemented, "admin: discovery is not available on this server")
	}
	var ps []netip.Prefix
	for i, sn := range subnets {
		pfx, err := netip.ParsePrefix(sn)
		if err != nil {
			return nil, api.ToStatus(domain.InvalidField(fmt.Sprintf("subnets[%d]", i), sn, "not a CIDR prefix"))
		}
		ps = append(ps, pfx.Masked())
	}
	jobs, err := s.opts.Discoverer.Discover(ctx, ps)
	if err != nil {
		return nil, api.ToStatus(err)
	}
	s.opts.Log.Info().Strs("subnets", subnets).Int("sweeps", len(jobs)).Str("admin", p.Name).Msg("discovery requested by administrator")
	return &pb.Batch{Id: strings.Join(jobs, ","), Kind: pb.JobKind_JOB_KIND_DISCOVER, Origin: "admin", Total: int32(len(jobs))}, nil
}
