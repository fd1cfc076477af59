package metrics_test

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/secrets"
	"github.com/amtops/amtops/internal/testpeers"
	"github.com/amtops/amtops/server/metrics"
	"github.com/amtops/amtops/server/store"
)

// The fleet-wide gauges from a real Redis: agents by name and liveness,
// and pending phase-2 jobs on a subnet whose only agent went silent.
func TestSiteGauges(t *testing.T) {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: testpeers.Redis(t)})
	t.Cleanup(func() { _ = rdb.Close() })
	sealer, err := secrets.New(bytes.Repeat([]byte{3}, 32))
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(rdb, sealer, store.Options{})
	q := store.NewLeaseQueue(st, store.QueueOptions{})
	live, dead := netip.MustParsePrefix("10.1.0.0/24"), netip.MustParsePrefix("10.2.0.0/24")
	now := time.Now()
	for _, a := range []domain.Agent{
		{ID: "agent-a", Name: "branch-a", Subnets: []netip.Prefix{live}, LastHeartbeat: now},
		{ID: "agent-b", Name: "branch-b", Subnets: []netip.Prefix{dead}, LastHeartbeat: now.Add(-10 * time.Minute)},
	} {
		if err := st.PutAgent(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []netip.Prefix{live, dead} {
		for _, id := range []string{"b1:d1", "b1:d2"} {
			if _, err := q.Enqueue(ctx, p, id, []byte("job")); err != nil {
				t.Fatal(err)
			}
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewSite(st, q, asynq.NewInspectorFromRedisClient(rdb), time.Minute, zerolog.Nop()))
	want := `
# HELP amtops_agent_up 1 while an agent's last heartbeat is recent enough for it to hold leases.
# TYPE amtops_agent_up gauge
amtops_agent_up{agent="agent-a",name="branch-a"} 1
amtops_agent_up{agent="agent-b",name="branch-b"} 0
# HELP amtops_phase2_unserved_jobs Phase-2 jobs pending on a subnet that no live agent serves: they wait until one does.
# TYPE amtops_phase2_unserved_jobs gauge
amtops_phase2_unserved_jobs{subnet="10.1.0.0/24"} 0
amtops_phase2_unserved_jobs{subnet="10.2.0.0/24"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "amtops_agent_up", "amtops_phase2_unserved_jobs"); err != nil {
		t.Error(err)
	}
}
