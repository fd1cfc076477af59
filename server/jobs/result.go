package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/failure"
	"github.com/amtops/amtops/server/discover"
)

// The effects of a phase-2 result: what the agent's Complete, or the
// reaper's dead letter, does to the job, the device, its certificates and
// its secrets.

// Result is how the agent ended the job.
type Result struct {
	Outcome  domain.JobResult
	Step     string // the step that failed
	Error    string // never a secret
	Facts    *domain.DeviceFacts
	Warnings []string
}

// Complete records a job's result; already reports a job the queue had
// completed before, on which nothing was done.
//
// The lease is proven (Extend) before any effect, so a stale token changes
// nothing; the effects are idempotent and FinishJob counts a job once, so
// a Complete repeated after a crash between the effects and the queue's
// Complete is harmless.
//
// Failures: a permanent failure, or one on the last allowed attempt, ends
// the job (FinishJob failed). Otherwise the job is parked for RetryDelay
// (Defer) and the reaper gives it out again, counting the attempt
// (and dead-lettering it at the queue's MaxAttempts, see OnDead).
func (p *Service) Complete(ctx context.Context, agentID string, l domain.LeaseRef, r Result) (already bool, err error) {
	if !slices.Contains(domain.JobResults, r.Outcome) {
		return false, domain.InvalidField("result", string(r.Outcome), "one of succeeded, failed, failed-permanent, released, cancelled")
	}
	log := p.log.With().Str("agent", agentID).Str("job", l.JobID).Logger()
	if r.Outcome == domain.ResultReleased {
		if err := p.queue.Release(ctx, l.Subnet, l.JobID, l.Token); err != nil {
			return alreadyDone(err)
		}
		log.Info().Msg("job released by agent")
		return false, nil
	}
	if _, err := p.queue.Extend(ctx, l.Subnet, l.JobID, l.Token, p.cfg.LeaseTTL); err != nil {
		return alreadyDone(err)
	}
	// The lease is proven: the effects run to their end even if the agent
	// goes away meanwhile (a cut connection cancels ctx). Stopped half-way
	// they left the device provisioned and the job's marks deleted while
	// the job was neither finished nor off the queue, to be leased again
	// against a device it had provisioned (make chaos, partition).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), effectsTimeout)
	defer cancel()
	if discover.IsJobID(l.JobID) {
		return p.completeDiscover(ctx, log, l, r)
	}
	job, err := p.leasedJob(ctx, l)
	if err != nil {
		return false, err
	}
	qj, err := p.queue.Job(ctx, l.Subnet, l.JobID)
	if err != nil {
		return false, err
	}
	if err := p.store.NotePhase2Attempts(ctx, job.BatchID, job.ID, qj.Attempts); err != nil {
		return false, err
	}
	if r.Outcome == domain.ResultSucceeded {
		// The success first, then its effects: a crash among them leaves
		// the job leased again, and Finished completes them instead of
		// handing a provisioned device to an agent.
		b, err := json.Marshal(succeeding{Agent: agentID, Result: r})
		if err != nil {
			return false, err
		}
		if err := p.store.PutSecret(ctx, resultSecret(job.ID), b); err != nil {
			return false, err
		}
		if err := p.succeed(ctx, agentID, job, r); err != nil {
			return false, err
		}
		if err := p.queue.Complete(ctx, l.Subnet, l.JobID, l.Token); err != nil {
			return alreadyDone(err)
		}
		log.Info().Str("device", job.DeviceID).Msg("phase 2 succeeded")
		return false, nil
	}
	// Older agents send the bare chain: give it its summary line here.
	r.Error = failure.Of(r.Error)
	final := r.Outcome != domain.ResultFailed || qj.Attempts >= p.cfg.MaxAttempts
	if err := p.activatedAnyway(ctx, job, r); err != nil {
		return false, err
	}
	if err := p.recordFailure(ctx, agentID, job, r, final, qj.Attempts); err != nil {
		return false, err
	}
	if !final {
		if err := p.queue.Defer(ctx, l.Subnet, l.JobID, l.Token, p.cfg.RetryDelay); err != nil {
			return false, err
		}
		log.Info().Str("device", job.DeviceID).Int("attempt", qj.Attempts).Str("step", r.Step).Msg("phase 2 failed, will retry")
		return false, nil
	}
	if err := p.abandon(ctx, job.ID, job.DeviceID); err != nil {
		return false, err
	}
	if err := p.finish(ctx, job.Kind, job.BatchID, l.JobID, domain.JobFailed, failedStep(r), r.Error); err != nil {
		return false, err
	}
	if err := p.queue.Complete(ctx, l.Subnet, l.JobID, l.Token); err != nil {
		return alreadyDone(err)
	}
	log.Info().Str("device", job.DeviceID).Str("step", failedStep(r)).Msg("phase 2 failed")
	return false, nil
}

// succeeding is a success Complete is recording (resultSecret).
type succeeding struct {
	Agent  string `json:"agent"`
	Result Result `json:"result"`
}

// Finished reports a job leased again whose success was recorded already,
// completes that success's effects if a crash had stopped them, and
// settles the lease. Complete records the success before its effects and
// settles the lease last, so that a crash loses nothing; the job then
// comes back after its lease runs out, and without this check an agent
// worked the provisioned device again and recorded a failure beside the
// success (make chaos, server kill -9 mid-batch).
func (p *Service) Finished(ctx context.Context, l domain.LeaseRef) (bool, error) {
	if discover.IsJobID(l.JobID) {
		return false, nil
	}
	job, err := p.leasedJob(ctx, l)
	if err != nil {
		return false, ignoreNotFound(err)
	}
	if job.State.Final() {
		// A crash after the finish left the mark, which succeed deletes.
		if err := p.store.DeleteSecret(ctx, resultSecret(job.ID)); err != nil {
			p.log.Warn().Str("job", job.ID).Err(err).Msg("finished job's result mark not deleted")
		}
	} else {
		b, err := p.store.GetSecret(ctx, resultSecret(job.ID))
		if err != nil {
			return false, ignoreNotFound(err)
		}
		var s succeeding
		if err := json.Unmarshal(b, &s); err != nil {
			return false, fmt.Errorf("jobs: decode result of %s: %w", job.ID, err)
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), effectsTimeout)
		defer cancel()
		if err := p.succeed(ctx, s.Agent, job, s.Result); err != nil {
			return false, err
		}
	}
	if err := p.queue.Complete(ctx, l.Subnet, l.JobID, l.Token); err != nil {
		return false, err
	}
	p.log.Info().Str("job", l.JobID).Str("state", string(job.State)).Msg("finished job leased again after a crash: its success recorded, taken off the queue")
	return true, nil
}

// effectsTimeout bounds a result's effects once they no longer follow
// the caller's context.
const effectsTimeout = time.Minute

// leasedJob reads the batch job a lease holds; its ID names the batch.
func (p *Service) leasedJob(ctx context.Context, l domain.LeaseRef) (domain.Job, error) {
	batch, dev, ok := domain.SplitJobID(l.JobID)
	if !ok {
		return domain.Job{}, domain.InvalidField("lease.job_id", l.JobID, "not a batch:device job ID")
	}
	job, err := p.store.GetJob(ctx, batch, l.JobID)
	if err == nil && job.DeviceID != dev {
		err = fmt.Errorf("jobs: job %s is for device %s: %w", l.JobID, job.DeviceID, domain.ErrConflict)
	}
	return job, err
}

// failedStep is the step a failure is recorded at: a cancelled job at
// "cancelled", as the operations log always named it.
func failedStep(r Result) string {
	if r.Outcome == domain.ResultCancelled {
		return string(domain.ResultCancelled)
	}
	return r.Step
}

// alreadyDone turns the queue's "completed before" into the already
// answer; any other error stays one.
func alreadyDone(err error) (bool, error) {
	if errors.Is(err, domain.ErrAlreadyCompleted) {
		return true, nil
	}
	return false, err
}

// completeDiscover ends an on-demand sweep (server/discover). It belongs
// to no batch and the agent already reported its findings through
// ReportDiscovery, so only the lease is settled: a retryable failure
// comes back after RetryDelay like any job, anything else is done.
func (p *Service) completeDiscover(ctx context.Context, log zerolog.Logger, l domain.LeaseRef, r Result) (bool, error) {
	if r.Outcome == domain.ResultFailed {
		qj, err := p.queue.Job(ctx, l.Subnet, l.JobID)
		if err != nil {
			return false, err
		}
		if qj.Attempts < p.cfg.MaxAttempts {
			if err := p.queue.Defer(ctx, l.Subnet, l.JobID, l.Token, p.cfg.RetryDelay); err != nil {
				return false, err
			}
			log.Info().Str("subnet", l.Subnet.String()).Int("attempt", qj.Attempts).Str("step", r.Step).
				Str("error", r.Error).Msg("discovery failed, will retry")
			return false, nil
		}
	}
	if err := p.queue.Complete(ctx, l.Subnet, l.JobID, l.Token); err != nil {
		return alreadyDone(err)
	}
	if r.Outcome == domain.ResultSucceeded {
		log.Info().Str("subnet", l.Subnet.String()).Msg("discovery job completed")
	} else {
		log.Warn().Str("subnet", l.Subnet.String()).Str("step", r.Step).Str("error", r.Error).Msg("discovery job failed")
	}
	return false, nil
}

// succeed applies a successful phase 2: the device's status, the job's
// certificates installed, the new admin password promoted, and the job's
// secrets (and, after remove-all, the device's) deleted.
func (p *Service) succeed(ctx context.Context, agentID string, job domain.Job, r Result) error {
	now := p.now().UTC()
	_, err := p.store.UpdateDevice(ctx, job.DeviceID, func(d *domain.Device) error {
		switch job.Kind {
		case domain.KindProvision, domain.KindUpdate:
			d.Status, d.State = domain.StatusProvisioned, domain.ProvisioningPost
			if job.Kind == domain.KindProvision || d.ProvisionedAt.IsZero() {
				d.ProvisionedAt = now
			}
		case domain.KindRemoveConfig:
			// The identity and admin account stay: reached with them again,
			// not by remote configuration.
			d.Status, d.State, d.ProvisionedAt, d.ControlMode = domain.StatusNotProvisioned, domain.ProvisioningIn, time.Time{}, domain.ControlModeNone
		case domain.KindRemoveAll:
			// Dark as from the factory until its next Hello.
			d.Status, d.State, d.ProvisionedAt, d.ControlMode = domain.StatusNotProvisioned, domain.ProvisioningPre, time.Time{}, domain.ControlModeNone
		}
		r.Facts.Apply(d)
		d.LastError, d.LastErrorStep = "", ""
		d.Warnings = append([]string(nil), r.Warnings...)
		return nil
	})
	if err != nil && !errors.Is(err, domain.ErrNotFound) {
		return err
	}
	if job.Kind == domain.KindProvision || job.Kind == domain.KindUpdate {
		if err := p.installed(ctx, job, now); err != nil {
			return err
		}
	}
	if job.Kind == domain.KindProvision {
		if err := p.promote(ctx, pendingPasswordSecret(job.DeviceID), adminPasswordSecret(job.DeviceID)); err != nil {
			return err
		}
		if err := p.promote(ctx, pendingMEBxSecret(job.DeviceID), mebxPasswordSecret(job.DeviceID)); err != nil {
			return err
		}
	}
	gone := jobSecrets(job.ID)
	if job.Kind == domain.KindRemoveAll {
		// The controller is back to factory state: its admin password
		// and Kerberos key protect nothing any more, so keep neither.
		gone = append(gone, adminPasswordSecret(job.DeviceID), kerberosSecret(job.DeviceID))
	}
	for _, name := range gone {
		if err := p.store.DeleteSecret(ctx, name); err != nil {
			return err
		}
	}
	if err := p.finish(ctx, job.Kind, job.BatchID, job.ID, domain.JobSucceeded, "", ""); err != nil {
		return err
	}
	if err := p.store.DeleteSecret(ctx, resultSecret(job.ID)); err != nil {
		p.log.Warn().Str("job", job.ID).Err(err).Msg("finished job's result mark not deleted")
	}
	return p.store.AppendEvent(ctx, domain.OperationEvent{DeviceID: job.DeviceID, JobID: job.ID, Phase: 2, Step: "complete",
		Outcome: domain.OutcomeOK, Detail: string(job.Kind) + " succeeded", Actor: agentID, Time: now})
}

// installed marks the certificates the job had issued as on the device.
func (p *Service) installed(ctx context.Context, job domain.Job, now time.Time) error {
	return p.markInstalled(ctx, job, now, func(domain.CertificateRecord) bool { return true })
}

func (p *Service) markInstalled(ctx context.Context, job domain.Job, now time.Time, which func(domain.CertificateRecord) bool) error {
	certs, err := p.store.CertificatesByDevice(ctx, job.DeviceID)
	if err != nil {
		return err
	}
	for _, c := range certs {
		if c.JobID == job.ID && c.Status == domain.CertIssued && which(c) {
			if _, err := p.store.UpdateCertificateStatus(ctx, c.Serial, domain.CertInstalled, domain.ReasonUnspecified, now); err != nil {
				return err
			}
		}
	}
	return nil
}

// promote makes a pending password (admin, MEBx), which the device now
// has, the current one.
func (p *Service) promote(ctx context.Context, pendingName, currentName string) error {
	pw, err := p.store.GetSecret(ctx, pendingName)
	if errors.Is(err, domain.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := p.store.PutSecret(ctx, currentName, pw); err != nil {
		return err
	}
	return p.store.DeleteSecret(ctx, pendingName)
}

// activatedAnyway records what a failed provisioning attempt left behind
// when it got past its activation's commit: the agent saw the device in
// state 2 while the site still has it in state 0 or 1. The device is then
// in admin control mode with this job's admin and MEBx passwords and
// serves its TLS certificate; recorded as not provisioned, with those
// passwords still pending and the certificate revoked as unused when the
// job failed for good, the site lost the way in (make chaos, simulator
// faults: 2 of 40 devices). A device the site already had in state 2 (set
// up in the MEBx) is not this case: its admin password changes last.
func (p *Service) activatedAnyway(ctx context.Context, job domain.Job, r Result) error {
	if job.Kind != domain.KindProvision || r.Facts == nil || r.Facts.ProvisioningState != domain.ProvisioningPost {
		return nil
	}
	dev, err := p.store.GetDevice(ctx, job.DeviceID)
	if err != nil || dev.State == domain.ProvisioningPost {
		return ignoreNotFound(err)
	}
	// Only an activation seals a new MEBx password: any other job that
	// sees state 2 found the device so and has not changed its passwords.
	if _, err := p.store.GetSecret(ctx, pendingMEBxSecret(job.DeviceID)); err != nil {
		return ignoreNotFound(err)
	}
	if _, err := p.store.UpdateDevice(ctx, job.DeviceID, func(d *domain.Device) error {
		d.State = domain.ProvisioningPost
		return nil
	}); err != nil {
		return ignoreNotFound(err)
	}
	if err := p.markInstalled(ctx, job, p.now().UTC(), func(c domain.CertificateRecord) bool {
		return c.Purpose == domain.PurposeServerAuth
	}); err != nil {
		return err
	}
	if err := p.promote(ctx, pendingPasswordSecret(job.DeviceID), adminPasswordSecret(job.DeviceID)); err != nil {
		return err
	}
	return p.promote(ctx, pendingMEBxSecret(job.DeviceID), mebxPasswordSecret(job.DeviceID))
}

func ignoreNotFound(err error) error {
	if errors.Is(err, domain.ErrNotFound) {
		return nil
	}
	return err
}

// recordFailure notes a failed attempt on the device and in its log.
func (p *Service) recordFailure(ctx context.Context, agentID string, job domain.Job, r Result, final bool, attempt int) error {
	now := p.now().UTC()
	msg := r.Error
	if msg == "" {
		msg = "failed"
	}
	step := failedStep(r)
	_, err := p.store.UpdateDevice(ctx, job.DeviceID, func(d *domain.Device) error {
		r.Facts.Apply(d)
		d.LastError, d.LastErrorStep = msg, step
		return nil
	})
	if err != nil && !errors.Is(err, domain.ErrNotFound) {
		return err
	}
	out, detail := domain.OutcomeRetrying, fmt.Sprintf("attempt %d failed at %s: %s", attempt, step, oneLine(msg))
	if final {
		out = domain.OutcomeFailed
	}
	return p.store.AppendEvent(ctx, domain.OperationEvent{DeviceID: job.DeviceID, JobID: job.ID, Phase: 2, Step: "complete",
		Outcome: out, Detail: detail, Actor: agentID, Time: now})
}

// OnDead records jobs the reaper dead-lettered (their leases expired
// MaxAttempts times) as failed; wire it into dispatch.ReaperOptions.OnDead.
func (p *Service) OnDead(ctx context.Context, subnet netip.Prefix, jobIDs []string) error {
	return p.failQueued(ctx, subnet, jobIDs, "lease", "lease expired "+strconv.Itoa(p.cfg.MaxAttempts)+" times on "+subnet.String(), p.cfg.MaxAttempts)
}

// FailUnserved records jobs no agent took before phase2.unserved_deadline
// as failed with reason, on their devices too (dispatch.Unserved).
func (p *Service) FailUnserved(ctx context.Context, subnet netip.Prefix, jobIDs []string, reason string) error {
	return p.failQueued(ctx, subnet, jobIDs, "unserved", reason, 0)
}

// failQueued ends jobs the lease queue gave up on: their certificates and
// keys are abandoned and each job fails at step with reason; attempts,
// when positive, is the phase-2 attempts they used. A job no agent ever
// took (attempts 0) records the reason on its device and in its log too.
func (p *Service) failQueued(ctx context.Context, subnet netip.Prefix, jobIDs []string, step, reason string, attempts int) error {
	var errs []error
	for _, id := range jobIDs {
		if discover.IsJobID(id) {
			// A sweep has no batch to fail; the next request starts anew.
			p.log.Warn().Str("job", id).Str("subnet", subnet.String()).Str("step", step).Msg("discovery job given up")
			continue
		}
		batch, device, ok := domain.SplitJobID(id)
		if !ok {
			continue
		}
		if err := p.abandon(ctx, id, device); err != nil {
			p.log.Warn().Str("job", id).Err(err).Msg("dead job's certificates and keys not cleaned up")
		}
		kind := domain.JobKind("")
		if j, err := p.store.GetJob(ctx, batch, id); err == nil {
			kind = j.Kind
		}
		if attempts > 0 {
			if err := p.store.NotePhase2Attempts(ctx, batch, id, attempts); err != nil {
				errs = append(errs, err)
			}
		}
		if err := p.finish(ctx, kind, batch, id, domain.JobFailed, step, reason); err != nil && !errors.Is(err, domain.ErrNotFound) {
			errs = append(errs, err)
		}
		if attempts == 0 {
			errs = append(errs, p.recordUnserved(ctx, id, device, step, reason))
		}
	}
	return errors.Join(errs...)
}

// recordUnserved puts a queue's reason for failing a job on its device and
// in its operations log.
func (p *Service) recordUnserved(ctx context.Context, jobID, deviceID, step, reason string) error {
	_, err := p.store.UpdateDevice(ctx, deviceID, func(d *domain.Device) error {
		d.LastError, d.LastErrorStep = reason, step
		return nil
	})
	if err != nil && !errors.Is(err, domain.ErrNotFound) {
		return err
	}
	return p.store.AppendEvent(ctx, domain.OperationEvent{DeviceID: deviceID, JobID: jobID, Phase: 2, Step: step,
		Outcome: domain.OutcomeFailed, Detail: oneLine(reason), Actor: "server", Time: p.now().UTC()})
}

// abandon undoes what a job that ended failed leaves at the site: the
// certificates it had issued that no device was seen to install are
// revoked (cessation of operation: nothing will use them), and its sealed
// private keys and marks are deleted. A certificate the agent did install
// before a later step failed is superseded by the next provisioning. The
// pending admin and MEBx passwords stay: the device may have them, and
// the next attempt tries them.
func (p *Service) abandon(ctx context.Context, jobID, deviceID string) error {
	n, err := p.revoke(ctx, deviceID, domain.ReasonCessationOfOperation, func(c domain.CertificateRecord) bool {
		return c.JobID == jobID && (c.Status == domain.CertIssued || c.Status == domain.CertRequested)
	})
	if err != nil {
		return fmt.Errorf("abandon %s: %w", jobID, err)
	}
	for _, name := range jobSecrets(jobID) {
		if err := p.store.DeleteSecret(ctx, name); err != nil {
			return fmt.Errorf("abandon %s: %w", jobID, err)
		}
	}
	if n > 0 {
		p.log.Info().Str("job", jobID).Str("device", deviceID).Int("revoked", n).Msg("failed job's certificates revoked")
	}
	return nil
}

// oneLine is a stored failure reason on one line, for the operations
// log: the summary, then the chain after "; details: ".
func oneLine(msg string) string {
	sum, details := failure.Split(msg)
	if details == "" {
		return sum
	}
	return sum + "; details: " + details
}
