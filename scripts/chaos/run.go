package main

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/fleet"
	"github.com/amtops/amtops/internal/secrets"
	"github.com/amtops/amtops/server/store"
)

// runState is one experiment while it runs.
type runState struct {
	o      options
	e      experiment
	f      *fleet.Fleet
	st     *store.Store
	sealer *secrets.Sealer
	q      *store.LeaseQueue
	say    func(string, ...any)
	late   *lateCheck
	found  *fleet.Needles // every secret seen during the run

	mu    sync.Mutex
	notes []string
	last  progress
}

// progress is the Hello batches' counters, read from Redis.
type progress struct {
	provisioned, failed, cancelled, open, batches int
}

// fleetConfig is the fleet every experiment starts from: short,
// test-friendly device timings (as TestSmallFleet's), a lease TTL the
// freeze outlasts.
func fleetConfig(o options, dir string, bin map[string]string) fleet.Config {
	return fleet.Config{Devices: o.devices, Agents: o.agents, Net: o.net, Dir: dir, Bin: bin, HelloInterval: helloUnit,
		KeyOnDevice: o.keyOnDevice, AOF: o.aof, TLSRestart: time.Second, CommitDelay: 300 * time.Millisecond,
		Server: func(c *config.Server) {
			c.Phase2.RetryDelay, c.Phase2.ReapEvery, c.Phase2.LeaseTTL = 2*time.Second, time.Second, o.leaseTTL
		},
		Agent: func(_ int, c *config.Agent) { c.AMT.CommitWait = 200 * time.Millisecond },
	}
}

// helloUnit is firmware's minute in the simulator's Hello schedule. A
// device's window closes 60 units after its last Hello, even with a
// session under way (amtsim), and a session begun stops the Hellos: at a
// 1 s unit an agent frozen 40 s or cut off 60 s came back to devices
// whose window had closed (132 of 2,000 failed "16993 refused"), and at
// 200 ms the storm's slowed sessions did (315 of 1,000). Firmware's hour
// closes under no such session; 5 s (five minutes) keeps the faults the
// cause of what fails.
const helloUnit = 5 * time.Second

func runExperiment(ctx context.Context, o options, e experiment, bin map[string]string, dir string, say func(string, ...any)) (*audit, error) {
	cfg := fleetConfig(o, dir, bin)
	if e.configure != nil {
		e.configure(o, &cfg)
	}
	f, err := fleet.Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sealer, err := secrets.LoadKey(filepath.Join(f.SiteDir(), "site.key"))
	if err != nil {
		return nil, err
	}
	st := store.New(f.Redis(), sealer, store.Options{})
	r := &runState{o: o, e: e, f: f, st: st, sealer: sealer, q: store.NewLeaseQueue(st, store.QueueOptions{}), say: say,
		late: &lateCheck{}, found: fleet.NewNeedles()}
	stopScan := r.collectSecrets(ctx)
	elapsed, done, err := r.drive(ctx)
	stopScan()
	if err != nil {
		return nil, err
	}
	// The agents stop before the audit, so that nothing changes a device
	// or the site while it is read.
	for i := range f.Subnets {
		if err := f.Proc("agent-" + itoa(i)).Stop(40 * time.Second); err != nil {
			return nil, err
		}
	}
	say("  %s after %.1fs; auditing", map[bool]string{true: "terminal", false: "deadline"}[done], elapsed.Seconds())
	return r.audit(ctx, elapsed, done)
}

// drive starts the fault when its moment comes and follows the batches
// until the fault is over and every device is terminal, or the deadline.
func (r *runState) drive(ctx context.Context) (time.Duration, bool, error) {
	deadline := r.f.T0.Add(r.o.timeout)
	faultErr := make(chan error, 1)
	struck, over := false, false
	lastSay := time.Time{}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		pr, err := r.progress(ctx)
		if err == nil {
			r.mu.Lock()
			r.last = pr
			r.mu.Unlock()
		}
		if !struck && (!r.e.midBatch || float64(pr.provisioned) >= r.o.trigger*float64(r.o.devices)) {
			struck = true
			r.strike(ctx, faultErr)
		}
		select {
		case err := <-faultErr:
			if err != nil {
				return 0, false, fmt.Errorf("%s: fault: %w", r.e.name, err)
			}
			over = true
		default:
		}
		if time.Since(lastSay) >= 10*time.Second {
			lastSay = time.Now()
			r.say("  %5.0fs  %d provisioned, %d failed, %d in work", time.Since(r.f.T0).Seconds(), pr.provisioned, pr.failed, pr.open)
		}
		if over && err == nil && pr.open == 0 {
			if n, err := r.terminal(ctx); err == nil && n == r.o.devices {
				return time.Since(r.f.T0), true, nil
			}
		}
		if time.Now().After(deadline) {
			return time.Since(r.f.T0), false, nil
		}
		select {
		case <-ctx.Done():
			return 0, false, ctx.Err()
		case <-tick.C:
		}
	}
}

// strike snapshots the leases the fault may strand, then runs the fault.
func (r *runState) strike(ctx context.Context, done chan<- error) {
	subnets := r.f.Subnets[:1]
	if r.e.name == "partition" {
		subnets = r.f.Subnets
	}
	if err := r.late.snapshot(ctx, r, subnets); err != nil {
		done <- err
		return
	}
	go func() { done <- r.e.fault(ctx, r) }()
}

// note records what happened, when, and how far the fleet was.
func (r *runState) note(format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	line := fmt.Sprintf("%6.1fs (%d/%d provisioned) ", time.Since(r.f.T0).Seconds(), r.last.provisioned, r.o.devices) +
		fmt.Sprintf(format, a...)
	r.notes = append(r.notes, line)
	r.say("  %s", line)
}

// progress sums the batches' counters from Redis (the server may be down).
func (r *runState) progress(ctx context.Context) (progress, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ids, err := r.st.ListBatches(cctx, 10000)
	if err != nil {
		return progress{}, err
	}
	var p progress
	for _, id := range ids {
		b, err := r.st.GetBatch(cctx, id)
		if err != nil {
			return progress{}, err
		}
		p.batches++
		p.provisioned += b.Succeeded
		p.failed += b.Failed
		p.cancelled += b.Cancelled
		p.open += b.Pending()
	}
	return p, nil
}

// terminal counts devices provisioned or failed with a reason.
func (r *runState) terminal(ctx context.Context) (int, error) {
	n := 0
	err := r.st.EachDevice(ctx, func(d domain.Device) error {
		if d.Status == domain.StatusProvisioned || d.LastError != "" {
			n++
		}
		return nil
	})
	return n, err
}

// waitRedis waits until Redis answers again (it may be loading its AOF).
func (r *runState) waitRedis(ctx context.Context) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		err := r.f.Redis().Ping(ctx).Err()
		if err == nil {
			r.note("redis answers again")
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis not back: %w", err)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// notesOf copies the notes.
func (r *runState) notesOf() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.notes...)
}

func itoa(i int) string { return fmt.Sprint(i) }
