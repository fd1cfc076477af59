// Command amtsim serves a fleet of simulated AMT devices on loopback
// addresses until SIGINT/SIGTERM.
package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
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
	password := fs.String("password", "", "admin password of mebx and ccm devices (firmware complexity rules apply)")
	profile := fs.String("profile", "mebx", "device profile: mebx (set up by hand in the MEBx: state 2, ACM, admin password --password), factory (state 0: Hellos and remote configuration only), ccm, external, not-amt")
	latency := fs.Duration("latency", 0, "latency added to every WS-Man call")
	var hashes hashList
	var factoryHashes hashList
	fs.Var(&factoryHashes, "factory-hash", "root certificate hash (hex) in every device's factory list, as a commercial CA's that ships in the firmware: kept after a full unprovision; repeatable")
	fs.Var(&hashes, "trust-hash", "root certificate hash (hex SHA-1, SHA-256 or SHA-384) added to every device's trusted list; repeatable")
	noDefaultHashes := fs.Bool("no-default-hashes", false, "drop the factory stand-in hashes from the trusted list")
	keepHashes := fs.Bool("keep-hashes-on-unprovision", false, "keep --trust-hash entries after a full unprovision (Intel documents that it deletes them)")
	trustedDomain := fs.String("trusted-domain", "", "DNS suffix the provisioning certificate's CN must end in (DHCP option 15 or the MEBx PKI DNS suffix)")
	mebxPassword := fs.String("mebx-password", "admin", "MEBx password: the admin login of the remote-configuration session")
	helloAddr := fs.String("hello", "", "ADDR:PORT factory devices send Hellos to (bare metal: from start)")
	helloInterval := fs.Duration("hello-interval", time.Minute, "base interval of the Hello schedule (1m is firmware's; 1s runs it 60x faster)")
	helloAfterUnprovision := fs.Bool("hello-after-unprovision", false, "start a new Hello cycle right after a full unprovision (as on the next power-on)")
	factoryHTTP := fs.Bool("factory-http", false, "keep 16992 open on state-0 devices (Identify only, every login refused); default closed")
	tlsRestart := fs.Duration("tls-restart", 20*time.Second, "how long 16993 stays silent after a commit that changed TLS")
	lockoutThreshold := fs.Int("lockout-threshold", 0, "wrong digest passwords in a row that lock the account (0: no lockout)")
	lockoutDuration := fs.Duration("lockout-duration", time.Minute, "how long a locked account refuses every login")
	nonceReset := fs.Duration("nonce-reset", 0, "invalidate every digest nonce on this period (0: only on user-list changes)")
	webUIUntil := fs.Int("webui-until", 15, "last AMT major version with a web UI")
	mebxPolicy := fs.String("mebx-password-policy", amtsim.MEBxDefaultOnly, "when a provisioned device takes SetMEBxPassword: default-only, during-setup or anytime")
	kvmWithoutListener := fs.String("kvm-without-listener", amtsim.KVMIneffective, "KVM enabled while the redirection listener is off: ineffective or refuse")
	rootsWhileMutual := fs.Bool("roots-while-mutual", false, "accept AddTrustedRootCertificate while mutual TLS is set (Intel documents that firmware refuses it)")
	mtlsAnyEKU := fs.Bool("mtls-any-eku", false, "accept a mutual-TLS client certificate without the clientAuth EKU (unconfirmed on firmware; default requires it when EKUs are listed)")
	derKeySPKIFrom := fs.Int("derkey-spki-from", 0, "first AMT major version whose DERKey is SubjectPublicKeyInfo (0: always PKCS#1)")
	commitDelay := fs.Duration("commit-delay", 5*time.Second, "how long a device is off the network after CommitChanges")
	faults := fs.String("faults", "", "fault spec, e.g. drop=0.02,http500=0.02,slow=0.01:3s,reboot=0.005")
	seed := fs.Int64("seed", 1, "seed for identities and fault draws")
	stateAddr := fs.String("state-addr", "", "serve device state as JSON on this address (GET /devices, /devices/{addr}; POST /devices/{addr}/hello triggers a Hello)")
	httpPort := fs.Int("http-port", 16992, "HTTP port of every device")
	tlsPort := fs.Int("tls-port", 16993, "TLS port of every device")
	version := fs.String("amt-version", "11.8.50", "AMT firmware version")
	skuFlag := fs.String("sku", string(amtsim.SKUAMT), "firmware SKU: amt (full AMT, with KVM) or standard (Intel Standard Manageability: no KVM)")
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
	kind, err := amtsim.ParseProfile(*profile)
	if err != nil {
		return fmt.Errorf("--profile: %w", err)
	}
	sku, err := amtsim.ParseSKU(*skuFlag)
	if err != nil {
		return fmt.Errorf("--sku: %w", err)
	}
	level := zerolog.InfoLevel
	if *debug {
		level = zerolog.DebugLevel
	}
	log := zerolog.New(os.Stderr).Level(level).With().Timestamp().Logger()
	sim, err := amtsim.New(amtsim.Config{
		Devices: *devices, BaseIP: base, HTTPPort: *httpPort, TLSPort: *tlsPort, Password: *password,
		Version: *version, SKU: sku, Latency: *latency, CommitDelay: *commitDelay, Faults: fspec, Seed: *seed,
		Log: log, AllowNonLoopback: *allowNonLoopback, Kind: kind,
		Firmware: amtsim.Firmware{MEBxPassword: *mebxPassword, TrustHashes: hashes, FactoryHashes: factoryHashes, NoDefaultHashes: *noDefaultHashes,
			KeepHashesOnUnprovision: *keepHashes, TrustedDomain: *trustedDomain, HelloAddr: *helloAddr,
			HelloInterval: *helloInterval, HelloAfterUnprovision: *helloAfterUnprovision, FactoryHTTP: *factoryHTTP,
			TLSRestart: *tlsRestart, LockoutThreshold: *lockoutThreshold, LockoutDuration: *lockoutDuration,
			NonceReset: *nonceReset, WebUIUntil: *webUIUntil, DERKeySPKIFrom: *derKeySPKIFrom,
			MEBxPolicy: *mebxPolicy, KVMWithoutListener: *kvmWithoutListener,
			RootsWhileMutual: *rootsWhileMutual, MutualTLSAnyEKU: *mtlsAnyEKU},
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
		fmt.Printf("serving %d %s devices %s .. %s http-port %d tls-port %d (faults %q, seed %d)\n",
			len(addrs), kind.Profile(), addrs[0], addrs[len(addrs)-1], sim.HTTPPort(), sim.TLSPort(), fspec.String(), *seed)
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

// hashList is a repeatable --trust-hash.
type hashList [][]byte

func (h *hashList) String() string {
	var out []string
	for _, x := range *h {
		out = append(out, hex.EncodeToString(x))
	}
	return strings.Join(out, ",")
}

func (h *hashList) Set(v string) error {
	b, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(v), ":", ""))
	if err != nil {
		return fmt.Errorf("not hex: %w", err)
	}
	if n := len(b); n != 20 && n != 32 && n != 48 {
		return fmt.Errorf("%d bytes is no SHA-1 (20), SHA-256 (32) or SHA-384 (48) hash", n)
	}
	*h = append(*h, b)
	return nil
}
