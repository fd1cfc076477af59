package admin_test

import (
	"context"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/admin/admintest"
)

// fleet puts a small mixed fleet: two ACM devices of AMT 16 provisioned
// a few minutes ago, a failed AMT 12 device, and one of unknown version.
func fleet(t *testing.T, s *admintest.Server, now time.Time) {
	t.Helper()
	ctx := context.Background()
	for _, d := range []domain.Device{
		{ID: "a1", HostName: "alpha1", UUID: "4C4C4544-0001", AMTVersion: "16.1.25", Status: domain.StatusProvisioned,
			ControlMode: domain.ControlModeAdmin, ProvisionedAt: now.Add(-5 * time.Minute)},
		{ID: "a2", HostName: "alpha2", AMTVersion: "16.0.1", Status: domain.StatusProvisioned,
			ControlMode: domain.ControlModeAdmin, ProvisionedAt: now.Add(-5*time.Minute - 10*time.Second)},
		{ID: "b1", HostName: "beta1", AMTVersion: "12.0.90", Status: domain.StatusNotProvisioned,
			LastError: "directory: add account: refused", LastErrorStep: "S4"},
		{ID: "c1", HostName: "gamma1", Status: domain.StatusUnknown},
	} {
		d.Domain = "corp.test"
		d.IP = netip.MustParseAddr("10.9.0." + string(rune('1'+len(d.HostName)%8)))
		d.Subnet = netip.MustParsePrefix("10.9.0.0/24")
		if err := s.Store.PutDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFleetSummary(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	now := time.Now()
	fleet(t, s, now)
	ctx := context.Background()
	for id, at := range map[string]time.Time{"up": now.Add(-10 * time.Second), "down": now.Add(-time.Hour)} {
		if err := s.Store.PutAgent(ctx, domain.Agent{ID: id, EnrolledAt: now.Add(-2 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if err := s.Store.Heartbeat(ctx, id, at); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Store.RecordLoad(ctx, "up", domain.AgentLoad{InFlight: 2, Capacity: 16, Version: "v2.0.1", Address: "127.0.0.9:4321"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Store.CountHellos(ctx, "up", 7); err != nil {
		t.Fatal(err)
	}
	c := s.Dial(t, s.Read)
	sum, err := c.FleetSummary(ctx, &pb.FleetSummaryRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]int64{
		"status": {"DEVICE_STATUS_PROVISIONED": 2, "DEVICE_STATUS_NOT_PROVISIONED": 1, "DEVICE_STATUS_UNKNOWN": 1},
		"mode":   {"acm": 2, "none": 2},
		"gen":    {"16": 2, "12": 1, "unknown": 1},
	}
	for name, got := range map[string]map[string]int64{"status": sum.ByStatus, "mode": sum.ByControlMode, "gen": sum.ByGeneration} {
		if len(got) != len(want[name]) {
			t.Errorf("%s: %v, want %v", name, got, want[name])
		}
		for k, v := range want[name] {
			if got[k] != v {
				t.Errorf("%s[%s] = %d, want %d (%v)", name, k, got[k], v, got)
			}
		}
	}
	if sum.Devices != 4 || sum.Failed != 1 {
		t.Errorf("devices %d failed %d", sum.Devices, sum.Failed)
	}
	if len(sum.ProvisionedPerMinute) != 60 || sum.ProvisionedPerMinute[54] != 2 {
		t.Errorf("per minute %v", sum.ProvisionedPerMinute)
	}
	if sum.AgentsOnline != 1 || sum.AgentsOffline != 1 {
		t.Errorf("agents online %d offline %d", sum.AgentsOnline, sum.AgentsOffline)
	}
	agents, err := c.ListAgents(ctx, &pb.ListAgentsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range agents.Agents {
		if a.Online != (a.Id == "up") {
			t.Errorf("agent %s online = %v", a.Id, a.Online)
		}
		if a.Id == "up" && (a.JobsInFlight != 2 || a.Capacity != 16 || a.Version != "v2.0.1" || a.Address != "127.0.0.9:4321" || a.HellosReceived != 7) {
			t.Errorf("agent up: %d of %d in flight, version %q, address %q, %d Hellos", a.JobsInFlight, a.Capacity, a.Version, a.Address, a.HellosReceived)
		}
	}

	// Shared for a few seconds: a new device is not counted yet.
	if err := s.Store.PutDevice(ctx, domain.Device{ID: "d1", HostName: "delta", Domain: "corp.test", Status: domain.StatusUnknown}); err != nil {
		t.Fatal(err)
	}
	again, err := c.FleetSummary(ctx, &pb.FleetSummaryRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if again.Devices != 4 || !again.ComputedAt.AsTime().Equal(sum.ComputedAt.AsTime()) {
		t.Errorf("second summary recomputed: %d devices at %v", again.Devices, again.ComputedAt.AsTime())
	}
}

func TestListDevicesSearch(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	fleet(t, s, time.Now())
	c := s.Dial(t, s.Read)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		req  *pb.ListDevicesRequest
		want string
	}{
		{"host name", &pb.ListDevicesRequest{Query: "ALPHA"}, "a1,a2"},
		{"fqdn", &pb.ListDevicesRequest{Query: "beta1.corp"}, "b1"},
		{"uuid", &pb.ListDevicesRequest{Query: "4c4c4544"}, "a1"},
		{"ip", &pb.ListDevicesRequest{Query: "10.9.0."}, "a1,a2,b1,c1"},
		{"generation", &pb.ListDevicesRequest{Generation: "16"}, "a1,a2"},
		{"unknown generation", &pb.ListDevicesRequest{Generation: "unknown"}, "c1"},
		{"failed", &pb.ListDevicesRequest{Failed: true}, "b1"},
		{"failed and query", &pb.ListDevicesRequest{Failed: true, Query: "alpha"}, ""},
		{"status and generation", &pb.ListDevicesRequest{Status: pb.DeviceStatus_DEVICE_STATUS_PROVISIONED, Generation: "12"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			cursor := ""
			for range 10 {
				tc.req.Limit, tc.req.Cursor = 1, cursor
				page, err := c.ListDevices(ctx, tc.req)
				if err != nil {
					t.Fatal(err)
				}
				for _, d := range page.Devices {
					got = append(got, d.Id)
				}
				if cursor = page.NextCursor; cursor == "" {
					break
				}
			}
			sort.Strings(got)
			if strings.Join(got, ",") != tc.want {
				t.Fatalf("got %v, want %s", got, tc.want)
			}
		})
	}
}
