package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/amtops/amtops/internal/fleet"
)

// cpuMS is CPU milliseconds per device by process kind; Product is
// server + agents + Redis, what amtops costs without the simulator.
type cpuMS struct {
	Server    float64 `json:"server"`
	Agent     float64 `json:"agent"`
	Redis     float64 `json:"redis"`
	Simulator float64 `json:"simulator"`
	Product   float64 `json:"product"`
}

type quantiles struct {
	P50   float64 `json:"p50_seconds"`
	P99   float64 `json:"p99_seconds"`
	Count int     `json:"count"`
}

// summary is the final report; --json prints it as one object.
type summary struct {
	Devices     int  `json:"devices"`
	Provisioned int  `json:"provisioned"`
	Failed      int  `json:"failed"`
	TimedOut    bool `json:"timed_out"`
	// Jobs are the Hello batches' job counters: succeeded, failed, cancelled.
	Jobs      [3]int  `json:"jobs_succeeded_failed_cancelled"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"devices_per_second"`
	CPU       cpuMS   `json:"cpu_ms_per_device"`
	// AgentBytesPerInflight is the agents' resident-memory growth over
	// the run divided by the most phase-2 jobs in flight at once.
	AgentBytesPerInflight float64              `json:"agent_bytes_per_inflight_device"`
	BareRatio             float64              `json:"bare_ratio"`
	BarePerSecond         float64              `json:"bare_devices_per_second"`
	BareSeconds           float64              `json:"bare_seconds"`
	BareCPU               float64              `json:"bare_cpu_ms_per_device"`
	BareCalls             int                  `json:"bare_wsman_calls_per_device"`
	BareRetries           int                  `json:"bare_retries"`
	BareError             string               `json:"bare_error,omitempty"`
	Agents                int                  `json:"agents"`
	Replicas              int                  `json:"replicas"`
	KeyOnDevice           bool                 `json:"key_on_device"`
	RedisCluster          bool                 `json:"redis_cluster"`
	LatencyMS             float64              `json:"latency_ms"`
	TLSRestartSeconds     float64              `json:"tls_restart_seconds"`
	InFlightPeak          int                  `json:"in_flight_peak"`
	InFlightPhase2Peak    int                  `json:"in_flight_phase2_peak"`
	PerDevice             quantiles            `json:"per_device"`
	Steps                 map[string]quantiles `json:"per_step"`
	PeakRSS               map[string]int64     `json:"peak_rss_bytes"`
	RedisPerDevice        float64              `json:"redis_commands_per_device"`
	RedisTop              map[string]float64   `json:"redis_top_commands_per_device"`
	WSManCallsPerDevice   int                  `json:"wsman_calls_per_device"`
	HandshakesPerDevice   int                  `json:"provisioning_handshakes_per_device"`
	Failures              []fleet.Failure      `json:"failures_by_step,omitempty"`
}

func per(d time.Duration, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(d.Microseconds()) / 1000 / float64(n)
}

func q(ds []time.Duration) quantiles {
	return quantiles{P50: fleet.Quantile(ds, 0.5).Seconds(), P99: fleet.Quantile(ds, 0.99).Seconds(), Count: len(ds)}
}

func summarize(o options, r fleet.Report, tm fleet.Timings) summary {
	n := max(r.Provisioned, 1)
	s := summary{Devices: r.Devices, Provisioned: r.Provisioned, Failed: r.Failed, TimedOut: r.TimedOut,
		Seconds: r.Elapsed.Seconds(), Agents: r.Agents, Replicas: r.Replicas, KeyOnDevice: o.keyOnDevice, RedisCluster: o.cluster,
		LatencyMS: float64(o.latency.Microseconds()) / 1000, TLSRestartSeconds: o.tlsRestart.Seconds(),
		InFlightPeak: tm.InFlight, InFlightPhase2Peak: tm.InFlightPhase2, PerDevice: q(tm.Device),
		Steps: map[string]quantiles{}, PeakRSS: r.PeakRSS, Failures: r.Failures, RedisTop: map[string]float64{},
		Jobs: [3]int{r.JobsSucceeded, r.JobsFailed, r.JobsCancelled}}
	s.PerSecond = float64(r.Provisioned) / r.Elapsed.Seconds()
	s.CPU = cpuMS{Server: per(r.CPU[fleet.KindServer], n), Agent: per(r.CPU[fleet.KindAgent], n),
		Redis: per(r.CPU[fleet.KindRedis], n), Simulator: per(r.CPU[fleet.KindSimulator], n)}
	s.CPU.Product = s.CPU.Server + s.CPU.Agent + s.CPU.Redis
	if tm.InFlightPhase2 > 0 {
		s.AgentBytesPerInflight = float64(r.RSSGrowth[fleet.KindAgent]) / float64(tm.InFlightPhase2)
	}
	for k, ds := range tm.Step {
		s.Steps[k] = q(ds)
	}
	s.RedisPerDevice = float64(r.Redis.Calls()) / float64(n)
	type kv struct {
		k string
		v int64
	}
	var cmds []kv
	for k, c := range r.Redis {
		cmds = append(cmds, kv{k, c.Calls})
	}
	slices.SortFunc(cmds, func(a, b kv) int { return int(b.v - a.v) })
	for _, c := range cmds[:min(len(cmds), 8)] {
		s.RedisTop[c.k] = float64(c.v) / float64(n)
	}
	return s
}

func (r *result) setBare(b bareResult) {
	s := &r.summary
	s.BareSeconds, s.BarePerSecond, s.BareCalls = b.Elapsed.Seconds(), b.PerSecond(), b.CallsPerDevice
	s.BareCPU, s.BareRetries = per(b.CPU, max(b.Provisioned, 1)), b.Retries
	if s.BarePerSecond > 0 && s.BareError == "" {
		s.BareRatio = s.PerSecond / s.BarePerSecond
	}
}

func printTable(w io.Writer, s summary) {
	mb := func(b int64) string { return fmt.Sprintf("%.0f MB", float64(b)/(1<<20)) }
	fmt.Fprintf(w, "\nfleet bench (shared machine figures)\n")
	row := func(k, format string, a ...any) { fmt.Fprintf(w, "  %-26s "+format+"\n", append([]any{k}, a...)...) }
	row("devices", "%d (%d provisioned, %d failed%s)", s.Devices, s.Provisioned, s.Failed, map[bool]string{true: ", TIMED OUT"}[s.TimedOut])
	row("jobs", "%d succeeded, %d failed, %d cancelled", s.Jobs[0], s.Jobs[1], s.Jobs[2])
	row("agents / replicas", "%d / %d", s.Agents, s.Replicas)
	row("keys", "%s", keysWhere(s.KeyOnDevice))
	row("redis", "%s", map[bool]string{false: "one redis-server", true: "Redis Cluster, 3 masters"}[s.RedisCluster])
	row("latency / TLS restart", "%.0f ms / %.0f s", s.LatencyMS, s.TLSRestartSeconds)
	row("in flight peak", "%d (phase 2: %d)", s.InFlightPeak, s.InFlightPhase2Peak)
	row("wall time", "%.1f s", s.Seconds)
	row("devices/s", "%.2f", s.PerSecond)
	row("per device p50 / p99", "%.1f s / %.1f s", s.PerDevice.P50, s.PerDevice.P99)
	row("CPU ms/device", "server %.1f, agent %.1f, redis %.1f = product %.1f; simulator %.1f",
		s.CPU.Server, s.CPU.Agent, s.CPU.Redis, s.CPU.Product, s.CPU.Simulator)
	var rss []string
	for _, k := range sortedKeys(s.PeakRSS) {
		rss = append(rss, k+" "+mb(s.PeakRSS[k]))
	}
	row("peak RSS (one process)", "%s", strings.Join(rss, ", "))
	row("agent bytes/in-flight dev", "%.0f KiB", s.AgentBytesPerInflight/1024)
	var top []string
	for _, k := range sortedKeys(s.RedisTop) {
		top = append(top, fmt.Sprintf("%s %.1f", k, s.RedisTop[k]))
	}
	row("Redis commands/device", "%.1f (%s)", s.RedisPerDevice, strings.Join(top, ", "))
	row("WS-Man calls/device", "%d, %d provisioning handshakes", s.WSManCallsPerDevice, s.HandshakesPerDevice)
	if s.BarePerSecond > 0 {
		row("bare limit", "%.2f devices/s in %.1f s, %.1f CPU ms/device, %d calls/device", s.BarePerSecond, s.BareSeconds, s.BareCPU, s.BareCalls)
		row("pipeline ÷ bare", "%.2f", s.BareRatio)
	}
	if s.BareError != "" {
		row("bare limit", "not comparable: %s", s.BareError)
	}
	fmt.Fprintf(w, "  per step (p50 / p99 s, count):\n")
	for _, k := range sortedKeys(s.Steps) {
		st := s.Steps[k]
		fmt.Fprintf(w, "    %-28s %7.2f %7.2f %6d\n", k, st.P50, st.P99, st.Count)
	}
	for _, f := range s.Failures {
		fmt.Fprintf(w, "  failed: %4d at %-18s %s\n", f.Count, f.Step, f.Example)
	}
}
