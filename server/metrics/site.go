package metrics

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/server/store"
)

// Site reports the site's state from Redis at each scrape, so every
// replica shows the same fleet-wide figures and nothing drifts.
type Site struct {
	st    *store.Store
	q     *store.LeaseQueue
	tasks *asynq.Inspector // nil: no phase-1 queue figures
	live  time.Duration
	log   zerolog.Logger
	now   func() time.Time

	devices, jobs, unserved, phase1, agents, heartbeat, agentUp, up *prometheus.Desc
}

// NewSite builds the collector; an agent counts as live while its last
// heartbeat is younger than live (the lease TTL is a good value).
func NewSite(st *store.Store, q *store.LeaseQueue, tasks *asynq.Inspector, live time.Duration, log zerolog.Logger) *Site {
	agent := []string{"agent", "name"}
	return &Site{st: st, q: q, tasks: tasks, live: live, log: log, now: time.Now,
		devices: prometheus.NewDesc("amtops_devices", "Devices by AMT status (S20).", []string{"status"}, nil),
		jobs: prometheus.NewDesc("amtops_phase2_jobs", "Phase-2 jobs in a subnet's lease queue by state: pending, leased, dead.",
			[]string{"subnet", "state"}, nil),
		unserved: prometheus.NewDesc("amtops_phase2_unserved_jobs",
			"Phase-2 jobs pending on a subnet that no live agent serves: they wait until one does.", []string{"subnet"}, nil),
		phase1: prometheus.NewDesc("amtops_phase1_tasks", "Phase-1 tasks in an asynq queue by state: pending, active, scheduled, retry, archived.",
			[]string{"queue", "state"}, nil),
		agents:    prometheus.NewDesc("amtops_agents", "Enrolled agents.", nil, nil),
		heartbeat: prometheus.NewDesc("amtops_agent_heartbeat_age_seconds", "Seconds since each agent's last heartbeat.", agent, nil),
		agentUp:   prometheus.NewDesc("amtops_agent_up", "1 while an agent's last heartbeat is recent enough for it to hold leases.", agent, nil),
		up:        prometheus.NewDesc("amtops_store_up", "1 when the scrape could read Redis.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Site) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.devices, c.jobs, c.unserved, c.phase1, c.agents, c.heartbeat, c.agentUp, c.up} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Site) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.collect(ctx, ch); err != nil {
		c.log.Warn().Err(err).Msg("metrics scrape could not read the store")
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
}

func (c *Site) collect(ctx context.Context, ch chan<- prometheus.Metric) error {
	counts, err := c.st.CountDevices(ctx)
	if err != nil {
		return err
	}
	for _, s := range domain.Statuses {
		ch <- prometheus.MustNewConstMetric(c.devices, prometheus.GaugeValue, float64(counts[s]), string(s))
	}
	served, err := c.collectAgents(ctx, ch)
	if err != nil {
		return err
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
		unserved := st.Pending
		if slices.ContainsFunc(served, func(s netip.Prefix) bool { return s.Masked() == p.Masked() }) {
			unserved = 0
		}
		ch <- prometheus.MustNewConstMetric(c.unserved, prometheus.GaugeValue, float64(unserved), p.String())
	}
	return c.collectTasks(ch)
}

// collectAgents reports each agent and returns the subnets live agents serve.
func (c *Site) collectAgents(ctx context.Context, ch chan<- prometheus.Metric) ([]netip.Prefix, error) {
	agents, err := c.st.ListAgents(ctx)
	if err != nil {
		return nil, err
	}
	ch <- prometheus.MustNewConstMetric(c.agents, prometheus.GaugeValue, float64(len(agents)))
	now := c.now()
	var served []netip.Prefix
	for _, a := range agents {
		up := 0.0
		if !a.LastHeartbeat.IsZero() {
			age := now.Sub(a.LastHeartbeat)
			ch <- prometheus.MustNewConstMetric(c.heartbeat, prometheus.GaugeValue, age.Seconds(), a.ID, a.Name)
			if age < c.live {
				up = 1
				served = append(served, a.Subnets...)
			}
		}
		ch <- prometheus.MustNewConstMetric(c.agentUp, prometheus.GaugeValue, up, a.ID, a.Name)
	}
	return served, nil
}

// collectTasks reports asynq's phase-1 queues (its Inspector: asynq's own
// exporter module, x/metrics, was last released for a far older asynq).
func (c *Site) collectTasks(ch chan<- prometheus.Metric) error {
	if c.tasks == nil {
		return nil
	}
	queues, err := c.tasks.Queues()
	if err != nil {
		return err
	}
	for _, q := range queues {
		info, err := c.tasks.GetQueueInfo(q)
		if err != nil {
			return err
		}
		for state, n := range map[string]int{"pending": info.Pending, "active": info.Active, "scheduled": info.Scheduled,
			"retry": info.Retry, "archived": info.Archived} {
			ch <- prometheus.MustNewConstMetric(c.phase1, prometheus.GaugeValue, float64(n), q, state)
		}
	}
	return nil
}
