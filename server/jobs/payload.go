package jobs

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// The phase-2 payload: the one place phase 1 turns the site's model into
// the wire job an agent leases.

// credentials decides what the agent connects with and, for provisioning,
// the new admin password (S10), kept pending until phase 2 succeeds.
func (r *run) credentials(ctx context.Context) error {
	c := &pb.Credentials{Username: r.p.site.ProvisioningUser}
	current, err := r.p.store.GetSecret(ctx, adminPasswordSecret(r.dev.ID))
	switch {
	case err == nil:
		c.Password = string(current)
		c.FallbackPasswords = []string{r.p.site.ProvisioningPassword}
	case errors.Is(err, domain.ErrNotFound):
		c.Password = r.p.site.ProvisioningPassword
	default:
		return err
	}
	pending, err := r.p.store.GetSecret(ctx, pendingPasswordSecret(r.dev.ID))
	if err != nil && !errors.Is(err, domain.ErrNotFound) {
		return err
	}
	if r.t.Kind == domain.KindProvision {
		pw, err := r.p.pending(ctx, pendingPasswordSecret(r.dev.ID))
		if err != nil {
			return err
		}
		pending, c.NewAdminPassword = []byte(pw), pw
	}
	if pending != nil && string(pending) != c.Password {
		// An earlier attempt may have set it before failing.
		c.FallbackPasswords = append(c.FallbackPasswords, string(pending))
	}
	r.job.Credentials = c
	return nil
}

// queuePhase2 writes the phase-2 job into the device's subnet queue; the
// job ID makes it a no-op when an earlier run got this far.
func (r *run) queuePhase2(ctx context.Context) (string, error) {
	if err := r.credentials(ctx); err != nil {
		return "", err
	}
	if r.activate {
		if err := r.activation(ctx); err != nil {
			return "", err
		}
	}
	r.job.Settings = &pb.Settings{IdeRedirection: r.p.site.Settings.IDERedirection, SerialOverLan: r.p.site.Settings.SerialOverLAN,
		Kvm: r.p.site.Settings.KVM, PingResponse: r.p.site.Settings.PingResponse, WebUi: r.p.site.Settings.WebUI,
		PowerScheme: r.p.site.Settings.PowerScheme}
	if r.t.Kind == domain.KindUpdate {
		r.job.Update = &pb.UpdateOptions{Confirm_8021X: r.t.option(OptionConfirm8021X)}
	}
	payload, err := proto.Marshal(r.job)
	if err != nil {
		return "", fmt.Errorf("encode phase-2 job: %w", err)
	}
	created, err := r.p.queue.Enqueue(ctx, r.dev.Subnet, r.t.JobID, payload)
	if err != nil {
		return "", err
	}
	if err := r.p.store.MoveJob(ctx, r.t.BatchID, r.t.JobID, domain.JobPhase2); err != nil && !errors.Is(err, domain.ErrConflict) {
		return "", err
	}
	if !created {
		return "phase-2 job already queued on " + r.dev.Subnet.String(), nil
	}
	return "phase-2 job queued on " + r.dev.Subnet.String(), nil
}
