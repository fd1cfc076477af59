package main

import (
	"context"
	"strings"
	"testing"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/server/admin/admintest"
)

func TestDevicesDelete(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	seed(t, s)
	ctx := context.Background()
	if err := s.Store.PutSecret(ctx, "device/d1/admin", []byte("x")); err != nil {
		t.Fatal(err)
	}
	// Off a terminal without --yes: refused, nothing changed.
	cli(t, s, s.Operate, "devices", "delete", "pc1").want(t, 2, "delete device pc1.amt.test (d1)", "--yes")
	// On a terminal, "n" keeps it.
	cliTTY(t, s, s.Operate, true, "n\n", "devices", "delete", "pc1").want(t, 1, "not confirmed")
	if _, err := s.Store.GetDevice(ctx, "d1"); err != nil {
		t.Fatalf("unconfirmed delete removed the device: %v", err)
	}
	// The server refuses a provisioned device and says what to do first.
	cli(t, s, s.Operate, "devices", "delete", "pc2", "--yes").want(t, 1, "is provisioned", "amtopsctl remove d2 --all")
	cli(t, s, s.Read, "devices", "delete", "pc1", "--yes").want(t, 1, "operate role")

	r := cliTTY(t, s, s.Operate, true, "y\n", "devices", "delete", "pc1")
	r.want(t, 0)
	for _, want := range []string{"pc1.amt.test (d1)", "Secrets deleted", "1"} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("output does not mention %q:\n%s", want, r.stdout)
		}
	}
	if _, err := s.Store.GetDevice(ctx, "d1"); err == nil {
		t.Fatal("device d1 still stored")
	}
	r = cli(t, s, s.Read, "devices", "log", "d1")
	r.want(t, 0)
	if !strings.Contains(r.stdout, "deleted by ops") {
		t.Fatalf("log of the deleted device:\n%s", r.stdout)
	}
	s.Device(t, "d4", "pc4", "10.0.0.4", domain.StatusNotProvisioned)
	r = cli(t, s, s.Operate, "devices", "delete", "pc4.amt.test", "--yes", "-o", "json")
	r.want(t, 0)
	golden(t, "devices_delete", r.stdout)
}
