package jobs

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/failure"
	"github.com/amtops/amtops/internal/wire"
	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// Steps, as the operations log names them.
const (
	StepRevokeSuperseded = "revoke-superseded"  // S1
	StepIssueServerCert  = "issue-server-cert"  // S2
	StepIssueClientCerts = "issue-client-certs" // S3, S14
	StepPublishAccount   = "publish-account"    // S4, S13
	StepRegisterSPNs     = "register-spns"      // S5, S13
	StepAddToGroups      = "add-to-groups"      // S6
	StepRevokeAll        = "revoke-all"         // S17
	StepDeleteAccount    = "delete-account"     // S17
	StepTrust            = "trust-material"     // update and removal: how the agent verifies TLS
	StepMarkDevice       = "mark-device"        // S18, S19
	StepCheckLink        = "check-link"         // S15
	StepQueuePhase2      = "queue-phase2"
	// StepSignDeviceCSR is phase 2's signature of a device-made key.
	StepSignDeviceCSR = "sign-device-csr"
)

// Batch options phase 1 acts on (domain.Batch.Options, copied into
// Task.Options); each is "true" or "false".
const (
	// OptionSuppressAuto, on a removal, keeps sweeps away from the device
	// afterwards (S18) until an administrator clears the flag.
	OptionSuppressAuto = "suppress_auto"
	// OptionRename, on remove-all, is the first half of a rename or domain
	// move (S19): the device is marked rename-pending (and suppressed), and
	// nothing provisions it until the rename is completed.
	OptionRename = "rename"
	// OptionConfirm8021X, on an update, is the administrator's confirmation
	// that settings may change over an 802.1X wired link (S15).
	OptionConfirm8021X = "confirm_8021x"
)

func (t Task) option(name string) bool { return t.Options[name] == "true" }

// step is one phase-1 step: its name in the operations log and its body,
// which returns the detail logged ("skipped: …" logs a skip).
type step struct {
	name string
	run  func(r *run, ctx context.Context) (detail string, err error)
}

// phase1Steps are each kind's steps in order. Every kind ends by queueing
// its phase-2 job.
var phase1Steps = map[domain.JobKind][]step{
	domain.KindProvision: {{StepCheckActivation, (*run).checkActivation}, {StepRevokeSuperseded, (*run).revokeSuperseded}, {StepIssueServerCert, (*run).issueServerCert},
		{StepIssueClientCerts, (*run).issueClientCerts}, {StepPublishAccount, (*run).publish},
		{StepRegisterSPNs, (*run).registerSPNs}, {StepAddToGroups, (*run).addToGroups}, {StepQueuePhase2, (*run).queuePhase2}},
	// S14: the server certificate stays; client certificates are renewed,
	// but only once S15's check has passed.
	domain.KindUpdate: {{StepCheckLink, (*run).checkLink}, {StepTrust, (*run).trust}, {StepIssueClientCerts, (*run).issueClientCerts},
		{StepPublishAccount, (*run).publish}, {StepRegisterSPNs, (*run).registerSPNs}, {StepAddToGroups, (*run).addToGroups},
		{StepQueuePhase2, (*run).queuePhase2}},
	// The marks first, so no sweep picks the device up meanwhile; the
	// trust material before revoke-all, which revokes what it names.
	domain.KindRemoveConfig: removeSteps,
	domain.KindRemoveAll:    removeSteps,
}

var removeSteps = []step{{StepMarkDevice, (*run).markDevice}, {StepTrust, (*run).trust}, {StepRevokeAll, (*run).revokeAll},
	{StepDeleteAccount, (*run).deleteAccount}, {StepQueuePhase2, (*run).queuePhase2}}

// StepError is a phase-1 failure at a named step.
type StepError struct {
	JobID string
	Step  string
	Err   error
}

func (e *StepError) Error() string {
	return "phase1: " + e.JobID + ": " + e.Step + ": " + e.Err.Error()
}
func (e *StepError) Unwrap() error { return e.Err }

// run is one execution of one task.
type run struct {
	p   *Service
	t   Task
	dev domain.Device
	job *pb.Phase2Job
	// accountDN is the AMT account the publish step found or made, and
	// spns the SPNs it carried when publish read it back.
	accountDN string
	spns      []string
	// activate: checkActivation found the device ready for remote
	// configuration; the job carries Activation.
	activate bool
}

// Handle runs the phase-1 work of t and queues its phase-2 job. Each step
// is idempotent, keyed by the job: a re-run after a crash reuses what the
// earlier run made instead of making it again.
func (p *Service) Handle(ctx context.Context, t Task) (err error) {
	start := p.now()
	defer func() { p.cfg.Observer.Phase1Done(t.Kind, p.now().Sub(start), err) }()
	dev, err := p.store.GetDevice(ctx, t.DeviceID)
	if err != nil {
		return fmt.Errorf("phase1: %s: %w", t.JobID, err)
	}
	if t.Kind == domain.KindProvision || t.Kind == domain.KindUpdate {
		if err := dev.Provisionable(); err != nil {
			return fmt.Errorf("phase1: %s: %w", t.JobID, err)
		}
	}
	switch {
	case !dev.IP.IsValid():
		return fmt.Errorf("phase1: %s: %w", t.JobID, domain.InvalidField("device.ip", "", "device has no address yet: import it with one, or let discovery or its Hello find it"))
	case !dev.Subnet.IsValid():
		return fmt.Errorf("phase1: %s: %w", t.JobID, domain.InvalidField("device.ip", dev.IP.String(),
			"no agent serves this address: authorise an agent for its subnet (amtopsctl agents authorize), then import or discover it again"))
	}
	if err := p.store.MoveJob(ctx, t.BatchID, t.JobID, domain.JobPhase1); err != nil {
		if errors.Is(err, domain.ErrConflict) {
			// Already past phase 1 or finished (a duplicate delivery).
			p.log.Info().Str("job", t.JobID).Msg("phase-1 task for a job already past phase 1")
			return nil
		}
		return fmt.Errorf("phase1: %s: %w", t.JobID, err)
	}
	job := &pb.Phase2Job{
		BatchId: t.BatchID, DeviceId: dev.ID, Kind: wire.Kind(t.Kind),
		Deadline: timestamppb.New(p.now().Add(p.site.JobDeadline)),
		Target:   &pb.Target{Ip: dev.IP.String(), HostName: dev.HostName, Domain: dev.Domain},
	}
	r := &run{p: p, t: t, dev: dev, job: job}
	for _, s := range phase1Steps[t.Kind] {
		began := p.now()
		detail, err := s.run(r, ctx)
		if err != nil {
			p.cfg.Observer.Phase1Step(s.name, domain.OutcomeFailed, p.now().Sub(began))
			p.event(ctx, t, s.name, domain.OutcomeFailed, oneLine(failure.Text(err)))
			return &StepError{JobID: t.JobID, Step: s.name, Err: err}
		}
		outcome := domain.OutcomeOK
		if rest, ok := strings.CutPrefix(detail, "skipped: "); ok {
			outcome, detail = domain.OutcomeSkipped, rest
		}
		p.cfg.Observer.Phase1Step(s.name, outcome, p.now().Sub(began))
		p.event(ctx, t, s.name, outcome, detail)
		if p.afterStep != nil {
			if err := p.afterStep(s.name); err != nil {
				return err
			}
		}
	}
	return nil
}

// finish records a job's final state, telling the observer the first time.
func (p *Service) finish(ctx context.Context, kind domain.JobKind, batchID, jobID string, state domain.JobState, step, msg string) error {
	done, err := p.store.FinishJob(ctx, batchID, jobID, state, step, msg)
	if done {
		p.cfg.Observer.JobFinished(kind, state, step)
	}
	return err
}

// event appends to the device's operations log; a failure to log is
// logged but does not fail the job.
func (p *Service) event(ctx context.Context, t Task, stepName string, o domain.Outcome, detail string) {
	err := p.store.AppendEvent(ctx, domain.OperationEvent{DeviceID: t.DeviceID, JobID: t.JobID, Phase: 1,
		Step: stepName, Outcome: o, Detail: detail, Actor: p.actor, Time: p.now()})
	if err != nil {
		p.log.Warn().Err(err).Str("device", t.DeviceID).Str("step", stepName).Msg("operations log append failed")
	}
	p.log.Info().Str("device", t.DeviceID).Str("job", t.JobID).Str("phase", "1").Str("step", stepName).
		Str("outcome", string(o)).Msg("phase-1 step")
}

// FailJob records a task's final failure on its job and device (Recorder).
// The step is the one a StepError names; a failure before the first step
// (the device unknown or not provisionable) names none.
func (p *Service) FailJob(ctx context.Context, t Task, err error) error {
	stepName := ""
	if se := (*StepError)(nil); errors.As(err, &se) {
		stepName = se.Step
	}
	if over, herr := p.handedOver(ctx, t); herr != nil {
		return herr
	} else if over {
		// A redundant run (asynq ran the task again): the job's phase 2
		// owns its end now, and its marks and keys are in use.
		p.log.Warn().Err(err).Str("job", t.JobID).Str("device", t.DeviceID).
			Msg("phase-1 re-run failed after its phase-2 job was queued; the job goes on")
		return nil
	}
	// Best effort: the failure must be recorded even when the CA that
	// would revoke is what failed.
	if aerr := p.abandon(ctx, t.JobID, t.DeviceID); aerr != nil {
		p.log.Warn().Str("job", t.JobID).Err(aerr).Msg("failed job's certificates and keys not cleaned up")
	}
	reason := failure.Text(err)
	if ferr := p.finish(ctx, t.Kind, t.BatchID, t.JobID, domain.JobFailed, stepName, reason); ferr != nil {
		return ferr
	}
	_, uerr := p.store.UpdateDevice(ctx, t.DeviceID, func(d *domain.Device) error {
		d.LastError, d.LastErrorStep = reason, stepName
		return nil
	})
	if errors.Is(uerr, domain.ErrNotFound) {
		return nil
	}
	return uerr
}

// handedOver reports whether phase 1 already gave the job to phase 2: the
// job is marked past phase 1, or the device's lease queue holds it (a run
// stopped between queueing and marking it, which is then marked).
func (p *Service) handedOver(ctx context.Context, t Task) (bool, error) {
	j, err := p.store.GetJob(ctx, t.BatchID, t.JobID)
	switch {
	case errors.Is(err, domain.ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	case j.State != domain.JobQueued && j.State != domain.JobPhase1:
		return true, nil
	}
	dev, err := p.store.GetDevice(ctx, t.DeviceID)
	if errors.Is(err, domain.ErrNotFound) || err == nil && !dev.Subnet.IsValid() {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if _, err := p.queue.Job(ctx, dev.Subnet, t.JobID); errors.Is(err, domain.ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	if err := p.store.MoveJob(ctx, t.BatchID, t.JobID, domain.JobPhase2); err != nil && !errors.Is(err, domain.ErrConflict) {
		return false, err
	}
	return true, nil
}
