package api_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/api/apitest"
	"github.com/amtops/amtops/server/discover"
	"github.com/amtops/amtops/server/jobs"
)

// TestCompleteDiscoverJob: discover jobs have no batch; Complete settles
// only their lease, retrying transient failures like any job.
func TestCompleteDiscoverJob(t *testing.T) {
	s := apitest.Start(t, apitest.Options{Jobs: jobs.Config{RetryDelay: time.Minute, MaxAttempts: 3}})
	ctx := context.Background()
	subnet := netip.MustParsePrefix("127.77.250.0/24")
	c, _ := s.Enroll(t, subnet.String())
	slot := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

	cases := []struct {
		name      string
		req       *pb.CompleteRequest
		wantState string
	}{
		{name: "success", req: &pb.CompleteRequest{Result: pb.CompleteResult_COMPLETE_RESULT_SUCCEEDED}, wantState: "completed"},
		{name: "permanent failure", req: &pb.CompleteRequest{ErrorStep: "discover", Error: "bad subnet", Result: pb.CompleteResult_COMPLETE_RESULT_FAILED_PERMANENT}, wantState: "completed"},
		{name: "transient failure is retried", req: &pb.CompleteRequest{ErrorStep: "discover", Error: "server away", Result: pb.CompleteResult_COMPLETE_RESULT_FAILED}, wantState: "leased"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id, err := discover.Request(ctx, s.Queue, subnet, slot.Add(time.Duration(i)*time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.Lease(ctx, &pb.LeaseRequest{MaxJobs: 1, Wait: durationpb.New(time.Second)})
			if err != nil || len(resp.GetJobs()) != 1 {
				t.Fatalf("lease = %v, %v", resp.GetJobs(), err)
			}
			job := resp.GetJobs()[0]
			if job.GetKind() != pb.JobKind_JOB_KIND_DISCOVER || job.GetLease().GetJobId() != id {
				t.Fatalf("leased %v, want discover job %s", job, id)
			}
			// Heartbeats work on a job without a batch.
			hb, err := c.Heartbeat(ctx, &pb.HeartbeatRequest{Leases: []*pb.LeaseRef{job.GetLease()}})
			if err != nil || len(hb.GetLostJobIds())+len(hb.GetCancelledJobIds()) != 0 {
				t.Fatalf("heartbeat = %v, %v", hb, err)
			}
			tc.req.Lease = job.GetLease()
			cr, err := c.Complete(ctx, tc.req)
			if err != nil || cr.GetAlreadyCompleted() {
				t.Fatalf("complete = %v, %v", cr, err)
			}
			qj, err := s.Queue.Job(ctx, subnet, id)
			if err != nil || qj.State != tc.wantState {
				t.Fatalf("queue job = %+v, %v; want state %s", qj, err, tc.wantState)
			}
			if tc.wantState == "completed" {
				again, err := c.Complete(ctx, tc.req)
				if err != nil || !again.GetAlreadyCompleted() {
					t.Errorf("repeated complete = %v, %v; want already_completed", again, err)
				}
			}
		})
	}
}
