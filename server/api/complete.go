package api

import (
	"context"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/wire"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/jobs"
)

// Completer settles a leased job with the agent's result (jobs.Service).
type Completer interface {
	Complete(ctx context.Context, agentID string, l domain.LeaseRef, r jobs.Result) (already bool, err error)
	// Finished reports a leased job whose result was recorded before, and
	// takes it off the queue.
	Finished(ctx context.Context, l domain.LeaseRef) (bool, error)
}

// Complete records a job's result (jobs.Service.Complete has the rules).
func (s *AgentService) Complete(ctx context.Context, req *pb.CompleteRequest) (*pb.CompleteResponse, error) {
	a, err := agentFrom(ctx)
	if err != nil {
		return nil, err
	}
	l, err := lease(a, req.GetLease())
	if err != nil {
		return nil, ToStatus(err)
	}
	r := jobs.Result{Outcome: wire.ResultFrom(req.GetResult()), Step: req.GetErrorStep(), Error: req.GetError(),
		Facts: wire.FactsFrom(req.GetFacts()), Warnings: req.GetWarnings()}
	if r.Outcome == "" {
		return nil, ToStatus(domain.InvalidField("result", req.GetResult().String(), "required"))
	}
	already, err := s.jobs.Complete(ctx, a.ID, l, r)
	if err != nil {
		return nil, ToStatus(err)
	}
	return &pb.CompleteResponse{AlreadyCompleted: already}, nil
}

// lease checks a LeaseRef as leaseRef does.
func lease(a domain.Agent, ref *pb.LeaseRef) (domain.LeaseRef, error) {
	p, _, _, err := leaseRef(a, ref)
	return domain.LeaseRef{Subnet: p, JobID: ref.GetJobId(), Token: ref.GetToken()}, err
}
