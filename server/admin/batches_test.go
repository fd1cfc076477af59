package admin_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/admin/admintest"
)

func TestCollectionRules(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	ctx := context.Background()
	c := s.Dial(t, s.Operate)
	s.Device(t, "d1", "lab-pc1", "10.0.0.1", domain.StatusNotProvisioned)
	s.Device(t, "d2", "LAB-pc2", "10.0.1.2", domain.StatusNotProvisioned)
	s.Device(t, "d3", "office-1", "10.0.0.3", domain.StatusNotProvisioned)
	if _, err := c.CreateCollection(ctx, &pb.CreateCollectionRequest{Name: "lab"}); err != nil {
		t.Fatal(err)
	}
	members := func(t *testing.T) []string {
		t.Helper()
		resp, err := c.ListDevices(ctx, &pb.ListDevicesRequest{Collection: "lab"})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, d := range resp.GetDevices() {
			out = append(out, d.GetId())
		}
		return out
	}
	r, err := c.AddCollectionMembers(ctx, &pb.CollectionMembersRequest{Collection: "lab", Rule: &pb.MemberRule{NamePattern: "lab-*"}})
	if err != nil || r.GetChanged() != 2 {
		t.Fatalf("add name rule: %v, %v; want 2 changed", r, err)
	}
	r, err = c.AddCollectionMembers(ctx, &pb.CollectionMembersRequest{Collection: "lab", Rule: &pb.MemberRule{Subnet: "10.0.0.0/24"}})
	if err != nil || r.GetChanged() != 1 {
		t.Fatalf("add subnet rule: %v, %v; want 1 changed", r, err)
	}
	if got := strings.Join(members(t), ","); got != "d1,d2,d3" {
		t.Fatalf("members = %s", got)
	}
	// Dropping the subnet rule takes out d3 (matched by nothing else)
	// but keeps d1, which the name rule still matches.
	r, err = c.RemoveCollectionMembers(ctx, &pb.CollectionMembersRequest{Collection: "lab", Rule: &pb.MemberRule{Subnet: "10.0.0.0/24"}})
	if err != nil || r.GetChanged() != 1 {
		t.Fatalf("remove subnet rule: %v, %v", r, err)
	}
	if got := strings.Join(members(t), ","); got != "d1,d2" {
		t.Fatalf("members = %s", got)
	}
	r, err = c.RemoveCollectionMembers(ctx, &pb.CollectionMembersRequest{Collection: "lab", DeviceIds: []string{"lab-pc1.amt.test"}})
	if err != nil || r.GetChanged() != 1 {
		t.Fatalf("remove by name: %v, %v", r, err)
	}
	on := true
	col, err := c.UpdateCollection(ctx, &pb.UpdateCollectionRequest{Name: "lab", AutoProvision: &on})
	if err != nil || !col.GetAutoProvision() || col.GetMembers() != 1 || len(col.GetRules()) != 1 {
		t.Fatalf("update = %v, %v", col, err)
	}
	if _, err := c.DeleteCollection(ctx, &pb.DeleteCollectionRequest{Name: "lab"}); err != nil {
		t.Fatal(err)
	}
	d, err := s.Store.GetDevice(ctx, "d2")
	if err != nil || len(d.Collections) != 0 {
		t.Fatalf("after delete: %+v, %v", d, err)
	}
}

// Batches through the real batch service: every device's outcome is
// recorded, refusals at once; counters are exact; WatchBatch streams
// until done; cancel stops queued jobs.
func TestBatchLifecycle(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	ctx := context.Background()
	c := s.Dial(t, s.Operate)
	s.Device(t, "d1", "pc1", "10.0.0.1", domain.StatusNotProvisioned)
	s.Device(t, "d2", "pc2", "10.0.0.2", domain.StatusNotProvisioned)
	s.Device(t, "d3", "pc3", "10.0.0.3", domain.StatusNotSupported)

	b, err := c.StartBatch(ctx, &pb.StartBatchRequest{Kind: pb.JobKind_JOB_KIND_PROVISION, DeviceIds: []string{"d1", "pc2.amt.test", "10.0.0.3"}})
	if err != nil {
		t.Fatal(err)
	}
	if b.GetTotal() != 3 || b.GetFailed() != 1 || b.GetDone() || b.GetRequester() != "ops" || b.GetOrigin() != "admin" {
		t.Fatalf("batch = %v; want 3 jobs, d3 refused, requester ops", b)
	}
	jobs, err := c.ListBatchJobs(ctx, &pb.ListBatchJobsRequest{BatchId: b.GetId(), State: "failed"})
	if err != nil || len(jobs.GetJobs()) != 1 || jobs.GetJobs()[0].GetDeviceId() != "d3" || jobs.GetJobs()[0].GetErrorStep() != "refused" {
		t.Fatalf("failed jobs = %v, %v", jobs, err)
	}

	// A read token can watch; the stream follows the counters.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	stream, err := s.Dial(t, s.Read).WatchBatch(wctx, &pb.GetBatchRequest{Id: b.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.GetSucceeded() != 0 {
		t.Fatalf("first update = %v, %v", first, err)
	}
	if _, err := s.Store.FinishJob(ctx, b.GetId(), domain.JobID(b.GetId(), "d1"), domain.JobSucceeded, "", ""); err != nil {
		t.Fatal(err)
	}
	second, err := stream.Recv()
	if err != nil || second.GetSucceeded() != 1 || second.GetDone() {
		t.Fatalf("second update = %v, %v", second, err)
	}
	if _, err := s.Store.FinishJob(ctx, b.GetId(), domain.JobID(b.GetId(), "d2"), domain.JobFailed, "phase2", "boom"); err != nil {
		t.Fatal(err)
	}
	last, err := stream.Recv()
	if err != nil || !last.GetDone() || last.GetSucceeded() != 1 || last.GetFailed() != 2 {
		t.Fatalf("last update = %v, %v", last, err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after done: %v, want EOF", err)
	}

	// Cancel: queued jobs end at once and are counted.
	b2, err := c.StartBatch(ctx, &pb.StartBatchRequest{Kind: pb.JobKind_JOB_KIND_PROVISION, DeviceIds: []string{"d1", "d2"}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.CancelBatch(ctx, &pb.GetBatchRequest{Id: b2.GetId()})
	if err != nil || got.GetCancelled() != 2 || !got.GetDone() || !got.GetCancelRequested() {
		t.Fatalf("cancel = %v, %v", got, err)
	}
	list, err := c.ListBatches(ctx, &pb.ListBatchesRequest{})
	if err != nil || len(list.GetBatches()) != 2 {
		t.Fatalf("list = %v, %v", list, err)
	}
}

func TestUpdateWarns8021X(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	ctx := context.Background()
	d := s.Device(t, "d1", "pc1", "10.0.0.1", domain.StatusProvisioned)
	d.Link = domain.LinkWired8021X
	if err := s.Store.PutDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	c := s.Dial(t, s.Operate)
	b, err := c.StartBatch(ctx, &pb.StartBatchRequest{Kind: pb.JobKind_JOB_KIND_UPDATE, DeviceIds: []string{"d1"}})
	if err != nil || len(b.GetWarnings()) != 1 || !strings.Contains(b.GetWarnings()[0], "802.1X") {
		t.Fatalf("update = %v, %v; want an 802.1X warning", b, err)
	}
	if _, err := c.CancelBatch(ctx, &pb.GetBatchRequest{Id: b.GetId()}); err != nil {
		t.Fatal(err)
	}
	b, err = c.StartBatch(ctx, &pb.StartBatchRequest{Kind: pb.JobKind_JOB_KIND_UPDATE, DeviceIds: []string{"d1"}, Confirm_8021X: true})
	if err != nil || len(b.GetWarnings()) != 0 || b.GetOptions()["confirm_8021x"] != "true" {
		t.Fatalf("confirmed update = %v, %v", b, err)
	}
}

// S19 in order: begin marks and removes; complete is refused until the
// removal is done, then renames and provisions again.
func TestRename(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	ctx := context.Background()
	c := s.Dial(t, s.Operate)
	s.Device(t, "d1", "old", "10.0.0.1", domain.StatusProvisioned)

	b, err := c.BeginRename(ctx, &pb.BeginRenameRequest{DeviceIds: []string{"old.amt.test"}})
	if err != nil {
		t.Fatal(err)
	}
	if b.GetKind() != pb.JobKind_JOB_KIND_REMOVE_ALL || b.GetOrigin() != "rename" || b.GetTotal() != 1 || b.GetFailed() != 0 {
		t.Fatalf("rename batch = %v", b)
	}
	d, _ := s.Store.GetDevice(ctx, "d1")
	if !d.RenamePending || !d.SuppressAutoProvision {
		t.Fatalf("device after begin = %+v", d)
	}
	// Provisioning is refused while the rename is pending (recorded, not lost).
	p, err := c.StartBatch(ctx, &pb.StartBatchRequest{Kind: pb.JobKind_JOB_KIND_PROVISION, DeviceIds: []string{"d1"}})
	if err != nil || p.GetFailed() != 1 {
		t.Fatalf("provision while pending = %v, %v; want refused", p, err)
	}
	_, err = c.CompleteRename(ctx, &pb.CompleteRenameRequest{DeviceId: "d1", NewFqdn: "new.corp.test"})
	wantCode(t, err, codes.FailedPrecondition, "not removed yet")

	// The removal finishes: the device is no longer provisioned.
	if _, err := s.Store.FinishJob(ctx, b.GetId(), domain.JobID(b.GetId(), "d1"), domain.JobSucceeded, "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Store.UpdateDevice(ctx, "d1", func(d *domain.Device) error { d.Status = domain.StatusNotProvisioned; return nil }); err != nil {
		t.Fatal(err)
	}
	b2, err := c.CompleteRename(ctx, &pb.CompleteRenameRequest{DeviceId: "d1", NewFqdn: "new.corp.test"})
	if err != nil {
		t.Fatal(err)
	}
	if b2.GetKind() != pb.JobKind_JOB_KIND_PROVISION || b2.GetFailed() != 0 || b2.GetTotal() != 1 {
		t.Fatalf("provision after rename = %v", b2)
	}
	d, _ = s.Store.GetDevice(ctx, "d1")
	if d.RenamePending || d.SuppressAutoProvision || d.FQDN() != "new.corp.test" {
		t.Fatalf("device after complete = %+v", d)
	}
	if _, err := c.GetDevice(ctx, &pb.GetDeviceRequest{Id: "new.corp.test"}); err != nil {
		t.Fatalf("new name not indexed: %v", err)
	}
	_, err = c.CompleteRename(ctx, &pb.CompleteRenameRequest{DeviceId: "d1", NewFqdn: "x.corp.test"})
	wantCode(t, err, codes.FailedPrecondition, "no rename pending")
}

func TestSuppressAutoProvision(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	ctx := context.Background()
	c := s.Dial(t, s.Operate)
	s.Device(t, "d1", "pc1", "10.0.0.1", domain.StatusNotProvisioned)
	for _, tc := range []struct {
		name     string
		suppress bool
		changed  int32
	}{{"suppress", true, 1}, {"again", true, 0}, {"lift", false, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := c.SetAutoProvisionSuppressed(ctx, &pb.SetAutoProvisionSuppressedRequest{DeviceIds: []string{"d1"}, Suppressed: tc.suppress})
			if err != nil || r.GetChanged() != tc.changed {
				t.Fatalf("= %v, %v; want %d changed", r, err, tc.changed)
			}
			d, _ := s.Store.GetDevice(ctx, "d1")
			if d.SuppressAutoProvision != tc.suppress {
				t.Fatalf("device = %+v", d)
			}
		})
	}
	log, err := c.GetDeviceLog(ctx, &pb.GetDeviceLogRequest{Id: "d1"})
	if err != nil || len(log.GetEvents()) != 2 || !strings.Contains(log.GetEvents()[0].GetDetail(), "by ops") {
		t.Fatalf("log = %v, %v", log, err)
	}
}

type fakeSweeper struct{}

func (f fakeSweeper) SweepNow(_ context.Context, requester string) (domain.Batch, error) {
	return domain.Batch{ID: "sweep-1", Kind: domain.KindProvision, Origin: "sweep", Requester: requester}, nil
}

func TestSweepNow(t *testing.T) {
	s := admintest.Start(t, admintest.Options{Sweeper: fakeSweeper{}})
	b, err := s.Dial(t, s.Operate).SweepNow(context.Background(), &pb.SweepNowRequest{})
	if err != nil || b.GetId() != "sweep-1" || b.GetOrigin() != "sweep" || b.GetRequester() != "ops" {
		t.Fatalf("sweep = %v, %v", b, err)
	}
	_, err = s.Dial(t, s.Read).SweepNow(context.Background(), &pb.SweepNowRequest{})
	wantCode(t, err, codes.PermissionDenied)
}
