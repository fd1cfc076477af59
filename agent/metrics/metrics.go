// Package metrics is the agent's /metrics: its WS-Man calls to the
// devices, its phase-2 steps and jobs, and its provisioning port.
package metrics

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/amtops/amtops/agent/hellolisten"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/wsman"
)

// Metrics holds the agent's collectors.
type Metrics struct {
	calls    *prometheus.CounterVec
	callTime *prometheus.HistogramVec
	steps    *prometheus.HistogramVec
	jobs     *prometheus.HistogramVec
}

// New registers the collectors with reg; inFlight reports the jobs the
// agent holds now.
func New(reg prometheus.Registerer, inFlight func() int) *Metrics {
	m := &Metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "amtops_agent_wsman_calls_total",
			Help: "WS-Man calls to devices by method and result (ok, fault, unauthorized, http, transport)."}, []string{"method", "result"}),
		callTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "amtops_agent_wsman_call_seconds",
			Help: "WS-Man call latency by result.", Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, []string{"result"}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "amtops_agent_step_seconds",
			Help: "Phase-2 step duration by step and outcome.", Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}},
			[]string{"step", "outcome"}),
		jobs: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "amtops_agent_job_seconds",
			Help: "Phase-2 job duration on the device by kind and result.", Buckets: []float64{1, 5, 10, 30, 60, 120, 300, 600, 1800}},
			[]string{"kind", "result"}),
	}
	reg.MustRegister(m.calls, m.callTime, m.steps, m.jobs,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "amtops_agent_jobs_in_flight", Help: "Jobs the agent holds now."},
			func() float64 { return float64(inFlight()) }))
	return m
}

// Call is a wsman.Config.Observe.
func (m *Metrics) Call(action string, took time.Duration, err error) {
	r := callResult(err)
	m.calls.WithLabelValues(action[strings.LastIndexByte(action, '/')+1:], r).Inc()
	m.callTime.WithLabelValues(r).Observe(took.Seconds())
}

func callResult(err error) string {
	var fe *wsman.FaultError
	var he *wsman.HTTPError
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, wsman.ErrUnauthorized):
		return "unauthorized"
	case errors.As(err, &fe):
		return "fault"
	case errors.As(err, &he):
		return "http"
	}
	return "transport"
}

// Job records one finished job.
func (m *Metrics) Job(kind, result string, took time.Duration) {
	m.jobs.WithLabelValues(kind, result).Observe(took.Seconds())
}

// Reporter is a phase-2 step reporter.
type Reporter interface {
	Step(ctx context.Context, step string, outcome domain.Outcome, detail string)
}

// Steps times each step of one job as it reports to next.
func (m *Metrics) Steps(next Reporter) Reporter {
	return &stepTimer{m: m, next: next, began: map[string]time.Time{}}
}

type stepTimer struct {
	m    *Metrics
	next Reporter
	mu   sync.Mutex
	// began: when each running step started (a job runs one at a time,
	// but a stale attempt may overlap its successor briefly).
	began map[string]time.Time
}

func (s *stepTimer) Step(ctx context.Context, step string, outcome domain.Outcome, detail string) {
	now := time.Now()
	s.mu.Lock()
	if outcome == domain.OutcomeStarted {
		s.began[step] = now
	} else if t, ok := s.began[step]; ok {
		delete(s.began, step)
		s.m.steps.WithLabelValues(step, string(outcome)).Observe(now.Sub(t).Seconds())
	}
	s.mu.Unlock()
	s.next.Step(ctx, step, outcome, detail)
}

// NewHellos is a collector of the listener's Stats (nil until it listens).
func NewHellos(stats func() func() hellolisten.Stats) prometheus.Collector {
	return &helloCollector{stats: stats,
		desc: prometheus.NewDesc("amtops_agent_hellos_total",
			"Hellos on the provisioning port by result: accepted, duplicate, foreign (sender outside the agent's subnets), oversized, malformed, timed_out, read_error, queue_full; reported counts those sent to the server.",
			[]string{"result"}, nil)}
}

type helloCollector struct {
	stats func() func() hellolisten.Stats
	desc  *prometheus.Desc
}

func (c *helloCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *helloCollector) Collect(ch chan<- prometheus.Metric) {
	get := c.stats()
	if get == nil {
		return
	}
	s := get()
	for r, n := range map[string]int64{"accepted": s.Accepted, "duplicate": s.Duplicates, "foreign": s.Foreign,
		"oversized": s.Oversized, "malformed": s.Malformed, "timed_out": s.Timeouts, "read_error": s.ReadErrors,
		"queue_full": s.QueueFull, "reported": s.Reported} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(n), r)
	}
}
