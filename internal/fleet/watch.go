package fleet

import (
	"encoding/json"
	"net/http"

	"context"
	"fmt"
	"github.com/amtops/amtops/internal/amtsim"
	"slices"
	"strings"
	"time"

	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// Progress is the site's state as Watch last read it.
type Progress struct {
	Elapsed     time.Duration
	Provisioned int // jobs succeeded
	Failed      int // jobs failed or cancelled
	Open        int // jobs not finished
	Batches     int
}

// Failure counts devices that ended failed at one step.
type Failure struct {
	Step    string `json:"step"`
	Count   int    `json:"count"`
	Example string `json:"example"`
}

// Report is what Watch measured between T0 and the end.
type Report struct {
	Devices, Agents, Replicas int
	// Provisioned and Failed count devices at the end; every other device
	// was still in work when the deadline passed (TimedOut).
	Provisioned, Failed int
	TimedOut            bool
	Elapsed             time.Duration
	Failures            []Failure
	// Jobs are the Hello batches' counters: succeeded, failed, cancelled.
	JobsSucceeded, JobsFailed, JobsCancelled int
	// CPU is user+system time in the window, by process kind; PeakRSS
	// the largest VmHWM of one process of that kind; RSSGrowth the sum
	// over the kind's processes of VmHWM less VmRSS at T0.
	CPU       map[string]time.Duration
	PeakRSS   map[string]int64
	RSSGrowth map[string]int64
	// Redis is every command Redis ran in the window.
	Redis CommandStats
}

// Watch samples every process once a second and reads the site's Hello
// batches every two seconds until every device has been provisioned or
// has failed with no job open, or timeout passes, calling progress (if
// set) with each reading.
func (f *Fleet) Watch(ctx context.Context, timeout time.Duration, progress func(Progress)) (Report, error) {
	r := Report{Devices: f.cfg.Devices, Agents: f.cfg.Agents, Replicas: f.cfg.Replicas,
		CPU: map[string]time.Duration{}, PeakRSS: map[string]int64{}, RSSGrowth: map[string]int64{}}
	last := map[string]Usage{}
	deadline := f.T0.Add(timeout)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for n := 0; ; n++ {
		for _, p := range f.Procs() {
			if u := p.Sample(); u.Exists {
				last[p.Name] = u
			}
		}
		done := false
		if n%2 == 1 {
			pr, err := f.progress(ctx)
			if err != nil {
				return r, err
			}
			if progress != nil {
				progress(pr)
			}
			done = pr.Open == 0 && pr.Provisioned+pr.Failed >= f.cfg.Devices
		}
		if done || time.Now().After(deadline) {
			r.TimedOut = !done
			break
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-tick.C:
		}
	}
	r.Elapsed = time.Since(f.T0)
	for _, p := range f.Procs() {
		u, b := last[p.Name], f.base[p.Name]
		r.CPU[p.Kind] += u.CPU - b.CPU
		r.PeakRSS[p.Kind] = max(r.PeakRSS[p.Kind], u.HWM)
		r.RSSGrowth[p.Kind] += max(u.HWM-b.RSS, 0)
	}
	cs, err := f.redisStats(ctx)
	if err != nil {
		return r, err
	}
	r.Redis = cs.Sub(f.redisBase)
	return r, f.settle(ctx, &r)
}

// progress sums the Hello batches' counters (one read per batch).
func (f *Fleet) progress(ctx context.Context) (Progress, error) {
	resp, err := f.Admin.ListBatches(ctx, &pb.ListBatchesRequest{Limit: 1000})
	if err != nil {
		return Progress{}, fmt.Errorf("fleet: list batches: %w", err)
	}
	pr := Progress{Elapsed: time.Since(f.T0)}
	for _, b := range resp.GetBatches() {
		pr.Batches++
		pr.Provisioned += int(b.GetSucceeded())
		pr.Failed += int(b.GetFailed() + b.GetCancelled())
		pr.Open += int(b.GetTotal() - b.GetSucceeded() - b.GetFailed() - b.GetCancelled())
	}
	return pr, nil
}

// settle reads every device and the batches' counters into r.
func (f *Fleet) settle(ctx context.Context, r *Report) error {
	resp, err := f.Admin.ListBatches(ctx, &pb.ListBatchesRequest{Limit: 1000})
	if err != nil {
		return fmt.Errorf("fleet: list batches: %w", err)
	}
	for _, b := range resp.GetBatches() {
		r.JobsSucceeded += int(b.GetSucceeded())
		r.JobsFailed += int(b.GetFailed())
		r.JobsCancelled += int(b.GetCancelled())
	}
	devs, err := f.ListDevices(ctx)
	if err != nil {
		return err
	}
	byStep := map[string]*Failure{}
	for _, d := range devs {
		switch {
		case d.GetStatus() == pb.DeviceStatus_DEVICE_STATUS_PROVISIONED:
			r.Provisioned++
		case d.GetLastError() != "":
			r.Failed++
			fl := byStep[d.GetLastErrorStep()]
			if fl == nil {
				fl = &Failure{Step: d.GetLastErrorStep(), Example: d.GetLastError()}
				byStep[fl.Step] = fl
			}
			fl.Count++
		}
	}
	for _, fl := range byStep {
		r.Failures = append(r.Failures, *fl)
	}
	slices.SortFunc(r.Failures, func(a, b Failure) int { return b.Count - a.Count })
	return nil
}

// ListDevices reads the whole collection, 1000 devices a call.
func (f *Fleet) ListDevices(ctx context.Context) ([]*pb.Device, error) {
	var devs []*pb.Device
	cursor := ""
	for range 1000 {
		resp, err := f.Admin.ListDevices(ctx, &pb.ListDevicesRequest{Collection: Collection, Limit: 1000, Cursor: cursor})
		if err != nil {
			return nil, fmt.Errorf("fleet: list devices: %w", err)
		}
		devs = append(devs, resp.GetDevices()...)
		if cursor = resp.GetNextCursor(); cursor == "" {
			return devs, nil
		}
	}
	return nil, fmt.Errorf("fleet: list devices: more than 1000 pages")
}

// Timings are per-device and per-step durations from the operations log.
type Timings struct {
	// Device is, per provisioned device, from its batch's creation to
	// its job's "complete" event.
	Device []time.Duration
	// Step is per step ("1:issue-server-cert", "2:activate", …) every
	// duration seen: phase 2 from its started event to its end, phase 1
	// from the previous event of the job.
	Step map[string][]time.Duration
	// InFlight is the most jobs between their batch's creation and their
	// end at one time; InFlightPhase2 the most between their first
	// phase-2 event and their end.
	InFlight, InFlightPhase2 int
}

// ReadTimings reads every device's operations log (call it after Watch:
// it loads the server).
func (f *Fleet) ReadTimings(ctx context.Context) (Timings, error) {
	t := Timings{Step: map[string][]time.Duration{}}
	resp, err := f.Admin.ListBatches(ctx, &pb.ListBatchesRequest{Limit: 1000})
	if err != nil {
		return t, fmt.Errorf("fleet: list batches: %w", err)
	}
	created := map[string]time.Time{}
	for _, b := range resp.GetBatches() {
		created[b.GetId()] = b.GetCreatedAt().AsTime()
	}
	devs, err := f.ListDevices(ctx)
	if err != nil {
		return t, err
	}
	var all, p2 []span
	for _, d := range devs {
		l, err := f.Admin.GetDeviceLog(ctx, &pb.GetDeviceLogRequest{Id: d.GetId(), Limit: 1000})
		if err != nil {
			return t, fmt.Errorf("fleet: device log %s: %w", d.GetId(), err)
		}
		evs := l.GetEvents()
		slices.SortStableFunc(evs, func(a, b *pb.OperationEvent) int { return a.GetTime().AsTime().Compare(b.GetTime().AsTime()) })
		a, b := t.add(evs, created)
		all, p2 = append(all, a...), append(p2, b...)
	}
	t.InFlight, t.InFlightPhase2 = peak(all), peak(p2)
	return t, nil
}

type span struct{ from, to time.Time }

// add takes one device's events, oldest first.
func (t *Timings) add(evs []*pb.OperationEvent, created map[string]time.Time) (all, p2 []span) {
	started := map[string]time.Time{}
	prev := map[string]time.Time{} // per job, the last event
	p2start := map[string]time.Time{}
	for _, e := range evs {
		at, job := e.GetTime().AsTime(), e.GetJobId()
		key := fmt.Sprintf("%d:%s", e.GetPhase(), e.GetStep())
		if e.GetPhase() == 2 {
			if _, ok := p2start[job]; !ok {
				p2start[job] = at
			}
		}
		switch {
		case e.GetOutcome() == pb.Outcome_OUTCOME_STARTED:
			started[job+key] = at
		case e.GetPhase() == 2 && !started[job+key].IsZero():
			t.Step[key] = append(t.Step[key], at.Sub(started[job+key]))
		case e.GetPhase() == 1 && job != "":
			from, ok := prev[job]
			if !ok {
				from = created[batchOf(job)]
			}
			if !from.IsZero() {
				t.Step[key] = append(t.Step[key], at.Sub(from))
			}
		}
		prev[job] = at
		if e.GetPhase() == 2 && e.GetStep() == "complete" && e.GetOutcome() != pb.Outcome_OUTCOME_RETRYING {
			if c, ok := created[batchOf(job)]; ok {
				all = append(all, span{c, at})
				if e.GetOutcome() == pb.Outcome_OUTCOME_OK {
					t.Device = append(t.Device, at.Sub(c))
				}
			}
			if s, ok := p2start[job]; ok {
				p2 = append(p2, span{s, at})
			}
		}
	}
	return all, p2
}

// batchOf is the batch part of a "batch:device" job ID.
func batchOf(job string) string {
	b, _, _ := strings.Cut(job, ":")
	return b
}

// peak is the most spans open at one instant.
func peak(ss []span) int {
	type edge struct {
		at time.Time
		d  int
	}
	es := make([]edge, 0, 2*len(ss))
	for _, s := range ss {
		es = append(es, edge{s.from, 1}, edge{s.to, -1})
	}
	slices.SortFunc(es, func(a, b edge) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.d - b.d // ends before starts at the same instant
	})
	n, best := 0, 0
	for _, e := range es {
		n += e.d
		best = max(best, n)
	}
	return best
}

// Quantile is the q-quantile (0..1) of ds, nearest rank; 0 for none.
func Quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// SimDevices reads every simulator's device states (GET /devices).
func (f *Fleet) SimDevices(ctx context.Context) ([]amtsim.DeviceState, error) {
	var out []amtsim.DeviceState
	for _, addr := range f.StateAddrs {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/devices", nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("fleet: simulator state %s: %w", addr, err)
		}
		var ds []amtsim.DeviceState
		err = json.NewDecoder(resp.Body).Decode(&ds)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("fleet: simulator state %s: %w", addr, err)
		}
		out = append(out, ds...)
	}
	return out, nil
}
