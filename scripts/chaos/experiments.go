package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/amtops/amtops/internal/fleet"
)

// experiment is one fault on a fresh fleet.
type experiment struct {
	name  string
	title func(o options) string
	// configure adjusts the fleet before it starts (faults, proxies).
	configure func(o options, c *fleet.Config)
	// midBatch holds the fault until o.trigger of the devices are
	// provisioned, so that it strikes with work in flight; otherwise it
	// strikes as soon as the devices serve.
	midBatch bool
	// fault strikes and returns once it is over (the process is back,
	// the link healed); r.note records what happened when.
	fault func(ctx context.Context, r *runState) error
}

// The faults of issue 14, in its order.
var experiments = []experiment{
	{name: "server-kill", midBatch: true,
		title: func(o options) string {
			return fmt.Sprintf("kill -9 of the server mid-batch, restarted after %s", o.serverDown)
		},
		fault: killServer},
	{name: "agent-kill", midBatch: true,
		title: func(options) string { return "kill -9 of one agent mid-batch, restarted with its state" },
		fault: killAgent},
	{name: "redis-restart", midBatch: true,
		title: func(options) string { return "Redis restarted (SIGTERM) mid-batch" },
		fault: restartRedis},
	{name: "redis-kill", midBatch: true,
		title: func(options) string { return "Redis kill -9 mid-batch, restarted on its append-only file" },
		fault: killRedis},
	{name: "agent-freeze", midBatch: true,
		title: func(o options) string {
			return fmt.Sprintf("one agent frozen (SIGSTOP) for %s, past the %s lease TTL, then resumed", o.freeze, o.leaseTTL)
		},
		fault: freezeAgent},
	{name: "partition", midBatch: true,
		title: func(o options) string {
			return fmt.Sprintf("every agent cut off from the server for %s (proxy drops and refuses connections)", o.partition)
		},
		configure: func(_ options, c *fleet.Config) { c.Proxy = true },
		fault:     partition},
	{name: "sim-faults",
		title: func(options) string { return "simulator faults: 5% dropped connections, 5% HTTP 500, 1% reboots" },
		configure: func(_ options, c *fleet.Config) {
			c.Faults = simFaults
		},
		fault: func(context.Context, *runState) error { return nil }},
	{name: "hello-storm",
		title: func(options) string {
			return fmt.Sprintf("Hello storm: every device triggered at once, %d rounds, Hello schedule every %s", stormRounds, helloUnit)
		},
		fault: helloStorm},
}

const (
	simFaults   = "drop=0.05,http500=0.05,reboot=0.01"
	stormRounds = 3
)

func names() []string {
	out := make([]string, len(experiments))
	for i, e := range experiments {
		out[i] = e.name
	}
	return out
}

func lookup(name string) *experiment {
	for i := range experiments {
		if experiments[i].name == name {
			return &experiments[i]
		}
	}
	return nil
}

// selected is the experiments named, in the suite's order; all for none.
func selected(only []string) []experiment {
	if len(only) == 0 {
		return experiments
	}
	var out []experiment
	for _, e := range experiments {
		for _, n := range only {
			if e.name == n {
				out = append(out, e)
				break
			}
		}
	}
	return out
}

func killServer(ctx context.Context, r *runState) error {
	p := r.f.Proc("server-0")
	if err := p.Kill(); err != nil {
		return err
	}
	r.note("server-0 killed (-9)")
	if err := sleep(ctx, r.o.serverDown); err != nil {
		return err
	}
	if err := p.Start(); err != nil {
		return err
	}
	r.note("server-0 started again (pid %d)", p.PID())
	return nil
}

func killAgent(ctx context.Context, r *runState) error {
	p := r.f.Proc("agent-0")
	if err := p.Kill(); err != nil {
		return err
	}
	r.note("agent-0 killed (-9) holding %d leases", len(r.late.jobs))
	if err := sleep(ctx, 2*time.Second); err != nil {
		return err
	}
	if err := p.Start(); err != nil {
		return err
	}
	r.note("agent-0 started again on its state (pid %d)", p.PID())
	return nil
}

func restartRedis(ctx context.Context, r *runState) error {
	p := r.f.Proc("redis")
	if err := p.Restart(30 * time.Second); err != nil {
		return err
	}
	r.note("redis stopped (SIGTERM) and started again (pid %d)", p.PID())
	return r.waitRedis(ctx)
}

func killRedis(ctx context.Context, r *runState) error {
	p := r.f.Proc("redis")
	if err := p.Kill(); err != nil {
		return err
	}
	r.note("redis killed (-9)")
	if err := p.Start(); err != nil {
		return err
	}
	r.note("redis started again on its AOF (pid %d)", p.PID())
	return r.waitRedis(ctx)
}

func freezeAgent(ctx context.Context, r *runState) error {
	p := r.f.Proc("agent-0")
	if err := p.Pause(); err != nil {
		return err
	}
	r.note("agent-0 frozen (SIGSTOP) holding %d leases", len(r.late.jobs))
	if err := sleep(ctx, r.o.freeze); err != nil {
		_ = p.Resume()
		return err
	}
	if err := r.late.beforeReturn(ctx, r); err != nil {
		_ = p.Resume()
		return err
	}
	if err := p.Resume(); err != nil {
		return err
	}
	r.late.returned = time.Now()
	r.note("agent-0 resumed (SIGCONT); %d of its leases had expired and been reaped", r.late.reaped())
	return nil
}

func partition(ctx context.Context, r *runState) error {
	for _, p := range r.f.Proxies {
		p.Partition()
	}
	r.note("every agent cut off from the server holding %d leases", len(r.late.jobs))
	if err := sleep(ctx, r.o.partition); err != nil {
		return err
	}
	if err := r.late.beforeReturn(ctx, r); err != nil {
		return err
	}
	dropped, refused := 0, 0
	for _, p := range r.f.Proxies {
		p.Heal()
		d, n := p.Stats()
		dropped, refused = dropped+d, refused+n
	}
	r.late.returned = time.Now()
	r.note("healed: %d connections dropped, %d refused while cut; %d of the leases had expired and been reaped",
		dropped, refused, r.late.reaped())
	return nil
}

// helloStorm triggers every device's Hello at once, several rounds, on
// top of the Hellos the devices send from power-on every helloUnit.
func helloStorm(ctx context.Context, r *runState) error {
	type target struct{ state, dev string }
	var all []target
	j := 0
	for _, addrs := range r.f.Devices {
		if len(addrs) == 0 {
			continue // no simulator for an empty subnet
		}
		for _, a := range addrs {
			all = append(all, target{r.f.StateAddrs[j], a.String()})
		}
		j++
	}
	for round := range stormRounds {
		var sent atomic.Int64
		var wg sync.WaitGroup
		sem := make(chan struct{}, 64)
		for _, t := range all {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if triggerHello(ctx, t.state, t.dev) {
					sent.Add(1)
				}
			})
		}
		wg.Wait()
		r.note("storm round %d: %d of %d devices triggered at once (the others had left state 0)", round+1, sent.Load(), len(all))
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// triggerHello is amtsim's in-band trigger; false when the device sends
// none any more (activated).
func triggerHello(ctx context.Context, stateAddr, dev string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+stateAddr+"/devices/"+dev+"/hello", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusAccepted
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
