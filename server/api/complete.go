package api

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/wire"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/discover"
	"github.com/amtops/amtops/server/phase1"
	"github.com/amtops/amtops/server/store"
)

// Complete records a job's result.
//
// The lease is proven (Extend) before any effect, so a stale token changes
// nothing; the effects are idempotent and FinishJob counts a job once, so
// a Complete repeated after a crash between the effects and the queue's
// Complete is harmless; a Complete repeated after the queue's Complete
// answers already_completed and does nothing.
//
// Failures: a permanent failure, or one on the last allowed attempt, ends
// the job (FinishJob failed). Otherwise the job is parked for RetryDelay
// (Defer) and the reaper gives it out again, counting the attempt
// (and dead-lettering it at the queue's MaxAttempts, see OnDead).
func (s *AgentService) Complete(ctx context.Context, req *pb.CompleteRequest) (*pb.CompleteResponse, error) {
	a, err := agentFrom(ctx)
	if err != nil {
		return nil, err
	}
	p, batch, _, err := leaseRef(a, req.GetLease())
	if err != nil {
		return nil, ToStatus(err)
	}
	jobID, token := req.GetLease().GetJobId(), req.GetLease().GetToken()
	log := s.opts.Log.With().Str("agent", a.ID).Str("job", jobID).Logger()

	if !req.GetSuccess() && req.GetErrorStep() == ReleaseStep {
		err := s.q.Release(ctx, p, jobID, token)
		if errors.Is(err, store.ErrAlreadyCompleted) {
			return &pb.CompleteResponse{AlreadyCompleted: true}, nil
		}
		if err != nil {
			return nil, ToStatus(err)
		}
		log.Info().Msg("job released by agent")
		return &pb.CompleteResponse{}, nil
	}

	if _, err := s.q.Extend(ctx, p, jobID, token, s.opts.LeaseTTL); err != nil {
		if errors.Is(err, store.ErrAlreadyCompleted) {
			return &pb.CompleteResponse{AlreadyCompleted: true}, nil
		}
		return nil, ToStatus(err)
	}
	if discover.IsJobID(jobID) {
		return s.completeDiscover(ctx, log, p, jobID, token, req)
	}
	job, err := s.st.GetJob(ctx, batch, jobID)
	if err != nil {
		return nil, ToStatus(err)
	}

	if req.GetSuccess() {
		if err := s.succeed(ctx, a, job, req); err != nil {
			return nil, ToStatus(err)
		}
		if err := s.q.Complete(ctx, p, jobID, token); err != nil {
			if errors.Is(err, store.ErrAlreadyCompleted) {
				return &pb.CompleteResponse{AlreadyCompleted: true}, nil
			}
			return nil, ToStatus(err)
		}
		log.Info().Str("device", job.DeviceID).Msg("phase 2 succeeded")
		return &pb.CompleteResponse{}, nil
	}

	qj, err := s.q.Job(ctx, p, jobID)
	if err != nil {
		return nil, ToStatus(err)
	}
	final := req.GetPermanent() || qj.Attempts >= s.opts.MaxAttempts
	if err := s.recordFailure(ctx, a, job, req, final, qj.Attempts); err != nil {
		return nil, ToStatus(err)
	}
	if !final {
		if err := s.q.Defer(ctx, p, jobID, token, s.opts.RetryDelay); err != nil {
			return nil, ToStatus(err)
		}
		log.Info().Str("device", job.DeviceID).Int("attempt", qj.Attempts).Str("step", req.GetErrorStep()).Msg("phase 2 failed, will retry")
		return &pb.CompleteResponse{}, nil
	}
	if _, err := s.st.FinishJob(ctx, batch, jobID, domain.JobFailed, req.GetErrorStep(), req.GetError()); err != nil {
		return nil, ToStatus(err)
	}
	if err := s.q.Complete(ctx, p, jobID, token); err != nil {
		if errors.Is(err, store.ErrAlreadyCompleted) {
			return &pb.CompleteResponse{AlreadyCompleted: true}, nil
		}
		return nil, ToStatus(err)
	}
	log.Info().Str("device", job.DeviceID).Str("step", req.GetErrorStep()).Msg("phase 2 failed")
	return &pb.CompleteResponse{}, nil
}

// completeDiscover ends an on-demand sweep (server/discover). It belongs
// to no batch and the agent already reported its findings through
// ReportDiscovery, so only the lease is settled: a retryable failure
// comes back after RetryDelay like any job, anything else is done.
func (s *AgentService) completeDiscover(ctx context.Context, log zerolog.Logger, p netip.Prefix, jobID, token string, req *pb.CompleteRequest) (*pb.CompleteResponse, error) {
	if !req.GetSuccess() && !req.GetPermanent() {
		qj, err := s.q.Job(ctx, p, jobID)
		if err != nil {
			return nil, ToStatus(err)
		}
		if qj.Attempts < s.opts.MaxAttempts {
			if err := s.q.Defer(ctx, p, jobID, token, s.opts.RetryDelay); err != nil {
				return nil, ToStatus(err)
			}
			log.Info().Str("subnet", p.String()).Int("attempt", qj.Attempts).Str("step", req.GetErrorStep()).
				Str("error", req.GetError()).Msg("discovery failed, will retry")
			return &pb.CompleteResponse{}, nil
		}
	}
	if err := s.q.Complete(ctx, p, jobID, token); err != nil {
		if errors.Is(err, store.ErrAlreadyCompleted) {
			return &pb.CompleteResponse{AlreadyCompleted: true}, nil
		}
		return nil, ToStatus(err)
	}
	if req.GetSuccess() {
		log.Info().Str("subnet", p.String()).Msg("discovery job completed")
	} else {
		log.Warn().Str("subnet", p.String()).Str("step", req.GetErrorStep()).Str("error", req.GetError()).Msg("discovery job failed")
	}
	return &pb.CompleteResponse{}, nil
}

func (s *AgentService) succeed(ctx context.Context, a domain.Agent, job domain.Job, req *pb.CompleteRequest) error {
	now := s.opts.Clock().UTC()
	f := req.GetFacts()
	_, err := s.st.UpdateDevice(ctx, job.DeviceID, func(d *domain.Device) error {
		switch job.Kind {
		case domain.KindProvision, domain.KindUpdate:
			d.Status, d.State = domain.StatusProvisioned, domain.ProvisioningPost
			if job.Kind == domain.KindProvision || d.ProvisionedAt.IsZero() {
				d.ProvisionedAt = now
			}
		case domain.KindRemoveConfig, domain.KindRemoveAll:
			d.Status, d.State, d.ProvisionedAt = domain.StatusNotProvisioned, domain.ProvisioningPre, time.Time{}
		}
		applyFacts(d, f)
		d.LastError, d.LastErrorStep = "", ""
		d.Warnings = append([]string(nil), req.GetWarnings()...)
		return nil
	})
	if err != nil && !errors.Is(err, domain.ErrNotFound) {
		return err
	}
	if job.Kind == domain.KindProvision || job.Kind == domain.KindUpdate {
		certs, err := s.st.CertificatesByDevice(ctx, job.DeviceID)
		if err != nil {
			return err
		}
		for _, c := range certs {
			if c.JobID == job.ID && c.Status == domain.CertIssued {
				if _, err := s.st.UpdateCertificateStatus(ctx, c.Serial, domain.CertInstalled, domain.ReasonUnspecified, now); err != nil {
					return err
				}
			}
		}
	}
	if job.Kind == domain.KindProvision {
		// The device now has the pending password: make it the current one.
		pw, err := s.st.GetSecret(ctx, phase1.PendingPasswordSecret(job.DeviceID))
		switch {
		case err == nil:
			if err := s.st.PutSecret(ctx, phase1.AdminPasswordSecret(job.DeviceID), pw); err != nil {
				return err
			}
			if err := s.st.DeleteSecret(ctx, phase1.PendingPasswordSecret(job.DeviceID)); err != nil {
				return err
			}
		case !errors.Is(err, domain.ErrNotFound):
			return err
		}
	}
	if job.Kind == domain.KindRemoveAll {
		// The controller is back to factory state: its admin password
		// and Kerberos key protect nothing any more, so keep neither.
		for _, name := range []string{phase1.AdminPasswordSecret(job.DeviceID), phase1.KerberosSecret(job.DeviceID)} {
			if err := s.st.DeleteSecret(ctx, name); err != nil {
				return err
			}
		}
	}
	for _, purpose := range []domain.CertPurpose{domain.PurposeServerAuth, domain.Purpose8021X, domain.PurposeWireless} {
		if err := s.st.DeleteSecret(ctx, phase1.KeySecret(job.ID, purpose)); err != nil {
			return err
		}
	}
	for _, name := range []string{phase1.SignOnDeviceSecret(job.ID), signedSecret(job.ID)} {
		if err := s.st.DeleteSecret(ctx, name); err != nil {
			return err
		}
	}
	if _, err := s.st.FinishJob(ctx, job.BatchID, job.ID, domain.JobSucceeded, "", ""); err != nil {
		return err
	}
	return s.st.AppendEvent(ctx, domain.OperationEvent{DeviceID: job.DeviceID, JobID: job.ID, Phase: 2, Step: "complete",
		Outcome: domain.OutcomeOK, Detail: string(job.Kind) + " succeeded", Actor: a.ID, Time: now})
}

func (s *AgentService) recordFailure(ctx context.Context, a domain.Agent, job domain.Job, req *pb.CompleteRequest, final bool, attempt int) error {
	now := s.opts.Clock().UTC()
	msg := req.GetError()
	if msg == "" {
		msg = "failed"
	}
	_, err := s.st.UpdateDevice(ctx, job.DeviceID, func(d *domain.Device) error {
		applyFacts(d, req.GetFacts())
		d.LastError, d.LastErrorStep = msg, req.GetErrorStep()
		return nil
	})
	if err != nil && !errors.Is(err, domain.ErrNotFound) {
		return err
	}
	out, detail := domain.OutcomeRetrying, fmt.Sprintf("attempt %d failed at %s: %s", attempt, req.GetErrorStep(), msg)
	if final {
		out = domain.OutcomeFailed
	}
	return s.st.AppendEvent(ctx, domain.OperationEvent{DeviceID: job.DeviceID, JobID: job.ID, Phase: 2, Step: "complete",
		Outcome: out, Detail: detail, Actor: a.ID, Time: now})
}

func applyFacts(d *domain.Device, f *pb.DeviceFacts) {
	if f == nil {
		return
	}
	if f.GetUuid() != "" && d.UUID == "" {
		d.UUID = f.GetUuid()
	}
	if f.GetAmtVersion() != "" {
		d.AMTVersion = f.GetAmtVersion()
	}
	if l := wire.LinkFrom(f.GetLink()); l != "" {
		d.Link = l
	}
}

// OnDead records jobs the reaper dead-lettered (their leases expired
// MaxAttempts times) as failed; wire it into dispatch.ReaperOptions.OnDead.
func (s *AgentService) OnDead(ctx context.Context, subnet netip.Prefix, jobIDs []string) error {
	var errs []error
	for _, id := range jobIDs {
		if discover.IsJobID(id) {
			// A sweep has no batch to fail; the next request starts anew.
			s.opts.Log.Warn().Str("job", id).Str("subnet", subnet.String()).Msg("discovery job dead-lettered")
			continue
		}
		batch, _, ok := cutJobID(id)
		if !ok {
			continue
		}
		if _, err := s.st.FinishJob(ctx, batch, id, domain.JobFailed, "lease",
			"lease expired "+strconv.Itoa(s.opts.MaxAttempts)+" times on "+subnet.String()); err != nil && !errors.Is(err, domain.ErrNotFound) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// cutJobID splits a domain.JobID into batch and device; batch IDs hold no
// ':' while device IDs may (ip-<IPv6>).
func cutJobID(id string) (batch, device string, ok bool) {
	batch, device, ok = strings.Cut(id, ":")
	return batch, device, ok && batch != "" && device != ""
}
