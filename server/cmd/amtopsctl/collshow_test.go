package main

import (
	"context"
	"strings"
	"testing"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/server/admin/admintest"
)

func TestCollectionsShowSuppressed(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	seed(t, s)
	s.Device(t, "d4", "pc4", "10.0.0.4", domain.StatusNotProvisioned)
	ctx := context.Background()
	cli(t, s, s.Operate, "collections", "create", "lab", "--auto-provision").want(t, 0)
	cli(t, s, s.Operate, "collections", "add", "lab", "d1", "d2", "d4").want(t, 0)
	// d3 is suppressed but no member: not listed.
	cli(t, s, s.Operate, "devices", "suppress-auto", "pc4.amt.test", "d3", "pc2.amt.test").want(t, 0)

	r := cli(t, s, s.Read, "collections", "show", "lab")
	r.want(t, 0)
	golden(t, "collections_show", r.stdout)
	r = cli(t, s, s.Read, "collections", "show", "lab", "-o", "json")
	r.want(t, 0)
	if strings.Count(r.stdout, `"suppress_auto_provision": true`) != 2 || strings.Contains(r.stdout, `"id": "d3"`) {
		t.Fatalf("suppressed members in JSON:\n%s", r.stdout)
	}
	cli(t, s, s.Operate, "devices", "allow-auto", "d4").want(t, 0)
	r = cli(t, s, s.Read, "collections", "show", "lab", "-o", "json")
	if strings.Contains(r.stdout, `"id": "d4"`) {
		t.Fatalf("d4 still listed after allow-auto:\n%s", r.stdout)
	}
	cli(t, s, s.Read, "collections", "show", "nosuch").want(t, 2, `no collection "nosuch"`)
	if _, err := s.Store.GetCollection(ctx, "lab"); err != nil {
		t.Fatal(err)
	}
}
