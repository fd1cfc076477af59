// Package metrics is what /metrics shows of a site: fleet-wide gauges
// read from Redis at each scrape (the same on every replica), and this
// replica's counters and histograms of the work it did (sum them over
// replicas).
package metrics

import (
	"context"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/server/discover"
)

// Work counts what this replica did; it is the jobs.Observer and the
// batch service's observer.
type Work struct {
	jobs      *prometheus.CounterVec
	failures  *prometheus.CounterVec
	steps     *prometheus.HistogramVec
	phase1    *prometheus.HistogramVec
	batches   *prometheus.CounterVec
	batchJobs *prometheus.CounterVec
	hellos    *prometheus.CounterVec
}

// Seconds from a fast Redis step to a slow CA or directory one.
var stepBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// NewWork registers the work metrics with reg.
func NewWork(reg prometheus.Registerer) *Work {
	w := &Work{
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "amtops_jobs_finished_total",
			Help: "Jobs that reached their final state, by kind and state (succeeded, failed, cancelled)."}, []string{"kind", "state"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "amtops_job_failures_total",
			Help: "Jobs that ended failed, by kind and the step that failed."}, []string{"kind", "step"}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "amtops_phase1_step_seconds",
			Help: "Duration of phase-1 steps (certificate authority, directory, secrets), by step and outcome.", Buckets: stepBuckets},
			[]string{"step", "outcome"}),
		phase1: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "amtops_phase1_seconds",
			Help: "Duration of a job's phase 1, by kind and result (queued: its phase-2 job is queued; failed).", Buckets: stepBuckets},
			[]string{"kind", "result"}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "amtops_batches_started_total",
			Help: "Batches created, by kind and origin (admin, sweep, hello, rename)."}, []string{"kind", "origin"}),
		batchJobs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "amtops_batch_jobs_total",
			Help: "Devices in the batches created, by kind and origin."}, []string{"kind", "origin"}),
		hellos: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "amtops_hellos_total",
			Help: "Hellos agents reported, by what the server made of them: queued (provisioning started), matched (known, nothing started), unknown (not in the inventory), refused (a device of another subnet)."},
			[]string{"result"}),
	}
	reg.MustRegister(w.jobs, w.failures, w.steps, w.phase1, w.batches, w.batchJobs, w.hellos)
	return w
}

// JobFinished implements jobs.Observer.
func (w *Work) JobFinished(kind domain.JobKind, state domain.JobState, step string) {
	k := kindLabel(kind)
	w.jobs.WithLabelValues(k, string(state)).Inc()
	if state == domain.JobFailed {
		w.failures.WithLabelValues(k, step).Inc()
	}
}

// Phase1Step implements jobs.Observer.
func (w *Work) Phase1Step(step string, outcome domain.Outcome, d time.Duration) {
	w.steps.WithLabelValues(step, string(outcome)).Observe(d.Seconds())
}

// Phase1Done implements jobs.Observer.
func (w *Work) Phase1Done(kind domain.JobKind, d time.Duration, err error) {
	result := "queued"
	if err != nil {
		result = "failed"
	}
	w.phase1.WithLabelValues(kindLabel(kind), result).Observe(d.Seconds())
}

// BatchStarted counts a batch created (batch.Service.Observe).
func (w *Work) BatchStarted(b domain.Batch) {
	w.batches.WithLabelValues(kindLabel(b.Kind), b.Origin).Inc()
	w.batchJobs.WithLabelValues(kindLabel(b.Kind), b.Origin).Add(float64(b.Total))
}

// Hellos is a HelloRecorder that counts what it recorded.
type Hellos struct {
	Recorder interface {
		Record(ctx context.Context, agentID string, subnet netip.Prefix, hellos []discover.Hello) (discover.HelloCounts, error)
	}
	Work *Work
}

// Record implements api.Hellos.
func (h Hellos) Record(ctx context.Context, agentID string, subnet netip.Prefix, hellos []discover.Hello) (discover.HelloCounts, error) {
	n, err := h.Recorder.Record(ctx, agentID, subnet, hellos)
	c := h.Work.hellos
	c.WithLabelValues("queued").Add(float64(n.Queued))
	c.WithLabelValues("matched").Add(float64(n.Matched - n.Queued))
	c.WithLabelValues("unknown").Add(float64(n.Unknown))
	c.WithLabelValues("refused").Add(float64(n.Refused))
	return n, err
}

func kindLabel(k domain.JobKind) string {
	if k == "" {
		return "unknown"
	}
	return string(k)
}
