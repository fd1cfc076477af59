package phase2

import (
	"context"

	"github.com/amtops/amtops/internal/domain"
	amtopsv1 "github.com/amtops/amtops/proto/amtops/v1"
)

// updateSteps is S12–S15: the settings stage over TLS with S15's link
// rules.
func (r *job) updateSteps() []step {
	return append([]step{
		r.connectStep(true),
		r.identityStep(),
		{name: StepDetectLink, run: r.updateLink},
		{name: StepNetworkProfiles, skip: func(context.Context) string {
			return unless(r.link != amtopsv1.Link_LINK_WIRED_8021X || !hasWired8021X(r.j.GetNetworks()),
				"no 802.1X change to confirm")
		}, run: r.confirm8021X},
		r.syncClockStep(),
	}, r.settingsSteps()...)
}

// updateLink detects the link (S15). The wireless profile the device is
// managed over is never touched by an update; the device records that it
// was not.
func (r *job) updateLink(ctx context.Context) (string, error) {
	link, err := r.detectLink(ctx)
	r.link, r.facts.Link = link, link
	if err == nil && link == amtopsv1.Link_LINK_WIRELESS {
		r.warn(ctx, StepDetectLink, WarnWirelessNotUpdated)
	}
	return link.String(), err
}

// confirm8021X refuses, over an 802.1X wired link, a change of the 802.1X
// settings the administrator has not confirmed.
func (r *job) confirm8021X(ctx context.Context) (string, error) {
	detail := "802.1X settings unchanged"
	for _, p := range r.j.GetNetworks() {
		if p.GetKind() != amtopsv1.NetworkProfile_KIND_WIRED_8021X {
			continue
		}
		change, err := r.dot1xWouldChange(ctx, p)
		switch {
		case err != nil:
			return "", err
		case !change:
			continue
		case !r.j.GetUpdate().GetConfirm_8021X():
			return "", domain.ErrConfirm8021X
		}
		r.warn(ctx, StepNetworkProfiles, WarnConfirmed8021X)
		detail = "802.1X settings change confirmed"
	}
	return detail, nil
}

func hasWired8021X(nets []*amtopsv1.NetworkProfile) bool {
	for _, p := range nets {
		if p.GetKind() == amtopsv1.NetworkProfile_KIND_WIRED_8021X {
			return true
		}
	}
	return false
}
