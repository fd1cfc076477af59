package site_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/site"
	"github.com/amtops/amtops/internal/wsman"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/store"
)

// settle waits for every device to end provisioned or failed.
func (e *e2e) settle(t *testing.T, within time.Duration) []*pb.Device {
	t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, within)
	defer cancel()
	devs, err := e.Settle(ctx, nil)
	if err != nil {
		t.Error(err)
	}
	return devs
}

// generations are the AMT versions the factory fleet mixes: RSA-only TLS
// (11, 12), TLS-only CSME (16.1), and a recent one (18).
var generations = []string{"11.8.50", "12.0.45", "16.1.25", "18.0.5"}

// The main job on factory hardware: every device sends its Hello to the
// agent of its subnet, the server matches it to the inventory, and the
// device is activated in admin control mode with the site's provisioning
// certificate — MEBx and admin passwords changed, TLS serving the site
// certificate for its FQDN, Kerberos on with the AMT account's
// passphrase-derived keys.
func TestActivateFactoryFleet(t *testing.T) {
	const n = 52
	e := startWith(t, site.Config{Devices: n, Versions: generations}, "", true)
	if err := e.TriggerHellos(); err != nil {
		t.Fatal(err)
	}
	devs := e.settle(t, 4*time.Minute)
	cfg := config.DefaultServer()
	provisioned := 0
	for _, d := range devs {
		if d.GetStatus() != pb.DeviceStatus_DEVICE_STATUS_PROVISIONED {
			t.Errorf("%s: status %v, step %q: %s", d.GetId(), d.GetStatus(), d.GetLastErrorStep(), d.GetLastError())
			continue
		}
		provisioned++
		st := e.simState(t, d.GetIp())
		if st.ProvisioningState != 2 || st.ControlMode != 2 {
			t.Errorf("%s (AMT %s): state %d control mode %d, want 2 and 2 (ACM)", d.GetId(), st.Version, st.ProvisioningState, st.ControlMode)
		}
		factoryMEBx := md5.Sum([]byte("admin:" + st.DigestRealm + ":admin"))
		if !st.MEBxPasswordSet || st.MEBxHA1 == hex.EncodeToString(factoryMEBx[:]) {
			t.Errorf("%s: the MEBx password is still the factory default", d.GetId())
		}
		if c, err := e.dialAMT(d, "admin", "admin"); err == nil {
			if _, err := c.GeneralSettings(e.ctx); !errors.Is(err, wsman.ErrUnauthorized) {
				t.Errorf("%s: the factory MEBx password still logs in: %v", d.GetId(), err)
			}
		}
		e.checkProvisioned(t, d, cfg, true)
	}
	if provisioned != n {
		t.Fatalf("activated %d of %d factory devices", provisioned, n)
	}
}

// A provisioning certificate the devices cannot accept is refused before
// anything is done: each device fails with the specific reason, no device
// certificate is issued, and nothing is left queued or leased.
func TestActivationRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    site.Config
		reason string
	}{
		{"domain does not match", site.Config{ProvisioningDomain: "elsewhere.test"}, "domain"},
		{"root not trusted", site.Config{UntrustedProvisioningRoot: true}, "no provisioning root matches"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 52 // the same fleet as TestActivateFactoryFleet
			tc.cfg.Devices, tc.cfg.Versions = n, generations
			e := startWith(t, tc.cfg, "", false)
			if err := e.TriggerHellos(); err != nil {
				t.Fatal(err)
			}
			for _, d := range e.settle(t, 2*time.Minute) {
				if d.GetStatus() == pb.DeviceStatus_DEVICE_STATUS_PROVISIONED || !strings.Contains(d.GetLastError(), tc.reason) {
					t.Errorf("%s: status %v, error %q; want refused naming %q", d.GetId(), d.GetStatus(), d.GetLastError(), tc.reason)
				}
				if certs, err := e.st.CertificatesByDevice(e.ctx, d.GetId()); err != nil || len(certs) != 0 {
					t.Errorf("%s: %d certificates issued (%v), want none", d.GetId(), len(certs), err)
				}
				if st := e.simState(t, d.GetIp()); st.ProvisioningState != 0 {
					t.Errorf("%s: device left in state %d", d.GetId(), st.ProvisioningState)
				}
			}
			q := store.NewLeaseQueue(e.st, store.QueueOptions{})
			for _, p := range e.Subnets {
				if s, err := q.Stats(e.ctx, p); err != nil || s.Pending+s.Leased != 0 {
					t.Errorf("subnet %s: queue %+v (%v), want nothing in flight", p, s, err)
				}
			}
		})
	}
}
