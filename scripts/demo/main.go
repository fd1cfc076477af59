// Command demo is `make demo`: a whole site on this machine — the site
// server on embedded Redis with the built-in CA, two agents on two
// simulated subnets and a simulated AMT fleet of factory devices of mixed
// generations. Every device sends its Hello to the agent of its subnet and
// is activated in admin control mode with a provisioning certificate made
// for the run; a live progress bar follows, then a summary. With
// --factory=false the fleet is devices set up by hand in the MEBx, reached
// with their known admin password, discovered and provisioned in one batch.
//
//	go run ./scripts/demo [--devices 200] [--subnets 2] [--factory] [--with-ad] [--json] [--faults SPEC --seed N] [--serve]
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/schollz/progressbar/v3"

	"github.com/amtops/amtops/internal/amtsim"
	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/logging"
	"github.com/amtops/amtops/internal/site"
	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// summary is the final report; --json prints it as one object.
type summary struct {
	Devices     int     `json:"devices"`
	Discovered  int     `json:"discovered"`
	Provisioned int     `json:"provisioned"`
	Failed      int     `json:"failed"`
	Seconds     float64 `json:"seconds"`
	// BatchSeconds is the provisioning batch alone, without start-up and
	// discovery; PerSecond is devices provisioned per second in it.
	BatchSeconds float64        `json:"batch_seconds"`
	PerSecond    float64        `json:"devices_per_second"`
	Batch        string         `json:"batch"`
	Failures     []site.Failure `json:"failures_by_step,omitempty"`
	Directory    bool           `json:"directory"`
	// Modes counts the provisioned devices by control mode as the devices
	// report it (acm, ccm, none).
	Modes map[string]int `json:"modes"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	devices := flag.Int("devices", 200, "simulated AMT devices")
	subnets := flag.Int("subnets", 2, "simulated subnets, one agent each")
	asJSON := flag.Bool("json", false, "print only one final JSON object")
	withAD := flag.Bool("with-ad", false, "start a Samba AD DC (scripts/samba.sh) and publish AMT accounts, SPNs and Kerberos keys")
	faults := flag.String("faults", "", `simulator faults, e.g. "drop=0.02,http500=0.02,reboot=0.005"`)
	seed := flag.Int64("seed", 1, "fault seed")
	dir := flag.String("dir", "var/demo", "working directory")
	serve := flag.Bool("serve", false, "keep the site running after the summary, for amtopsctl")
	verbose := flag.Bool("v", false, "show the site's logs")
	factory := flag.Bool("factory", true, "factory devices activated in ACM through their Hello; false: devices set up by hand in the MEBx (known admin password), discovered and provisioned in one batch")
	versions := flag.String("generations", "11.8.50,12.0.45,16.1.25,18.0.5", "AMT versions given to the devices in turn")
	netFlag := flag.String("net", "127.61", "first two octets of the simulated subnets' loopback addresses (subnet n is NET.n.0/24)")
	flag.Parse()
	simNet, err := parseNet(*netFlag)
	if err != nil {
		return err
	}

	fs, err := amtsim.ParseFaultSpec(*faults)
	if err != nil {
		return fmt.Errorf("--faults: %w", err)
	}
	log := zerolog.Nop()
	if *verbose {
		if log, err = logging.New(os.Stderr, "console", "info"); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(*dir); err != nil {
		return err
	}
	say := func(format string, a ...any) {
		if !*asJSON {
			fmt.Fprintf(os.Stderr, format+"\n", a...)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg := site.Config{Devices: *devices, Subnets: *subnets, Faults: fs, Seed: *seed, Dir: *dir, Log: log, Net: simNet,
		Server: func(c *config.Server) { c.Phase2.RetryDelay = 2 * time.Second; c.Phase2.ReapEvery = time.Second }}
	if !*factory {
		cfg.Profile = amtsim.KindMEBx
	}
	if *versions != "" {
		cfg.Versions = strings.Split(*versions, ",")
	}
	if *withAD {
		say("starting a Samba AD domain controller (scripts/samba.sh; first start takes a minute)")
		sambaDir := filepath.Join(*dir, "samba")
		if err := startSamba(ctx, &cfg, sambaDir); err != nil {
			return err
		}
		// The demo started it, so the demo stops it (by its recorded PID).
		defer func() { _ = exec.Command("bash", "scripts/samba.sh", "stop", sambaDir).Run() }()
	}
	start := time.Now()
	say("starting the site: server on embedded Redis, built-in CA, %d agents, %d simulated controllers", *subnets, *devices)
	s, err := site.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	for i, p := range s.Subnets {
		say("  subnet %s: agent-%d", p, i)
	}

	run := provisionBatch
	if *factory {
		run = activateOnHello
	}
	sum, err := run(ctx, s, *devices, say, !*asJSON)
	if err != nil {
		return err
	}
	sum.Devices, sum.Directory, sum.Seconds = *devices, *withAD, time.Since(start).Seconds()
	sum.Modes = modes(s)
	if *asJSON {
		return json.NewEncoder(os.Stdout).Encode(sum)
	}
	printSummary(os.Stdout, sum)
	if err := showLog(ctx, os.Stdout, s); err != nil {
		return err
	}
	if !*serve {
		fmt.Fprintf(os.Stdout, "\nrun with DEMO_ARGS=--serve to keep the site up and try amtopsctl against it\n")
		return nil
	}
	// scripts/demo's TestREADME reads these export lines.
	fmt.Fprintf(os.Stdout, "\nthe site is up. In another shell, from this directory:\n\n"+
		"  make build && export PATH=$PWD/bin:$PATH\n"+
		"  export AMTOPS_SERVER=%s AMTOPS_CA_FILE=%s AMTOPS_TOKEN_FILE=%s\n",
		s.Server.GRPCAddr(), abs(s.CAFile), abs(s.TokenFile))
	if addr := s.Server.ConsoleAddr(); addr != "" {
		fmt.Fprintf(os.Stdout, "  export CONSOLE_URL=https://%s\n", addr)
	}
	fmt.Fprintf(os.Stdout, "  amtopsctl status\n\nmetrics: http://%s/metrics   CRL: http://%s/crl   Ctrl-C stops the site.\n",
		s.HTTPAddr, s.HTTPAddr)
	if addr := s.Server.ConsoleAddr(); addr != "" {
		// A demo site's own token: shown so that a browser can log in.
		tok, err := os.ReadFile(s.TokenFile)
		if err != nil {
			return fmt.Errorf("demo: read token: %w", err)
		}
		fmt.Fprintf(os.Stdout, "console: https://%s/ (its CA: %s), log in with the token %s\n",
			addr, abs(s.CAFile), strings.TrimSpace(string(tok)))
	}
	<-ctx.Done()
	return nil
}

// newBar is the live progress bar, or nil for --json.
func newBar(show bool, n int, what string) *progressbar.ProgressBar {
	if !show {
		return nil
	}
	return progressbar.NewOptions(n, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionShowCount(),
		progressbar.OptionSetDescription(what), progressbar.OptionSetWidth(40), progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetPredictTime(true), progressbar.OptionShowElapsedTimeOnFinish())
}

func finish(bar *progressbar.ProgressBar) {
	if bar != nil {
		_ = bar.Finish()
		fmt.Fprintln(os.Stderr)
	}
}

// activateOnHello is the factory fleet: the devices' Hellos start the
// work; the demo only watches the inventory fill up.
func activateOnHello(ctx context.Context, s *site.Site, n int, say func(string, ...any), show bool) (summary, error) {
	say("factory devices send Hellos to their agent (TCP, provisioning port); each starts its own activation")
	if err := s.TriggerHellos(); err != nil {
		return summary{}, err
	}
	t0 := time.Now()
	bar := newBar(show, n, "activate")
	devs, err := s.Settle(ctx, func(ok, failed int) {
		if bar != nil {
			_ = bar.Set(ok + failed)
			bar.Describe(fmt.Sprintf("activate (%d failed)", failed))
		}
	})
	finish(bar)
	if err != nil {
		return summary{}, err
	}
	sum := summary{Discovered: len(devs), BatchSeconds: time.Since(t0).Seconds(), Batch: "(one per Hello)"}
	byStep := map[string]*site.Failure{}
	for _, d := range devs {
		if d.GetStatus() == pb.DeviceStatus_DEVICE_STATUS_PROVISIONED {
			sum.Provisioned++
			continue
		}
		sum.Failed++
		f := byStep[d.GetLastErrorStep()]
		if f == nil {
			f = &site.Failure{Step: d.GetLastErrorStep(), Example: d.GetLastError()}
			byStep[f.Step] = f
		}
		f.Count++
	}
	for _, f := range byStep {
		sum.Failures = append(sum.Failures, *f)
	}
	sum.PerSecond = float64(sum.Provisioned) / sum.BatchSeconds
	return sum, nil
}

// provisionBatch is the pre-provisioned fleet: discover, then one batch.
func provisionBatch(ctx context.Context, s *site.Site, n int, say func(string, ...any), show bool) (summary, error) {
	say("discovery: agents sweep their subnets (TCP 16992/16993, then WS-Man Identify)")
	dctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	seen, err := s.Discover(dctx)
	cancel()
	if err != nil {
		return summary{}, err
	}
	say("  %d controllers found", seen)
	say("provisioning every device in collection %q", site.Collection)
	t0 := time.Now()
	bar := newBar(show, n, "provision")
	b, err := s.Run(ctx, pb.JobKind_JOB_KIND_PROVISION, func(b *pb.Batch) {
		if bar != nil {
			_ = bar.Set(int(b.GetSucceeded() + b.GetFailed() + b.GetCancelled()))
			bar.Describe(fmt.Sprintf("provision (%d failed)", b.GetFailed()))
		}
	})
	finish(bar)
	if err != nil {
		return summary{}, err
	}
	failures, err := s.Failures(ctx, b.GetId())
	if err != nil {
		return summary{}, err
	}
	secs := time.Since(t0).Seconds()
	return summary{Discovered: seen, Provisioned: int(b.GetSucceeded()), Failed: int(b.GetFailed()), BatchSeconds: secs,
		PerSecond: float64(b.GetSucceeded()) / secs, Batch: b.GetId(), Failures: failures}, nil
}

// modes counts provisioned devices by the control mode the simulated
// devices report (IPS_HostBasedSetupService.CurrentControlMode).
func modes(s *site.Site) map[string]int {
	names := map[int]string{0: "none", 1: "ccm", 2: "acm"}
	out := map[string]int{}
	for _, sim := range s.Sims {
		for _, d := range sim.Devices() {
			if d.ProvisioningState == 2 {
				out[names[d.ControlMode]]++
			}
		}
	}
	return out
}

func printSummary(w io.Writer, s summary) {
	fmt.Fprintf(w, "\nsummary\n")
	fmt.Fprintf(w, "  devices      %d\n  discovered   %d\n  provisioned  %d\n  failed       %d\n", s.Devices, s.Discovered, s.Provisioned, s.Failed)
	fmt.Fprintf(w, "  time         %.1fs in all; provisioning %.1fs, %.1f devices/s\n", s.Seconds, s.BatchSeconds, s.PerSecond)
	fmt.Fprintf(w, "  modes        %d ACM, %d CCM\n", s.Modes["acm"], s.Modes["ccm"])
	if len(s.Failures) > 0 {
		fmt.Fprintf(w, "  failed by step (one reason each):\n")
		for _, f := range s.Failures {
			fmt.Fprintf(w, "    %4d  %-18s %s\n", f.Count, f.Step, f.Example)
		}
	}
}

func ctlCommand(s *site.Site) string {
	return fmt.Sprintf("go run ./server/cmd/amtopsctl --server %s --ca-file %s --token-file %s",
		s.Server.GRPCAddr(), s.CAFile, s.TokenFile)
}

// showLog prints the command that shows one device's operation log, and
// what it shows.
func showLog(ctx context.Context, w io.Writer, s *site.Site) error {
	resp, err := s.Admin.ListDevices(ctx, &pb.ListDevicesRequest{Collection: site.Collection, Limit: 1})
	if err != nil || len(resp.GetDevices()) == 0 {
		return fmt.Errorf("list devices: %w", err)
	}
	id := resp.GetDevices()[0].GetFqdn()
	fmt.Fprintf(w, "\none device's operation log:\n  %s devices log %s\n\n", ctlCommand(s), id)
	l, err := s.Admin.GetDeviceLog(ctx, &pb.GetDeviceLogRequest{Id: id, Limit: 100})
	if err != nil {
		return fmt.Errorf("device log: %w", err)
	}
	for _, e := range l.GetEvents() {
		if e.GetOutcome() == pb.Outcome_OUTCOME_STARTED {
			continue
		}
		fmt.Fprintf(w, "  %s  phase %d  %-22s %-8s %s\n", e.GetTime().AsTime().Format("15:04:05.000"), e.GetPhase(),
			e.GetStep(), strings.TrimPrefix(strings.ToLower(e.GetOutcome().String()), "outcome_"), e.GetDetail())
	}
	return nil
}

// startSamba runs scripts/samba.sh and points the site at it.
func startSamba(ctx context.Context, cfg *site.Config, dir string) error {
	cmd := exec.CommandContext(ctx, "bash", "scripts/samba.sh", "start", dir)
	cmd.Stderr = os.Stderr // its progress and errors; the env file stays off the terminal
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("scripts/samba.sh start: %w (install the packages with: scripts/deps.sh test)", err)
	}
	env, err := readEnv(filepath.Join(dir, "env"))
	if err != nil {
		return err
	}
	cfg.Directory = config.Directory{URL: env["AMTOPS_TEST_LDAP_URL"], CAFile: env["AMTOPS_TEST_LDAP_CA"],
		BindDN: env["AMTOPS_TEST_LDAP_BIND_DN"], BaseDN: env["AMTOPS_TEST_LDAP_BASE_DN"],
		AccountOU: "CN=Computers," + env["AMTOPS_TEST_LDAP_BASE_DN"], Realm: env["AMTOPS_TEST_KRB5_REALM"],
		Timeout: 10 * time.Second, PoolSize: 8}
	cfg.DirectoryPassword = env["AMTOPS_TEST_LDAP_PASSWORD"]
	if cfg.Directory.URL == "" {
		return errors.New("samba env file has no AMTOPS_TEST_LDAP_URL")
	}
	return nil
}

// readEnv reads the `export K=V` lines scripts/samba.sh writes.
func readEnv(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "=")
		if ok {
			env[k] = strings.Trim(v, `'"`)
		}
	}
	return env, sc.Err()
}

// abs makes a path printed for another shell independent of its directory.
func abs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// parseNet reads --net: two octets of a loopback address ("127.61").
func parseNet(s string) ([2]byte, error) {
	a, err := netip.ParseAddr(s + ".0.0")
	if err != nil || !a.Is4() || !a.IsLoopback() {
		return [2]byte{}, fmt.Errorf("--net %q: want the first two octets of a loopback address, like 127.61", s)
	}
	b := a.As4()
	return [2]byte{b[0], b[1]}, nil
}
