package jobs

import (
	"context"
	"errors"
	"fmt"

	"github.com/amtops/amtops/internal/domain"
)

// Forgotten is what ForgetDevice undid for a deleted device.
type Forgotten struct {
	Revoked []string // serials revoked at the CA
	Secrets int      // sealed secrets deleted
}

// deviceSecrets are the names a device's own secrets live under.
func deviceSecrets(deviceID string) []string {
	return []string{adminPasswordSecret(deviceID), pendingPasswordSecret(deviceID), mebxPasswordSecret(deviceID),
		pendingMEBxSecret(deviceID), kerberosSecret(deviceID)}
}

// CheckForget refuses to forget a device the site still manages: a
// provisioned one, or one whose configuration was removed but whose admin
// account the site still holds (state 1): deleting it would lose the only
// password the controller takes.
func (p *Service) CheckForget(ctx context.Context, d domain.Device) error {
	if d.Status == domain.StatusProvisioned {
		return fmt.Errorf("device %s (%s) is provisioned: remove its provisioning information first (amtopsctl remove %s --all), then delete it: %w",
			d.ID, d.FQDN(), d.ID, domain.ErrConflict)
	}
	if d.State == domain.ProvisioningIn {
		_, err := p.store.GetSecret(ctx, adminPasswordSecret(d.ID))
		switch {
		case err == nil:
			return fmt.Errorf("device %s (%s) keeps the admin account the site set (its configuration was removed, not its identity): "+
				"remove its provisioning information fully first (amtopsctl remove %s --all), or its admin password is lost: %w",
				d.ID, d.FQDN(), d.ID, domain.ErrConflict)
		case !errors.Is(err, domain.ErrNotFound):
			return fmt.Errorf("check admin password of %s: %w", d.ID, err)
		}
	}
	return nil
}

// ForgetDevice is what deleting a device takes from the site: every
// certificate the site issued for it that is still live is revoked
// (cessation of operation: the device leaves the site), and its sealed
// secrets are deleted. The CA goes first, so a deletion cut short is
// repeated without leaving a live certificate nobody knows of.
func (p *Service) ForgetDevice(ctx context.Context, d domain.Device) (Forgotten, error) {
	var out Forgotten
	if err := p.CheckForget(ctx, d); err != nil {
		return out, err
	}
	_, err := p.revoke(ctx, d.ID, domain.ReasonCessationOfOperation, func(c domain.CertificateRecord) bool {
		out.Revoked = append(out.Revoked, c.Serial)
		return true
	})
	if err != nil {
		return out, fmt.Errorf("forget device %s: %w", d.ID, err)
	}
	for _, name := range deviceSecrets(d.ID) {
		if _, err := p.store.GetSecret(ctx, name); errors.Is(err, domain.ErrNotFound) {
			continue
		}
		if err := p.store.DeleteSecret(ctx, name); err != nil {
			return out, fmt.Errorf("forget device %s: %w", d.ID, err)
		}
		out.Secrets++
	}
	return out, nil
}
