package jobs

import (
	"context"

	"github.com/amtops/amtops/internal/domain"
)

// Device marks: what phase 1 records on the device itself, and S15's
// guard on the link the device is managed over.

// markDevice applies a removal's marks (S18, S19). They are only ever
// set here; an administrator clears them (SetAutoProvisionSuppressed,
// CompleteRename).
func (r *run) markDevice(ctx context.Context) (string, error) {
	rename := r.t.Kind == domain.KindRemoveAll && r.t.option(OptionRename)
	suppress := rename || r.t.option(OptionSuppressAuto)
	if !suppress {
		return "skipped: auto-provisioning not suppressed", nil
	}
	if _, err := r.p.store.UpdateDevice(ctx, r.dev.ID, func(d *domain.Device) error {
		d.SuppressAutoProvision = true
		d.RenamePending = d.RenamePending || rename
		return nil
	}); err != nil {
		return "", err
	}
	if rename {
		return "rename pending; auto-provisioning suppressed", nil
	}
	return "auto-provisioning suppressed", nil
}

// checkLink is S15's guard for what phase 1 knows: a device last seen on
// an 802.1X wired link gets its 802.1X client certificate replaced only
// with the administrator's confirmation. Where the link is not known yet
// the agent detects it and applies the same rule before changing anything
// on the device.
func (r *run) checkLink(context.Context) (string, error) {
	switch {
	case r.dev.Link != domain.LinkWired8021X:
		link := string(r.dev.Link)
		if link == "" {
			link = "not known yet"
		}
		return "skipped: link " + link + "; the agent checks it again", nil
	case !r.p.site.Networks.Wired8021X:
		return "802.1X wired link; no wired 802.1X profile configured, its settings stay", nil
	case r.t.option(OptionConfirm8021X):
		return "802.1X wired link; the administrator confirmed the change", nil
	}
	return "", domain.Permanent(domain.ErrConfirm8021X)
}
