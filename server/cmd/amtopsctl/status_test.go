package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/server/admin/admintest"
)

func TestStatus(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	seed(t, s)
	ctx := context.Background()
	if _, err := s.Store.UpdateDevice(ctx, "d1", func(d *domain.Device) error {
		d.LastError, d.LastErrorStep, d.AMTVersion = "boom", "tls", "16.1.25"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Store.PutAgent(ctx, domain.Agent{ID: "a1", LastHeartbeat: time.Now()}); err != nil {
		t.Fatal(err)
	}
	r := cli(t, s, s.Read, "status")
	r.want(t, 0)
	for _, want := range []string{"Devices:                3", "not-provisioned 1", "provisioned 1", "not-supported 1",
		"By AMT generation:      unknown 2, 16 1", "Failed:                 1", "Agents:                 1 online, 0 offline"} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("status does not say %q:\n%s", want, r.stdout)
		}
	}
	r = cli(t, s, s.Read, "status", "-o", "json")
	r.want(t, 0)
	if !strings.Contains(r.stdout, `"devices": 3`) || !strings.Contains(r.stdout, `"not-provisioned": 1`) || !strings.Contains(r.stdout, `"provisioned_last_hour": 0`) {
		t.Fatalf("status -o json:\n%s", r.stdout)
	}
}

func TestDevicesSearch(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	seed(t, s)
	s.Device(t, "8c4f-uuid", "lab-7", "10.0.5.7", domain.StatusNotProvisioned)
	ctx := context.Background()
	if _, err := s.Store.UpdateDevice(ctx, "d3", func(d *domain.Device) error { d.LastError = "refused"; return nil }); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
		want string // IDs, in FQDN order
	}{
		{"by part of an IP", []string{"devices", "search", "10.0.5."}, "8c4f-uuid"},
		{"by ID, any case", []string{"devices", "search", "8C4F"}, "8c4f-uuid"},
		{"by FQDN with a status", []string{"devices", "search", "amt.test", "--status", "not-provisioned"}, "8c4f-uuid d1"},
		{"list --query", []string{"devices", "list", "-q", "pc"}, "d1 d2 d3"},
		{"failed, on the server", []string{"devices", "list", "--status", "failed"}, "d3"},
		{"failed and a query", []string{"devices", "search", "pc1", "--status", "failed"}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := cli(t, s, s.Read, append(c.args, "-o", "csv")...)
			r.want(t, 0)
			var ids []string
			for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n")[1:] {
				ids = append(ids, strings.Split(line, ",")[0])
			}
			if got := strings.Join(ids, " "); got != c.want {
				t.Fatalf("got %q, want %q:\n%s", got, c.want, r.stdout)
			}
		})
	}
	cli(t, s, s.Read, "devices", "search").want(t, 2)
}
