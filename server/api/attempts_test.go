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

// A failure reason is stored with its summary first, whether the agent
// sent one (this version) or only the chain (an older agent); the
// operations log keeps it on one line.
func TestFailureReasonSummaryFirst(t *testing.T) {
	s := apitest.Start(t, apitest.Options{Jobs: jobs.Config{RetryDelay: time.Second}})
	ctx := context.Background()
	c, _ := s.Enroll(t, "10.1.4.0/24")
	chain := `phase2: connect: tls: amt: get setup and configuration: wsman: post https://10.1.4.20:16993/wsman: dial tcp 10.1.4.20:16993: connect: connection refused`
	for _, sent := range []string{chain, "unreachable: 16993 refused\n" + chain} {
		batch := "bf" + fmt.Sprint(len(sent))
		s.Job(t, batch, "10.1.4.0/24", "10.1.4.20", domain.KindProvision)
		resp, err := c.Lease(ctx, &pb.LeaseRequest{MaxJobs: 1, Wait: durationpb.New(5 * time.Second)})
		if err != nil || len(resp.GetJobs()) != 1 {
			t.Fatalf("lease = %v, %v", resp.GetJobs(), err)
		}
		if _, err := c.Complete(ctx, &pb.CompleteRequest{Lease: resp.GetJobs()[0].GetLease(), ErrorStep: "connect", Error: sent,
			Result: pb.CompleteResult_COMPLETE_RESULT_FAILED_PERMANENT}); err != nil {
			t.Fatal(err)
		}
		d, _ := s.Store.GetDevice(ctx, resp.GetJobs()[0].GetDeviceId())
		if want := "unreachable: 16993 refused\n" + chain; d.LastError != want {
			t.Errorf("sent %q: device records %q", sent, d.LastError)
		}
		j, _ := s.Store.GetJob(ctx, batch, resp.GetJobs()[0].GetLease().GetJobId())
		if !strings.HasPrefix(j.LastError, "unreachable: 16993 refused\n") {
			t.Errorf("job records %q", j.LastError)
		}
		evs, _ := s.Store.Events(ctx, d.ID, 1)
		if len(evs) != 1 || strings.Contains(evs[0].Detail, "\n") || !strings.Contains(evs[0].Detail, "failed at connect: unreachable: 16993 refused; details: phase2: connect") {
			t.Errorf("log: %v", evs)
		}
	}
}
