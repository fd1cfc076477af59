package api_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/server/api/apitest"
	"github.com/amtops/amtops/server/dispatch"
)

// A job queued for a subnet no agent serves fails after the deadline with
// a reason naming the subnet and the setting: its batch ends, its device
// and log say why. A job on a served subnet waits on.
func TestUnservedJobFailsWithReason(t *testing.T) {
	s := apitest.Start(t, apitest.Options{})
	ctx := context.Background()
	s.Enroll(t, "10.1.5.0/24")
	orphan := s.Job(t, "bu", "10.1.6.0/24", "10.1.6.9", domain.KindProvision)
	served := s.Job(t, "bs", "10.1.5.0/24", "10.1.5.9", domain.KindProvision)
	agents := func(ctx context.Context) ([]domain.Agent, error) {
		as, err := s.Store.ListAgents(ctx)
		for i := range as {
			as[i].LastHeartbeat = time.Now().Add(time.Hour) // live at the check's clock
		}
		return as, err
	}
	u := dispatch.NewUnserved(s.Queue, dispatch.UnservedOptions{Deadline: 30 * time.Minute, LiveWithin: 2 * time.Minute,
		Clock: func() time.Time { return time.Now().Add(time.Hour) }, Agents: agents, OnFailed: s.Jobs.FailUnserved})
	if err := u.Once(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := s.Store.GetBatch(ctx, "bu")
	if err != nil || b.Failed != 1 {
		t.Fatalf("batch bu: %+v %v; want its job failed", b, err)
	}
	j, _ := s.Store.GetJob(ctx, "bu", orphan)
	if j.State != domain.JobFailed || j.ErrorStep != "unserved" || !strings.HasPrefix(j.LastError, "no live agent serves 10.1.6.0/24\n") ||
		!strings.Contains(j.LastError, "phase2.unserved_deadline") {
		t.Fatalf("job %s at %q: %q", j.State, j.ErrorStep, j.LastError)
	}
	d, _ := s.Store.GetDevice(ctx, j.DeviceID)
	if d.LastError != j.LastError || d.LastErrorStep != "unserved" {
		t.Errorf("device records %q at %q", d.LastError, d.LastErrorStep)
	}
	evs, _ := s.Store.Events(ctx, d.ID, 1)
	if len(evs) != 1 || evs[0].Outcome != domain.OutcomeFailed || !strings.Contains(evs[0].Detail, "no live agent serves 10.1.6.0/24; details:") {
		t.Errorf("log %v", evs)
	}
	if j, _ := s.Store.GetJob(ctx, "bs", served); j.State == domain.JobFailed {
		t.Errorf("a job on a served subnet failed: %q", j.LastError)
	}
}
