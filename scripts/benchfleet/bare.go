package main

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/amtops/amtops/agent/phase2"
	"github.com/amtops/amtops/internal/amt"
	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/fleet"
	"github.com/amtops/amtops/internal/hello"
	"github.com/amtops/amtops/internal/pki"
	"github.com/amtops/amtops/internal/pki/builtin"
	"github.com/amtops/amtops/internal/pki/pkitest"
	"github.com/amtops/amtops/internal/provcert"
	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// The bare limit: in this one process, only the work no pipeline can
// avoid for the same fleet — hear each device's Hello, sign its
// provisioning handshakes with the provisioning key, issue its TLS
// certificate with the built-in CA (and make its key when keys are made
// at the site), and run the same WS-Man exchanges at the same latency
// against the same simulated devices (the agent's phase-2 executor, so
// the calls are the pipeline's own). No Redis, no server, no gRPC, no
// leases, no logs.

type bareResult struct {
	Elapsed             time.Duration
	Provisioned, Failed int
	CPU                 time.Duration // this process, from the first Hello's start to the end
	CallsPerDevice      int           // WS-Man requests per device, as the simulator counts them
	HandshakesPerDevice int
	Retries             int // attempts after a failed one
}

func (b bareResult) PerSecond() float64 {
	if b.Elapsed <= 0 {
		return 0
	}
	return float64(b.Provisioned) / b.Elapsed.Seconds()
}

// bare is one bare run's state.
type bare struct {
	o        options
	id       *provcert.Identity
	ca       *builtin.CA
	exec     *phase2.Executor
	settings *pb.Settings
	names    map[netip.Addr]string // device address → host name
	mu       sync.Mutex
	started  map[netip.Addr]bool
	closed   bool // serve is waiting for the jobs: start no more
	wg       sync.WaitGroup
	slots    chan struct{} // the pipeline's in-flight bound: agents × concurrency
	lns      []net.Listener
	ok, bad  atomic.Int64
	retries  atomic.Int64
	lastErr  atomic.Value
}

func runBare(ctx context.Context, o options, bin map[string]string, dir string, want deviceCalls) (bareResult, error) {
	b, err := newBare(ctx, o)
	if err != nil {
		return bareResult{}, err
	}
	defer b.closeListeners()
	f, err := fleet.Start(ctx, fleet.Config{Devices: o.devices, Agents: o.agents, Dir: dir, Bin: bin, Latency: o.latency,
		TLSRestart: o.tlsRestart, CommitDelay: o.commitDelay, SimulatorsOnly: true, BeforeSimulators: b.listen})
	if err != nil {
		return bareResult{}, err
	}
	defer f.Close()
	r := b.serve(ctx, f.T0)
	states, err := f.SimDevices(ctx)
	if err != nil {
		return r, err
	}
	got := callsOf(states)
	r.CallsPerDevice, r.HandshakesPerDevice = got.Requests, got.Sessions
	if r.Failed > 0 {
		e, _ := b.lastErr.Load().(string)
		return r, fmt.Errorf("%d of %d devices failed; one: %s", r.Failed, o.devices, e)
	}
	if got != want {
		return r, fmt.Errorf("bare made %d WS-Man calls and %d handshakes per device, the pipeline %d and %d: not the same work",
			got.Requests, got.Sessions, want.Requests, want.Sessions)
	}
	return r, nil
}

// newBare makes the CA and the executor as an agent's, with the site's
// signatures done in process.
func newBare(ctx context.Context, o options) (*bare, error) {
	ca, err := builtin.New(ctx, &pkitest.MemStorage{}, builtin.Config{Log: zerolog.Nop()})
	if err != nil {
		return nil, err
	}
	b := &bare{o: o, ca: ca, names: map[netip.Addr]string{}, started: map[netip.Addr]bool{}}
	conc := o.concurrency
	if conc <= 0 {
		conc = config.DefaultAgent().Concurrency
	}
	b.slots = make(chan struct{}, conc*o.agents)
	st := config.DefaultServer().AMT.Settings
	b.settings = &pb.Settings{IdeRedirection: st.IDERedirection, SerialOverLan: st.SerialOverLAN, Kvm: st.KVM,
		PingResponse: st.PingResponse, WebUi: st.WebUI, PowerScheme: st.PowerScheme}
	ac := config.DefaultAgent().AMT
	if o.commitWait > 0 {
		ac.CommitWait = o.commitWait
	}
	b.exec = phase2.NewExecutor(phase2.Config{HTTPPort: ac.HTTPPort, TLSPort: ac.TLSPort, CallTimeout: ac.CallTimeout,
		CommitWait: ac.CommitWait, CommitDeadline: ac.CommitDeadline, SignCSR: b.signCSR, ProvisioningSigner: b, Log: zerolog.Nop()})
	return b, nil
}

// listen is the fleet's BeforeSimulators: the provisioning identity, the
// devices' names and a Hello listener per subnet.
func (b *bare) listen(f *fleet.Fleet) error {
	pair := f.Provisioning()
	var err error
	if b.id, err = provcert.LoadPEM(pair.ChainPEM, pair.KeyPEM); err != nil {
		return err
	}
	for i, addrs := range f.Devices {
		for n, a := range addrs {
			b.names[a] = fleet.HostName(i, n)
		}
	}
	for _, a := range f.HelloAddrs {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return err
		}
		b.lns = append(b.lns, l)
	}
	return nil
}

func (b *bare) closeListeners() {
	for _, l := range b.lns {
		l.Close()
	}
}

// serve hears Hellos and works the devices until every one has ended or
// the timeout passes; CPU and time count from t0 (the first simulator up).
func (b *bare) serve(ctx context.Context, t0 time.Time) bareResult {
	cpu0 := selfCPU()
	jctx, cancel := context.WithTimeout(ctx, b.o.timeout)
	defer cancel()
	for _, l := range b.lns {
		go b.accept(jctx, l)
	}
	for jctx.Err() == nil && b.ok.Load()+b.bad.Load() < int64(b.o.devices) {
		select {
		case <-jctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	elapsed := time.Since(t0)
	cancel()
	b.closeListeners()
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.wg.Wait()
	return bareResult{Elapsed: elapsed, Provisioned: int(b.ok.Load()), Failed: int(b.bad.Load()), CPU: selfCPU() - cpu0,
		Retries: int(b.retries.Load())}
}

// accept hears Hellos as an agent's listener does: read to EOF, parse,
// start the device's job once.
func (b *bare) accept(ctx context.Context, l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go b.hello(ctx, c)
	}
}

func (b *bare) hello(ctx context.Context, c net.Conn) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	msg, err := io.ReadAll(io.LimitReader(c, hello.MaxSize+1))
	if err != nil {
		return
	}
	if _, err := hello.Parse(msg); err != nil {
		return
	}
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return
	}
	a := ap.Addr()
	b.mu.Lock()
	name, known := b.names[a]
	start := known && !b.started[a] && !b.closed
	b.started[a] = true
	if start {
		b.wg.Add(1) // under mu, so never after serve's Wait began
	}
	b.mu.Unlock()
	if !start {
		return
	}
	go func() {
		defer b.wg.Done()
		select {
		case b.slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		defer func() { <-b.slots }()
		// As the pipeline's phase-2 attempts (max_attempts), without the wait.
		var err error
		for n := range config.DefaultServer().Phase2.MaxAttempts {
			if n > 0 {
				b.retries.Add(1)
			}
			if err = b.provision(ctx, a, name); err == nil || ctx.Err() != nil {
				break
			}
		}
		if err != nil {
			b.lastErr.Store(err.Error())
			b.bad.Add(1)
			return
		}
		b.ok.Add(1)
	}()
}

// provision makes the job phase 1 would and runs phase 2 on it.
func (b *bare) provision(ctx context.Context, a netip.Addr, name string) error {
	fqdn := name + "." + fleet.Domain
	adminPW, err1 := amt.GeneratePassword(rand.Reader)
	mebxPW, err2 := amt.GeneratePassword(rand.Reader)
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	tlsm := &pb.TLSMaterial{KeyOnDevice: b.o.keyOnDevice, ChainDer: b.ca.Chain()}
	if !b.o.keyOnDevice {
		k, err := pki.GenerateKey()
		if err != nil {
			return err
		}
		csr, err := pki.CSR(k, fqdn)
		if err != nil {
			return err
		}
		is, err := b.ca.Issue(ctx, pki.Request{Profile: pki.ProfileServerAuth, FQDN: fqdn, CSR: csr})
		if err != nil {
			return err
		}
		if tlsm.PrivateKeyDer, err = x509.MarshalPKCS8PrivateKey(k); err != nil {
			return err
		}
		tlsm.CertificateDer, tlsm.ChainDer, tlsm.Serial = is.Leaf, is.Chain, is.Serial
	}
	job := &pb.Phase2Job{Lease: &pb.LeaseRef{JobId: "bare:" + fqdn, Token: "bare"}, DeviceId: fqdn,
		Kind: pb.JobKind_JOB_KIND_PROVISION, Deadline: timestamppb.New(time.Now().Add(10 * time.Minute)),
		Target:      &pb.Target{Ip: a.String(), HostName: name, Domain: fleet.Domain},
		Credentials: &pb.Credentials{Username: "admin", NewAdminPassword: adminPW},
		Tls:         tlsm, Settings: b.settings,
		Activation: &pb.Activation{ProvisioningChainDer: b.id.Chain().DER(), MebxPassword: "admin",
			NewMebxPassword: mebxPW, TrustedDomain: fleet.Domain}}
	res := b.exec.Run(ctx, job, nopReporter{})
	if res.Err != nil {
		return fmt.Errorf("%s at %s: %w", a, res.ErrorStep, res.Err)
	}
	return nil
}

// SignProvisioning signs a handshake with the provisioning key in process.
func (b *bare) SignProvisioning(_ context.Context, _, _ string, digest []byte, opts provcert.SignOpts) ([]byte, error) {
	return b.id.SignDigest(digest, opts)
}

// signCSR issues the device-made key's certificate with the built-in CA.
func (b *bare) signCSR(ctx context.Context, csrDER []byte) ([]byte, [][]byte, string, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, nil, "", err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, "", err
	}
	fqdn := ""
	if len(csr.DNSNames) > 0 {
		fqdn = csr.DNSNames[0]
	} else {
		fqdn = csr.Subject.CommonName
	}
	is, err := b.ca.Issue(ctx, pki.Request{Profile: pki.ProfileServerAuth, FQDN: fqdn, CSR: csr.Raw})
	if err != nil {
		return nil, nil, "", err
	}
	return is.Leaf, is.Chain, is.Serial, nil
}

type nopReporter struct{}

func (nopReporter) Step(context.Context, string, domain.Outcome, string) {}

// selfCPU is this process's user+system time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
