package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/provcert/provcerttest"
	"github.com/amtops/amtops/server/admin/admintest"
	"github.com/amtops/amtops/server/jobs"
)

// `devices readiness` says per device whether remote configuration can
// activate it and why not, from its last Hello and the loaded chain; the
// read role may ask.
func TestDevicesReadiness(t *testing.T) {
	id, _ := provcerttest.Identity(t, "amt.test")
	s := admintest.Start(t, admintest.Options{Activation: &jobs.Activation{Identity: id, MEBxPassword: "admin",
		Subnets: []jobs.SubnetDomain{{Prefix: netip.MustParsePrefix("10.0.0.0/24"), Domain: "amt.test"}}}})
	ctx := context.Background()
	root := sha256.Sum256(id.Chain().Root().Raw)
	other := sha256.Sum256([]byte("x"))
	hello := func(d domain.Device, sums ...[32]byte) {
		_, err := s.Store.UpdateDevice(ctx, d.ID, func(x *domain.Device) error {
			x.Hello = &domain.HelloSeen{At: time.Now(), IP: x.IP}
			for _, h := range sums {
				x.Hello.TrustedRoots = append(x.Hello.TrustedRoots, domain.RootHash{Alg: 2, Sum: h[:]})
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	hello(s.Device(t, "ok", "pc1", "10.0.0.1", domain.StatusNotProvisioned), other, root)
	hello(s.Device(t, "untrusted", "pc2", "10.0.0.2", domain.StatusNotProvisioned), other, other)
	s.Device(t, "silent", "pc3", "10.0.0.3", domain.StatusNotProvisioned)

	r := cli(t, s, s.Read, "devices", "readiness", "-o", "json")
	r.want(t, 0)
	var views []readinessView
	if err := json.Unmarshal([]byte(r.stdout), &views); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	by := map[string]readinessView{}
	for _, v := range views {
		by[v.ID] = v
	}
	for _, c := range []struct {
		id, reason, message string
	}{
		{"ok", "", ""},
		{"untrusted", "root-not-trusted", "no provisioning root matches any of the 2 hashes the device trusts"},
		{"silent", "no-hello", "no Hello received from the device yet"},
	} {
		v := by[c.id]
		if v.Ready != (c.reason == "") || !v.NeedsActivation || v.TrustedDomain != "amt.test" {
			t.Errorf("%s: %+v", c.id, v)
			continue
		}
		if c.reason != "" && (len(v.Problems) != 1 || v.Problems[0].Reason != c.reason || !strings.Contains(v.Problems[0].Message, c.message)) {
			t.Errorf("%s: problems %+v, want %s: %s", c.id, v.Problems, c.reason, c.message)
		}
	}
	table := cli(t, s, s.Read, "devices", "readiness")
	table.want(t, 0)
	if !strings.Contains(table.stdout, "WHY NOT") || !strings.Contains(table.stdout, "no provisioning root matches any of the 2 hashes") {
		t.Fatalf("table:\n%s", table.stdout)
	}
}
