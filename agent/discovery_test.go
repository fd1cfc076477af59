package agent_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/amtops/amtops/agent"
	"github.com/amtops/amtops/internal/amtsim"
	"github.com/amtops/amtops/internal/amtsim/amtsimtest"
	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/api/apitest"
	"github.com/amtops/amtops/server/discover"
)

// startFleet runs n simulated devices from <random /24>.1; over maps host
// numbers (1 = the first device) to overrides.
func startFleet(t *testing.T, n int, over map[int]amtsim.Override) (*amtsim.Sim, netip.Addr) {
	t.Helper()
	byIndex := map[int]amtsim.Override{}
	for h, o := range over {
		byIndex[h-1] = o
	}
	sim := amtsimtest.Start(t, amtsim.Config{Devices: n, Kind: amtsim.KindMEBx, Password: "P@ssw0rd1"}, byIndex)
	return sim, sim.Addrs()[0]
}

func hostN(base netip.Addr, h int) netip.Addr {
	b := base.As4()
	b[3] = byte(h)
	return netip.AddrFrom4(b)
}

// discoveryAgent runs an agent enrolled for subnet against s, probing the
// simulator's ports, until the test ends.
func discoveryAgent(t *testing.T, s *apitest.Server, sim *amtsim.Sim, interval time.Duration, subnets ...string) *agent.Agent {
	t.Helper()
	cfg := agentConfig(t, s)
	cfg.Concurrency, cfg.LongPoll, cfg.DeviceDeadline = 2, time.Second, 20*time.Second
	if sim != nil {
		cfg.AMT.HTTPPort, cfg.AMT.TLSPort = sim.HTTPPort(), sim.TLSPort()
	}
	cfg.Discovery.Interval, cfg.Discovery.Concurrency, cfg.Discovery.Rate = interval, 8, 5000
	a, err := agent.New(cfg, zerolog.Nop(), agent.WithBootstrapToken(s.Token(t, subnets...)),
		agent.WithBackoff(10*time.Millisecond, 200*time.Millisecond), agent.WithShutdownGrace(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	runUntilEnd(t, a)
	return a
}

// TestOnDemandDiscovery: a discover job from server/discover makes the
// agent sweep its subnet; ReportDiscovery records what answered and the
// job is completed, not left in the queue.
func TestOnDemandDiscovery(t *testing.T) {
	s := apitest.Start(t, apitest.Options{})
	ctx := context.Background()
	// .1–.12 simulated; .4 has nothing listening; .13–.30 are empty.
	sim, base := startFleet(t, 12, map[int]amtsim.Override{
		4: {Kind: amtsim.KindNotAMT},
		5: {Kind: amtsim.KindMEBx},
		6: {Kind: amtsim.KindExternal},
	})
	subnet := netip.PrefixFrom(base, 27).Masked()
	// Known before the sweep with credentials: the sweep keeps these.
	for h, st := range map[int]domain.Status{2: domain.StatusNotProvisioned, 5: domain.StatusProvisioned} {
		d := domain.Device{ID: "known-" + string(rune('0'+h)), HostName: "known" + string(rune('0'+h)), Domain: "example.test",
			IP: hostN(base, h), Subnet: subnet, Status: st}
		if err := s.Store.PutDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	a := discoveryAgent(t, s, sim, 0, subnet.String())

	jobID, err := discover.Request(ctx, s.Queue, subnet, discover.Slot(time.Now(), time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "discover job completed", func() bool {
		j, err := s.Queue.Job(ctx, subnet, jobID)
		return err == nil && j.State == "completed"
	})
	if st, err := s.Queue.Stats(ctx, subnet); err != nil || st.Pending+st.Leased+st.Dead != 0 {
		t.Errorf("queue stats = %+v, %v; want empty", st, err)
	}

	cases := []struct {
		name   string
		host   int
		status domain.Status // "" means no device
	}{
		{name: "new device", host: 1, status: domain.StatusDetected},
		{name: "known not provisioned keeps status", host: 2, status: domain.StatusNotProvisioned},
		{name: "new device 3", host: 3, status: domain.StatusDetected},
		{name: "nothing listening", host: 4},
		{name: "known provisioned keeps status", host: 5, status: domain.StatusProvisioned},
		{name: "externally provisioned, unknown here", host: 6, status: domain.StatusDetected},
		{name: "last device", host: 12, status: domain.StatusDetected},
		{name: "empty address", host: 13},
		{name: "last host address", host: 30},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			devs, err := s.Store.DevicesByIP(ctx, hostN(base, tc.host))
			if err != nil {
				t.Fatal(err)
			}
			if tc.status == "" {
				if len(devs) != 0 {
					t.Errorf("devices at .%d = %+v, want none", tc.host, devs)
				}
				return
			}
			if len(devs) != 1 {
				t.Fatalf("devices at .%d = %d, want 1", tc.host, len(devs))
			}
			d := devs[0]
			if d.Status != tc.status || d.Subnet != subnet {
				t.Errorf("device %s: status %s subnet %s, want %s %s", d.ID, d.Status, d.Subnet, tc.status, subnet)
			}
			if strings.HasPrefix(d.ID, "ip-") && d.AMTVersion != "11.8.50" {
				t.Errorf("device %s: AMT version %q, want 11.8.50 from Identify", d.ID, d.AMTVersion)
			}
		})
	}
	if got := a.Subnets(); len(got) != 1 || got[0] != subnet {
		t.Errorf("agent subnets = %v, want [%s]", got, subnet)
	}
}

// TestScheduledDiscovery: with an interval set, the agent sweeps the
// subnets it was enrolled for without being asked.
func TestScheduledDiscovery(t *testing.T) {
	s := apitest.Start(t, apitest.Options{})
	ctx := context.Background()
	sim, base := startFleet(t, 3, nil)
	subnet := netip.PrefixFrom(base, 29).Masked()
	discoveryAgent(t, s, sim, 100*time.Millisecond, subnet.String())
	waitFor(t, "three devices detected", func() bool {
		for h := 1; h <= 3; h++ {
			devs, err := s.Store.DevicesByIP(ctx, hostN(base, h))
			if err != nil || len(devs) != 1 || devs[0].Status != domain.StatusDetected {
				return false
			}
		}
		return true
	})
	if devs, err := s.Store.DevicesByIP(ctx, hostN(base, 4)); err != nil || len(devs) != 0 {
		t.Errorf("devices at .4 = %v, %v; want none", devs, err)
	}
}

// TestDiscoverJobRefused: a discover job the agent cannot run fails
// permanently (it is completed, not retried) and probes nothing.
func TestDiscoverJobRefused(t *testing.T) {
	s := apitest.Start(t, apitest.Options{})
	ctx := context.Background()
	small, large := netip.MustParsePrefix("127.77.252.0/29"), netip.MustParsePrefix("127.76.0.0/15")
	discoveryAgent(t, s, nil, 0, small.String(), large.String())
	slot := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name    string
		lease   netip.Prefix
		subnets []string
	}{
		{name: "subnet outside the agent's", lease: small, subnets: []string{"127.78.0.0/24"}},
		{name: "not a prefix", lease: small, subnets: []string{"127.77.252.0/33"}},
		{name: "larger than /16", lease: large},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := discover.JobID(tc.lease, slot.Add(time.Duration(i)*time.Minute))
			payload, err := proto.Marshal(&pb.Phase2Job{Kind: pb.JobKind_JOB_KIND_DISCOVER,
				Discover: &pb.DiscoverOptions{Subnets: tc.subnets}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Queue.Enqueue(ctx, tc.lease, id, payload); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "job completed", func() bool {
				j, err := s.Queue.Job(ctx, tc.lease, id)
				return err == nil && j.State == "completed"
			})
		})
	}
}
