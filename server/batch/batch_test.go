package batch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/secrets"
	"github.com/amtops/amtops/internal/testpeers"
	"github.com/amtops/amtops/server/jobs"
	"github.com/amtops/amtops/server/store"
)

type env struct {
	ctx context.Context
	st  *store.Store
	svc *Service
	ins *asynq.Inspector
}

// newEnv runs the service against a private redis-server with the real
// phase-1 enqueuer, so what is queued is read back from asynq itself.
func newEnv(t *testing.T) *env {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: testpeers.Redis(t)})
	t.Cleanup(func() { _ = rdb.Close() })
	sealer, err := secrets.New(bytes.Repeat([]byte{3}, 32))
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(rdb, sealer, store.Options{})
	client := asynq.NewClientFromRedisClient(rdb)
	ins := asynq.NewInspectorFromRedisClient(rdb)
	svc := New(st, jobs.NewEnqueuer(client, 3, 0), zerolog.Nop())
	e := &env{ctx: context.Background(), st: st, svc: svc, ins: ins}
	for i, status := range []domain.Status{domain.StatusNotProvisioned, domain.StatusNotProvisioned, domain.StatusProvisioned,
		domain.StatusNotProvisioned, domain.StatusDetected} {
		ip := netip.AddrFrom4([4]byte{10, 0, 0, byte(10 + i)})
		d := domain.Device{ID: fmt.Sprintf("d%d", i), HostName: fmt.Sprintf("pc%d", i), Domain: "amt.test", IP: ip,
			Subnet: netip.MustParsePrefix("10.0.0.0/24"), Status: status, RenamePending: i == 3}
		if err := st.PutDevice(e.ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// queued lists the job IDs of the phase-1 tasks waiting in queue.
func (e *env) queued(t *testing.T, queue string) []string {
	t.Helper()
	tasks, err := e.ins.ListPendingTasks(queue, asynq.PageSize(1000))
	if err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
		t.Fatal(err)
	}
	var ids []string
	for _, ti := range tasks {
		ids = append(ids, strings.TrimPrefix(ti.ID, "p1:"))
	}
	return ids
}

func (e *env) job(t *testing.T, b domain.Batch, device string) domain.Job {
	t.Helper()
	j, err := e.st.GetJob(e.ctx, b.ID, domain.JobID(b.ID, device))
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func TestStartRefusesBadRequests(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name  string
		req   Request
		field string
	}{
		{"unknown kind", Request{Kind: "reboot", DeviceIDs: []string{"d0"}}, "kind"},
		{"discovery is not a batch", Request{Kind: domain.KindDiscover, DeviceIDs: []string{"d0"}}, "kind"},
		{"nothing selected", Request{Kind: domain.KindProvision}, "devices"},
		{"unknown device", Request{Kind: domain.KindProvision, DeviceIDs: []string{"d0", "nope"}}, `"nope"`},
		{"unknown collection", Request{Kind: domain.KindProvision, Collection: "ghost"}, "ghost"},
		{"option of another kind", Request{Kind: domain.KindProvision, DeviceIDs: []string{"d0"},
			Options: map[string]string{"suppress_auto": "true"}}, "options.suppress_auto"},
		{"option not boolean", Request{Kind: domain.KindRemoveAll, DeviceIDs: []string{"d2"},
			Options: map[string]string{"suppress_auto": "yes"}}, "options.suppress_auto"},
		{"colon in id", Request{Kind: domain.KindProvision, DeviceIDs: []string{"d0"}, ID: "a:b"}, "batch.id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := e.svc.Start(e.ctx, tc.req)
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("err %v, want one naming %s", err, tc.field)
			}
		})
	}
	if ids, _ := e.st.ListBatches(e.ctx, 10); len(ids) != 0 {
		t.Fatalf("bad requests created batches %v", ids)
	}
}

func TestStartQueuesEligibleAndRecordsRefusals(t *testing.T) {
	e := newEnv(t)
	b, created, err := e.svc.Start(e.ctx, Request{Kind: domain.KindProvision, DeviceIDs: []string{"d0", "d1", "d3", "d4", "d0"}, Requester: "alice"})
	if err != nil || !created {
		t.Fatalf("start: %v %v", created, err)
	}
	if b.Total != 4 || b.Failed != 1 || b.Origin != "admin" || b.Requester != "alice" {
		t.Fatalf("batch %+v: want 4 jobs, the rename-pending one failed", b)
	}
	if j := e.job(t, b, "d3"); j.State != domain.JobFailed || j.ErrorStep != "refused" || !strings.Contains(j.LastError, "rename") {
		t.Fatalf("rename-pending job %+v", j)
	}
	got := e.queued(t, jobs.QueueCritical) // a handful of devices goes ahead of bulk work
	want := []string{domain.JobID(b.ID, "d0"), domain.JobID(b.ID, "d1"), domain.JobID(b.ID, "d4")}
	if fmt.Sprint(sorted(got)) != fmt.Sprint(want) {
		t.Fatalf("queued %v, want %v", got, want)
	}
	evs, _ := e.st.Events(e.ctx, "d3", 10)
	if len(evs) != 1 || evs[0].Step != "refused" {
		t.Fatalf("d3 log %+v", evs)
	}

	t.Run("a busy device is refused until its job ends", func(t *testing.T) {
		b2, _, err := e.svc.Start(e.ctx, Request{Kind: domain.KindProvision, DeviceIDs: []string{"d0"}})
		if err != nil {
			t.Fatal(err)
		}
		if j := e.job(t, b2, "d0"); j.State != domain.JobFailed || !strings.Contains(j.LastError, "busy with job "+domain.JobID(b.ID, "d0")) {
			t.Fatalf("second job %+v", j)
		}
		// A repeated Hello's batch: the device is being acted on, no failure.
		bh, _, err := e.svc.Start(e.ctx, Request{Kind: domain.KindProvision, DeviceIDs: []string{"d0"}, Origin: "hello"})
		if err != nil {
			t.Fatal(err)
		}
		if j := e.job(t, bh, "d0"); j.State != domain.JobCancelled || !strings.Contains(j.LastError, "a repeated Hello") {
			t.Fatalf("repeated Hello's job %+v, want cancelled", j)
		}
		if _, err := e.st.FinishJob(e.ctx, b.ID, domain.JobID(b.ID, "d0"), domain.JobSucceeded, "", ""); err != nil {
			t.Fatal(err)
		}
		b3, _, err := e.svc.Start(e.ctx, Request{Kind: domain.KindProvision, DeviceIDs: []string{"d0"}})
		if err != nil {
			t.Fatal(err)
		}
		if j := e.job(t, b3, "d0"); j.State != domain.JobQueued {
			t.Fatalf("job after the holder ended %+v", j)
		}
	})

	t.Run("update and removal need a provisioned device", func(t *testing.T) {
		b, _, err := e.svc.Start(e.ctx, Request{Kind: domain.KindUpdate, DeviceIDs: []string{"d1", "d2"}})
		if err != nil {
			t.Fatal(err)
		}
		if j := e.job(t, b, "d2"); j.State != domain.JobQueued {
			t.Fatalf("provisioned device refused: %+v", j)
		}
		if j := e.job(t, b, "d1"); j.State != domain.JobFailed || !strings.Contains(j.LastError, "not provisioned") {
			t.Fatalf("not-provisioned device %+v", j)
		}
	})
}

func TestStartIsIdempotentAndResumes(t *testing.T) {
	e := newEnv(t)
	// A crash right after the batch was written leaves its jobs queued
	// with nothing in asynq; Start with the same ID, or Recover, finishes.
	b := domain.Batch{ID: "sweep-1", Kind: domain.KindProvision, Origin: "sweep", Total: 2}
	crashed := []domain.Job{{ID: domain.JobID("sweep-1", "d0"), DeviceID: "d0"}, {ID: domain.JobID("sweep-1", "d1"), DeviceID: "d1"}}
	if _, err := e.st.CreateBatch(e.ctx, b, crashed); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Recover(e.ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.queued(t, jobs.QueueSweep); len(got) != 2 {
		t.Fatalf("recover queued %v", got)
	}
	for range 2 { // a second replica in the same slot
		got, created, err := e.svc.Start(e.ctx, Request{Kind: domain.KindProvision, DeviceIDs: []string{"d0", "d1"}, ID: "sweep-1", Origin: "sweep"})
		if err != nil || created || got.Total != 2 {
			t.Fatalf("repeat start: %+v %v %v", got, created, err)
		}
	}
	if got := e.queued(t, jobs.QueueSweep); len(got) != 2 {
		t.Fatalf("repeat starts queued %v, want the same 2 tasks", got)
	}
}

func TestCollectionSelectionAndCancel(t *testing.T) {
	e := newEnv(t)
	c := domain.Collection{Name: "lab", Rules: []domain.CollectionRule{{Subnet: netip.MustParsePrefix("10.0.0.0/16"), NamePattern: "PC[014]"}}}
	if err := e.st.PutCollection(e.ctx, c); err != nil {
		t.Fatal(err)
	}
	b, _, err := e.svc.Start(e.ctx, Request{Kind: domain.KindProvision, Collection: "lab", DeviceIDs: []string{"d1"}})
	if err != nil {
		t.Fatal(err)
	}
	if b.Total != 3 || len(e.queued(t, jobs.QueueCritical)) != 3 { // d0, d4 by rule and d1 by name
		t.Fatalf("collection batch %+v queued %v", b, e.queued(t, jobs.QueueCritical))
	}
	if err := e.st.MoveJob(e.ctx, b.ID, domain.JobID(b.ID, "d0"), domain.JobPhase1); err != nil {
		t.Fatal(err)
	}
	n, err := e.svc.Cancel(e.ctx, b.ID)
	if err != nil || n != 2 {
		t.Fatalf("cancel: %d %v, want 2", n, err)
	}
	got, _ := e.st.GetBatch(e.ctx, b.ID)
	if got.Cancelled != 2 || got.Pending() != 1 || !got.CancelRequested {
		t.Fatalf("after cancel %+v", got)
	}
	if _, err := e.svc.Cancel(e.ctx, "nope"); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("cancel unknown: %v", err)
	}
}

func sorted(xs []string) []string {
	out := slices.Clone(xs)
	slices.Sort(out)
	return out
}

// A batch warns from its start about the subnets whose agent is gone,
// naming how many of its devices wait there; a live agent's subnet is fine.
func TestStartWarnsAboutSubnetsWithoutLiveAgent(t *testing.T) {
	e := newEnv(t)
	e.svc.WarnUnserved(time.Minute)
	other := domain.Device{ID: "d9", HostName: "pc9", Domain: "amt.test", IP: netip.MustParseAddr("10.9.0.5"),
		Subnet: netip.MustParsePrefix("10.9.0.0/24"), Status: domain.StatusNotProvisioned}
	if err := e.st.PutDevice(e.ctx, other); err != nil {
		t.Fatal(err)
	}
	for _, a := range []domain.Agent{
		{ID: "live", Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}, LastHeartbeat: time.Now()},
		{ID: "gone", Subnets: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24")}, LastHeartbeat: time.Now().Add(-time.Hour)},
	} {
		if err := e.st.PutAgent(e.ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	b, _, err := e.svc.Start(e.ctx, Request{Kind: domain.KindProvision, DeviceIDs: []string{"d0", "d1", "d9"}, Origin: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Warnings) != 1 || !strings.Contains(b.Warnings[0], "no live agent serves 10.9.0.0/24: its 1 jobs") {
		t.Fatalf("warnings %q, want one for 10.9.0.0/24", b.Warnings)
	}
	if got, err := e.st.GetBatch(e.ctx, b.ID); err != nil || len(got.Warnings) != 1 {
		t.Fatalf("stored batch warnings %q (%v), want the same one", got.Warnings, err)
	}
}
