package phase2

import (
	"context"
	"slices"

	"github.com/amtops/amtops/internal/amt"
)

// provision is S7–S10: stage "tls" over the provisioning connection (the
// remote-configuration session of a factory device, see activate.go),
// then stage "settings" over TLS.
func (r *job) provision(ctx context.Context) error {
	t := r.j.GetTls()
	r.leaf, r.chain, r.serial = t.GetCertificateDer(), t.GetChainDer(), t.GetSerial()
	first := []step{r.connectStep(false), r.identityStep()}
	if r.j.GetActivation() != nil {
		// Remote configuration: a factory device in state 0 ends in ACM.
		first = r.activationSteps()
	}
	steps := slices.Concat(first, r.tlsSteps(), r.settingsSteps(),
		[]step{{name: StepDetectLink, run: r.provisionedLink}, r.controlModeStep()})
	if err := r.runSteps(ctx, steps); err != nil {
		return err
	}
	r.facts.InstalledSerial = r.serial
	r.facts.ProvisioningState = amt.ProvisioningStatePost
	return nil
}

// provisionedLink records the link as provisioning left it (an 802.1X
// profile may have just been applied): the site keeps it, so a later
// update can check S15 before it revokes anything. Not knowing it fails
// nothing.
func (r *job) provisionedLink(ctx context.Context) (string, error) {
	link, err := r.detectLink(ctx)
	if err != nil {
		return "", skipped{"link not detected: " + err.Error()}
	}
	r.facts.Link = link
	return link.String(), nil
}
