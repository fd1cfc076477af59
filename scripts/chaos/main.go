// Command chaos is `make chaos`: for each experiment a fresh site of
// separate processes (Redis with its append-only file, the server, two
// agents, amtsim fleets of factory devices sending Hellos) provisions
// the fleet while one fault strikes — a process killed, frozen or
// restarted, the agents cut off from the server, faulty devices, a Hello
// storm — and then an exact audit compares the simulated devices with
// the site's records, the CA's certificates with what the devices
// serve, the operations log with itself, and every log, Redis value and
// the AOF with the site's secrets. One table per experiment, then one
// JSON line summed over them; the exit status is 1 when a must-be-0
// figure is not 0.
//
//	go run ./scripts/chaos [--devices 1000] [--agents 2] [--only server-kill,partition] [--keep]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/amtops/amtops/internal/fleet"
)

// options are the command line.
type options struct {
	devices, agents  int
	aof, keyOnDevice bool
	keep             bool
	dir              string
	net              netip.Prefix
	only             []string
	// Timings: the fleet's, short so that a run fits a test; the lease
	// TTL is the site's, freeze and partition outlast it.
	timeout, leaseTTL, freeze, partition, serverDown time.Duration
	// trigger is the share of devices provisioned before a mid-batch fault.
	trigger float64
}

func main() {
	code, err := run(os.Args[1:], os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
	}
	os.Exit(code)
}

func parse(args []string) (options, error) {
	o := options{}
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.IntVar(&o.devices, "devices", 1000, "factory devices per experiment")
	fs.IntVar(&o.agents, "agents", 2, "agents, one subnet each")
	fs.BoolVar(&o.aof, "aof", true, "Redis append-only file")
	keysAtSite := fs.Bool("keys-at-site", false, "the server makes every device key (amt.key_on_device false)")
	fs.BoolVar(&o.keep, "keep", false, "keep --dir (logs, state) after the run")
	fs.StringVar(&o.dir, "dir", "var/chaos", "working directory (emptied first)")
	netFlag := fs.String("net", "127.24.0.0/16", "loopback range for every address (no test uses 127.24)")
	only := fs.String("only", "", "comma-separated experiments to run (default all): "+strings.Join(names(), ","))
	fs.DurationVar(&o.timeout, "timeout", 15*time.Minute, "per experiment: devices not terminal by then are counted")
	fs.DurationVar(&o.leaseTTL, "lease-ttl", 15*time.Second, "the site's phase-2 lease TTL")
	fs.DurationVar(&o.freeze, "freeze", 40*time.Second, "how long the agent stays frozen (past the lease TTL)")
	fs.DurationVar(&o.partition, "partition", 60*time.Second, "how long the agents are cut off from the server")
	fs.DurationVar(&o.serverDown, "server-down", 10*time.Second, "how long the killed server stays down")
	fs.Float64Var(&o.trigger, "trigger", 0.2, "share of devices provisioned before a mid-batch fault strikes")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	o.keyOnDevice = !*keysAtSite
	var err error
	if o.net, err = netip.ParsePrefix(*netFlag); err != nil {
		return o, fmt.Errorf("--net: %w", err)
	}
	if *only != "" {
		for _, n := range strings.Split(*only, ",") {
			n = strings.TrimSpace(n)
			if lookup(n) == nil {
				return o, fmt.Errorf("--only: no experiment %q (have %s)", n, strings.Join(names(), ", "))
			}
			o.only = append(o.only, n)
		}
	}
	switch {
	case o.devices <= 0:
		return o, fmt.Errorf("--devices: must be positive, got %d", o.devices)
	case o.agents <= 0 || o.agents > 16:
		return o, fmt.Errorf("--agents: 1 to 16, got %d", o.agents)
	case o.timeout <= 0 || o.leaseTTL <= 0 || o.serverDown <= 0 || o.partition <= 0:
		return o, errors.New("--timeout, --lease-ttl, --server-down, --partition: must be positive")
	case o.leaseTTL < 10*time.Second:
		return o, fmt.Errorf("--lease-ttl %s: the server takes 10s at least", o.leaseTTL)
	case o.freeze <= o.leaseTTL:
		return o, fmt.Errorf("--freeze %s: must outlast --lease-ttl %s", o.freeze, o.leaseTTL)
	case o.trigger < 0 || o.trigger >= 1:
		return o, fmt.Errorf("--trigger: in [0,1), got %v", o.trigger)
	}
	return o, nil
}

func run(args []string, stdout, stderr io.Writer) (int, error) {
	o, err := parse(args)
	if err != nil {
		return 2, err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := os.RemoveAll(o.dir); err != nil {
		return 1, err
	}
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return 1, err
	}
	if !o.keep {
		defer os.RemoveAll(dir)
	}
	say := func(format string, a ...any) { fmt.Fprintf(stderr, format+"\n", a...) }
	say("building the commands")
	bin, err := fleet.Build(ctx, filepath.Join(dir, "bin"))
	if err != nil {
		return 1, err
	}
	var total summary
	failed := false
	for _, e := range selected(o.only) {
		say("== %s: %s (%d devices, %d agents)", e.name, e.title(o), o.devices, o.agents)
		a, err := runExperiment(ctx, o, e, bin, filepath.Join(dir, e.name), say)
		if err != nil {
			// The experiment could not be run or audited: that is a
			// failure of the suite, not a figure.
			say("%s: %v", e.name, err)
			failed = true
			if ctx.Err() != nil {
				break
			}
			continue
		}
		printAudit(stdout, a)
		total.add(a)
	}
	b, err := json.Marshal(total)
	if err != nil {
		return 1, err
	}
	fmt.Fprintln(stdout, string(b))
	if failed || !total.clean() {
		return 1, nil
	}
	return 0, nil
}

// summary is the final JSON line, summed over the experiments.
type summary struct {
	Experiments   int `json:"experiments"`
	Devices       int `json:"devices"`
	Lost          int `json:"lost"`
	NotTerminal   int `json:"not_terminal"`
	Disagreements int `json:"disagreements"`
	OrphanCerts   int `json:"orphan_certs"`
	OrphanAD      int `json:"orphan_ad"`
	Conflicts     int `json:"conflicts"`
	SecretsFound  int `json:"secrets_found"`
	// Provisioned and Failed are not must-be-0 figures; they say how
	// the devices ended.
	Provisioned int `json:"provisioned"`
	Failed      int `json:"failed"`
	// OtherBatches are batches no Hello started (a sweep): the fleet
	// measures the Hello path alone.
	OtherBatches int `json:"other_batches"`
}

func (s *summary) add(a *audit) {
	s.Experiments++
	s.Devices += a.devices
	s.Lost += len(a.lost)
	s.NotTerminal += len(a.notTerminal)
	s.Disagreements += len(a.disagreements)
	s.OrphanCerts += len(a.orphanCerts)
	s.OrphanAD += a.orphanAD
	s.Conflicts += len(a.conflicts)
	s.SecretsFound += len(a.secretsFound)
	s.Provisioned += a.provisioned
	s.Failed += a.failedCount()
	s.OtherBatches += len(a.otherBatches)
}

// clean reports whether every must-be-0 figure is 0.
func (s summary) clean() bool {
	return s.Lost+s.NotTerminal+s.Disagreements+s.OrphanCerts+s.OrphanAD+s.Conflicts+s.SecretsFound == 0
}
