// Command amtsim serves a fleet of simulated AMT devices on loopback
// addresses until SIGINT/SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/amtops/amtops/internal/amtsim"
	"github.com/rs/zerolog"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "amtsim:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("amtsim", flag.ContinueOnError)
	devices := fs.Int("devices", 1, "number of devices")
	baseIP := fs.String("base-ip", "127.20.0.1", "address of the first device; the others follow")
	password := fs.String("password", "", "provisioning password of the admin account (firmware complexity rules apply)")
	latency := fs.Duration("latency", 0, "latency added to every answer")
	commitDelay := fs.Duration("commit-delay", 5*time.Second, "how long a device is off the network after CommitChanges")
	faults := fs.String("faults", "", "fault spec, e.g. drop=0.02,http500=0.02,slow=0.01:3s,reboot=0.005")
	seed := fs.Int64("seed", 1, "seed for identities and fault draws")
	stateAddr := fs.String("state-addr", "", "serve device state as JSON on this address (GET /devices, /devices/{addr})")
	httpPort := fs.Int("http-port", 16992, "HTTP port of every device")
	tlsPort := fs.Int("tls-port", 16993, "TLS port of every device")
	version := fs.String("amt-version", "11.8.50", "AMT firmware version")
	allowNonLoopback := fs.Bool("allow-non-loopback", false, "permit a base IP outside 127.0.0.0/8")
	debug := fs.Bool("debug", false, "debug logging")
	if err := fs.Parse(args); err != nil {
		return err
	}
	base, err := netip.ParseAddr(*baseIP)
	if err != nil {
		return fmt.Errorf("--base-ip: %w", err)
	}
	fspec, err := amtsim.ParseFaultSpec(*faults)
	if err != nil {
		return fmt.Errorf("--faults: %w", err)
	}
	level := zerolog.InfoLevel
	if *debug {
		level = zerolog.DebugLevel
	}
	log := zerolog.New(os.Stderr).Level(level).With().Timestamp().Logger()
	sim, err := amtsim.New(amtsim.Config{
		Devices: *devices, BaseIP: base, HTTPPort: *httpPort, TLSPort: *tlsPort, Password: *password,
		Version: *version, Latency: *latency, CommitDelay: *commitDelay, Faults: fspec, Seed: *seed,
		Log: log, AllowNonLoopback: *allowNonLoopback,
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	errc := make(chan error, 2)
	go func() { errc <- sim.Run(ctx) }()
	var stateSrv *http.Server
	if *stateAddr != "" {
		ln, err := net.Listen("tcp", *stateAddr)
		if err != nil {
			stop()
			<-errc
			return fmt.Errorf("--state-addr: %w", err)
		}
		stateSrv = &http.Server{Handler: sim.StateHandler(), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := stateSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
		fmt.Printf("state: http://%s/devices\n", ln.Addr())
	}
	select {
	case <-sim.Ready():
		addrs := sim.Addrs()
		fmt.Printf("serving %d devices %s .. %s http-port %d tls-port %d (faults %q, seed %d)\n",
			len(addrs), addrs[0], addrs[len(addrs)-1], sim.HTTPPort(), sim.TLSPort(), fspec.String(), *seed)
	case err := <-errc:
		return err
	}
	err = <-errc
	if stateSrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = stateSrv.Shutdown(sctx)
	}
	return err
}
