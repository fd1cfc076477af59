package api_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/api/apitest"
	"github.com/amtops/amtops/server/jobs"
)

// A job's record counts its phase-2 attempts as the operations log does:
// after the third failed lease the job says 3, and the log "attempt 3".
func TestPhase2AttemptsRecorded(t *testing.T) {
	s := apitest.Start(t, apitest.Options{Jobs: jobs.Config{RetryDelay: 50 * time.Millisecond, MaxAttempts: 3}, Reap: 50 * time.Millisecond})
	ctx := context.Background()
	c, _ := s.Enroll(t, "10.1.3.0/24")
	jobID := s.Job(t, "ba", "10.1.3.0/24", "10.1.3.20", domain.KindProvision)
	for attempt := 1; attempt <= 3; attempt++ {
		resp, err := c.Lease(ctx, &pb.LeaseRequest{MaxJobs: 1, Wait: durationpb.New(5 * time.Second)})
		if err != nil || len(resp.GetJobs()) != 1 {
			t.Fatalf("attempt %d: lease = %v, %v", attempt, resp.GetJobs(), err)
		}
		if _, err := c.Complete(ctx, &pb.CompleteRequest{Lease: resp.GetJobs()[0].GetLease(), ErrorStep: "tls", Error: "boom",
			Result: pb.CompleteResult_COMPLETE_RESULT_FAILED}); err != nil {
			t.Fatal(err)
		}
		j, err := s.Store.GetJob(ctx, "ba", jobID)
		if err != nil {
			t.Fatal(err)
		}
		if j.Phase2Attempts != attempt {
			t.Fatalf("after attempt %d the job records %d phase-2 attempts", attempt, j.Phase2Attempts)
		}
	}
	j, _ := s.Store.GetJob(ctx, "ba", jobID)
	evs, err := s.Store.Events(ctx, j.DeviceID, 1)
	if err != nil || len(evs) != 1 {
		t.Fatal(evs, err)
	}
	if want := fmt.Sprintf("attempt %d failed", j.Phase2Attempts); j.State != domain.JobFailed || !strings.Contains(evs[0].Detail, want) {
		t.Fatalf("job %s with %d attempts; last event %q, want %q", j.State, j.Phase2Attempts, evs[0].Detail, want)
	}
}
