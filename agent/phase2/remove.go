package phase2

import (
	"context"

	"github.com/amtops/amtops/internal/amt"
	amtopsv1 "github.com/amtops/amtops/proto/amtops/v1"
)

// removeSteps is S16: PartialUnprovision keeps identity, Unprovision
// clears all.
func (r *job) removeSteps() []step {
	return []step{
		r.connectStep(true),
		r.identityStep(),
		{name: StepUnprovision, skip: func(context.Context) string {
			return unless(r.ident.ProvisioningState == amt.ProvisioningStatePre, "device is already unprovisioned")
		}, run: func(ctx context.Context) (string, error) {
			if r.j.GetKind() == amtopsv1.JobKind_JOB_KIND_REMOVE_ALL {
				r.facts.ProvisioningState = amt.ProvisioningStatePre
				return "configuration and identity removed", r.dev.Unprovision(ctx, amt.ProvisioningModeAdmin)
			}
			r.facts.ProvisioningState = amt.ProvisioningStateIn
			return "configuration removed, identity kept", r.dev.PartialUnprovision(ctx)
		}},
	}
}
