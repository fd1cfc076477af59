package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/server/store"
)

// siteCollector reports the site's state from Redis at each scrape, so
// every replica shows the same fleet-wide figures and nothing drifts.
type siteCollector struct {
	st  *store.Store
	q   *store.LeaseQueue
	log zerolog.Logger

	devices, jobs, agents, heartbeat, up *prometheus.Desc
}

func newSiteCollector(st *store.Store, q *store.LeaseQueue, log zerolog.Logger) *siteCollector {
	return &siteCollector{st: st, q: q, log: log,
		devices: prometheus.NewDesc("amtops_devices", "Devices by AMT status (S20).", []string{"status"}, nil),
		jobs: prometheus.NewDesc("amtops_phase2_jobs", "Phase-2 jobs in a subnet's lease queue by state: pending, leased, dead.",
			[]string{"subnet", "state"}, nil),
		agents: prometheus.NewDesc("amtops_agents", "Enrolled agents.", nil, nil),
		heartbeat: prometheus.NewDesc("amtops_agent_heartbeat_age_seconds", "Seconds since each agent's last heartbeat.",
			[]string{"agent"}, nil),
		up: prometheus.NewDesc("amtops_store_up", "1 when the scrape could read Redis.", nil, nil),
	}
}

func (c *siteCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.devices, c.jobs, c.agents, c.heartbeat, c.up} {
		ch <- d
	}
}

func (c *siteCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.collect(ctx, ch); err != nil {
		c.log.Warn().Err(err).Msg("metrics scrape could not read the store")
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
}

func (c *siteCollector) collect(ctx context.Context, ch chan<- prometheus.Metric) error {
	counts, err := c.st.CountDevices(ctx)
	if err != nil {
		return err
	}
	for _, s := range domain.Statuses {
		ch <- prometheus.MustNewConstMetric(c.devices, prometheus.GaugeValue, float64(counts[s]), string(s))
	}
	subnets, err := c.q.Subnets(ctx)
	if err != nil {
		return err
	}
	for _, p := range subnets {
		st, err := c.q.Stats(ctx, p)
		if err != nil {
			return err
		}
		for state, n := range map[string]int64{"pending": st.Pending, "leased": st.Leased, "dead": st.Dead} {
			ch <- prometheus.MustNewConstMetric(c.jobs, prometheus.GaugeValue, float64(n), p.String(), state)
		}
	}
	agents, err := c.st.ListAgents(ctx)
	if err != nil {
		return err
	}
	ch <- prometheus.MustNewConstMetric(c.agents, prometheus.GaugeValue, float64(len(agents)))
	now := time.Now()
	for _, a := range agents {
		if !a.LastHeartbeat.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.heartbeat, prometheus.GaugeValue, now.Sub(a.LastHeartbeat).Seconds(), a.ID)
		}
	}
	return nil
}
