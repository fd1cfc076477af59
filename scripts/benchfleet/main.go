// Command benchfleet is `make bench-fleet`: a whole site as separate
// processes (a private redis-server, amtops-server replicas, enrolled
// amtops-agents, amtsim fleets of factory devices) provisions the fleet
// through the devices' Hellos, measured from /proc and Redis INFO; then
// the bare limit (bare.go) does only the unavoidable work for the same
// fleet in one process, and the table shows pipeline ÷ bare.
//
//	go run ./scripts/benchfleet [--devices 1000] [--latency 100ms] [--tls-restart 20s] [--agents 2] [--replicas 1] [--keys-at-site] [--json]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/amtops/amtops/internal/amtsim"
	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/fleet"
)

// options are the command line.
type options struct {
	devices, agents, replicas, concurrency int
	latency, tlsRestart, commitDelay       time.Duration
	commitWait, timeout                    time.Duration
	keyOnDevice, asJSON, bare, aof, keep   bool
	cluster                                bool
	dir, profile                           string
	profileAfter, profileFor               time.Duration
}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "benchfleet:", err)
		os.Exit(1)
	}
}

func parse(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("benchfleet", flag.ContinueOnError)
	fs.IntVar(&o.devices, "devices", 1000, "factory devices")
	fs.IntVar(&o.agents, "agents", 2, "agents, one subnet each")
	fs.IntVar(&o.replicas, "replicas", 1, "server replicas on the one Redis")
	fs.IntVar(&o.concurrency, "concurrency", 0, "agent concurrency (0: the agent's default)")
	fs.DurationVar(&o.latency, "latency", 100*time.Millisecond, "simulator latency per WS-Man call")
	fs.DurationVar(&o.tlsRestart, "tls-restart", 20*time.Second, "simulator: 16993 silent after a TLS commit")
	fs.DurationVar(&o.commitDelay, "commit-delay", 3*time.Second, "simulator: off the network after CommitChanges")
	fs.DurationVar(&o.commitWait, "commit-wait", 0, "agent amt.commit_wait (0: the agent's default)")
	fs.DurationVar(&o.timeout, "timeout", 15*time.Minute, "give up on the fleet after this")
	keysAtSite := fs.Bool("keys-at-site", false, "the server makes every device key (amt.key_on_device false)")
	fs.BoolVar(&o.keyOnDevice, "key-on-device", true, "the devices make their keys (amt.key_on_device)")
	fs.BoolVar(&o.asJSON, "json", false, "print only one final JSON object")
	fs.BoolVar(&o.bare, "bare", true, "also run the bare limit and report pipeline ÷ bare")
	fs.BoolVar(&o.aof, "aof", false, "Redis append-only file")
	fs.BoolVar(&o.cluster, "cluster", false, "a three-master Redis Cluster instead of one redis-server")
	fs.BoolVar(&o.keep, "keep", false, "keep --dir (logs, state) after the run")
	fs.StringVar(&o.dir, "dir", "var/benchfleet", "working directory (emptied first)")
	fs.StringVar(&o.profile, "profile", "", "write CPU profiles of every server and agent into this directory")
	fs.DurationVar(&o.profileAfter, "profile-after", 20*time.Second, "start the profiles this long after the devices begin")
	fs.DurationVar(&o.profileFor, "profile-for", 30*time.Second, "length of the CPU profiles")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if *keysAtSite {
		o.keyOnDevice = false
	}
	switch {
	case o.devices <= 0:
		return o, fmt.Errorf("--devices: must be positive, got %d", o.devices)
	case o.agents <= 0 || o.agents > 64:
		return o, fmt.Errorf("--agents: 1 to 64, got %d", o.agents)
	case o.replicas <= 0 || o.replicas > 16:
		return o, fmt.Errorf("--replicas: 1 to 16, got %d", o.replicas)
	case o.latency < 0 || o.tlsRestart < 0 || o.commitDelay < 0 || o.commitWait < 0:
		return o, errors.New("--latency, --tls-restart, --commit-delay, --commit-wait: must not be negative")
	case o.timeout <= 0:
		return o, fmt.Errorf("--timeout: must be positive, got %s", o.timeout)
	}
	return o, nil
}

func run(args []string, stdout, stderr io.Writer) error {
	o, err := parse(args)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	say := func(format string, a ...any) {
		if !o.asJSON {
			fmt.Fprintf(stderr, format+"\n", a...)
		}
	}
	if err := os.RemoveAll(o.dir); err != nil {
		return err
	}
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return err
	}
	if !o.keep {
		defer os.RemoveAll(dir)
	}
	say("building the commands")
	bin, err := fleet.Build(ctx, filepath.Join(dir, "bin"))
	if err != nil {
		return err
	}
	say("starting redis, %d server replica(s), %d agent(s) and %d factory devices (latency %s, TLS restart %s, keys %s)",
		o.replicas, o.agents, o.devices, o.latency, o.tlsRestart, keysWhere(o.keyOnDevice))
	res, err := pipeline(ctx, o, bin, filepath.Join(dir, "pipeline"), say)
	if err != nil {
		return err
	}
	if o.bare {
		say("the bare limit: the same fleet, only the unavoidable work, in one process")
		b, err := runBare(ctx, o, bin, filepath.Join(dir, "bare"), res.calls)
		if err != nil {
			// The pipeline's figures stand; the ratio is then unknown.
			say("bare: %v", err)
			res.summary.BareError = err.Error()
		}
		res.setBare(b)
	}
	if o.asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res.summary)
	}
	printTable(stdout, res.summary)
	return nil
}

func keysWhere(onDevice bool) string {
	if onDevice {
		return "on the device"
	}
	return "at the site"
}

// result is the pipeline's summary and what the bare run must repeat.
type result struct {
	summary summary
	calls   deviceCalls
}

// deviceCalls is what one device saw in the pipeline run, as its
// simulator counts it: the bare run checks it made the same.
type deviceCalls struct {
	Requests, Sessions int // per device, the most common value
}

func pipeline(ctx context.Context, o options, bin map[string]string, dir string, say func(string, ...any)) (result, error) {
	cfg := fleet.Config{Devices: o.devices, Agents: o.agents, Replicas: o.replicas, Dir: dir, Bin: bin,
		KeyOnDevice: o.keyOnDevice, Latency: o.latency, TLSRestart: o.tlsRestart, CommitDelay: o.commitDelay, AOF: o.aof,
		Profile: o.profile != "", Cluster: o.cluster,
		Agent: func(_ int, c *config.Agent) {
			if o.concurrency > 0 {
				c.Concurrency = o.concurrency
			}
			if o.commitWait > 0 {
				c.AMT.CommitWait = o.commitWait
			}
		}}
	f, err := fleet.Start(ctx, cfg)
	if err != nil {
		return result{}, err
	}
	defer f.Close()
	var profiled sync.WaitGroup
	defer profiled.Wait()
	if o.profile != "" {
		profiled.Go(func() { profileFleet(ctx, f, o.profile, o.profileAfter, o.profileFor, say) })
	}
	last := time.Time{}
	r, err := f.Watch(ctx, o.timeout, func(p fleet.Progress) {
		if time.Since(last) >= 5*time.Second {
			last = time.Now()
			say("  %5.0fs  %d provisioned, %d failed, %d in work", p.Elapsed.Seconds(), p.Provisioned, p.Failed, p.Open)
		}
	})
	if err != nil {
		return result{}, err
	}
	say("  done in %.1fs; reading the operations logs", r.Elapsed.Seconds())
	tm, err := f.ReadTimings(ctx)
	if err != nil {
		return result{}, err
	}
	states, err := f.SimDevices(ctx)
	if err != nil {
		return result{}, err
	}
	res := result{summary: summarize(o, r, tm), calls: callsOf(states)}
	res.summary.WSManCallsPerDevice, res.summary.HandshakesPerDevice = res.calls.Requests, res.calls.Sessions
	return res, nil
}

// callsOf is what the activated devices typically saw.
func callsOf(states []amtsim.DeviceState) deviceCalls {
	var reqs, sess []int
	for _, d := range states {
		if d.ProvisioningState == 2 {
			reqs, sess = append(reqs, d.Requests), append(sess, d.ProvisioningSessions)
		}
	}
	return deviceCalls{Requests: mode(reqs), Sessions: mode(sess)}
}

// mode is the most common value (0 for none).
func mode(xs []int) int {
	n := map[int]int{}
	best := 0
	for _, x := range xs {
		n[x]++
		if n[x] > n[best] || n[x] == n[best] && x < best {
			best = x
		}
	}
	return best
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
