// Package site runs a whole amtops site in one process — the site server,
// one agent per subnet and a simulated AMT fleet on loopback — for
// `make demo` and the end-to-end tests. Everything talks over the real
// wire: agents and the administrator use gRPC over TLS, agents reach the
// simulator over WS-Man with digest auth.
package site

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/amtops/amtops/agent"
	"github.com/amtops/amtops/internal/amt"
	"github.com/amtops/amtops/internal/amtsim"
	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/provcert"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server"
)

// Collection holds the simulated inventory.
const Collection = "fleet"

// Domain is the DNS domain of the simulated computers; it matches the
// test Samba realm so Kerberos works with a directory.
const Domain = "amt.test"

// Config describes the site.
type Config struct {
	Devices int // simulated controllers, spread evenly over the subnets
	Subnets int // one agent each; default 2, at most 200
	// RedisAddr is a Redis to use; empty runs the embedded one.
	RedisAddr string
	// Directory, when its URL is set, enables Active Directory (S4–S6).
	Directory         config.Directory
	DirectoryPassword string
	Faults            amtsim.FaultSpec
	Seed              int64
	// Strangers is how many controllers (the last of the first subnet)
	// have a password set by hand the site does not know: the MEBx
	// password of factory devices, the admin password of mebx ones.
	Strangers int
	// HTTPPort and TLSPort are the AMT ports; default 16992 and 16993.
	HTTPPort, TLSPort int
	// Net is the first two octets of the simulated subnets' loopback
	// addresses (subnet n is Net.n.0/24); default 127.61.
	Net [2]byte
	// Dir holds the server's data and the agents' state.
	Dir string
	Log zerolog.Logger
	// Server, if set, adjusts the server configuration (timings in tests).
	Server func(*config.Server)
	// Agent, if set, adjusts each agent's configuration.
	Agent func(*config.Agent)
	// Profile is the devices' starting state: factory (the default:
	// provisioning state 0, dark but for their Hellos, activated in admin
	// control mode through remote configuration as real vPro PCs out of
	// the box, from an auto-provisioning collection), or mebx (set up by
	// hand in the MEBx with the admin password amt.provisioning_password_file
	// holds, provisioned by batch). Either way the site has remote
	// configuration on, with a provisioning certificate made for the run
	// whose root is in the devices' factory list, so a fully removed
	// device can be activated again after its next Hello.
	Profile amtsim.Kind
	// Versions, when set, are the AMT versions given to the devices in
	// turn (mixed generations); default the simulator's.
	Versions []string
	// ProvisioningDomain is the suffix of the provisioning certificate's
	// CN (default Domain); another one makes every activation refused.
	ProvisioningDomain string
	// UntrustedProvisioningRoot makes the devices trust some other root
	// than the provisioning certificate's.
	UntrustedProvisioningRoot bool
}

// Site is a running site.
type Site struct {
	Server  *server.Server
	Sims    []*amtsim.Sim
	Subnets []netip.Prefix
	Admin   pb.AdminServiceClient
	// HTTPAddr serves /crl, /ca.pem, /grpc-ca.pem and /metrics.
	HTTPAddr string
	// TokenFile holds the administrator token amtopsctl can use.
	TokenFile, CAFile string

	cfg        Config
	serverCfg  config.Server
	prov       *provcert.TestPair
	trustHash  []byte
	helloAddrs []string // per subnet, where its agent hears Hellos
	stopServer func() error
	runCtx     context.Context
	conn       *grpc.ClientConn
	cancel     context.CancelFunc
	g          *errgroup.Group
}

// Start brings the site up: simulator, server, inventory, enrolled agents.
// Close stops it.
func Start(ctx context.Context, cfg Config) (*Site, error) {
	if cfg.Devices <= 0 {
		return nil, fmt.Errorf("site: devices: must be positive, got %d", cfg.Devices)
	}
	if cfg.Subnets == 0 {
		cfg.Subnets = 2
	}
	if cfg.Subnets < 1 || cfg.Subnets > 200 || cfg.Devices/cfg.Subnets > 250 {
		return nil, fmt.Errorf("site: subnets: %d subnets for %d devices (1–200 subnets, at most 250 devices each)", cfg.Subnets, cfg.Devices)
	}
	if cfg.Net == [2]byte{} {
		cfg.Net = [2]byte{127, 61}
	}
	if cfg.HTTPPort == 0 {
		cfg.HTTPPort, cfg.TLSPort = 16992, 16993
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("site: dir: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	g, gctx := errgroup.WithContext(runCtx)
	s := &Site{cfg: cfg, cancel: cancel, g: g, runCtx: gctx}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	password, err := amt.GeneratePassword(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("site: %w", err)
	}
	if err := s.prepareFactory(); err != nil {
		return nil, err
	}
	if err := s.startFleet(gctx, password); err != nil {
		return nil, err
	}
	if err := s.startServer(ctx, gctx, password); err != nil {
		return nil, err
	}
	if err := s.dialAdmin(ctx); err != nil {
		return nil, err
	}
	if err := s.importInventory(ctx); err != nil {
		return nil, err
	}
	if err := s.startAgents(ctx, gctx); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// prepareFactory makes the run's provisioning certificate (root and
// leaf), the hash the devices trust, and a Hello port per agent.
func (s *Site) prepareFactory() error {
	pair, err := provcert.NewTestPair(cmp.Or(s.cfg.ProvisioningDomain, Domain))
	if err != nil {
		return fmt.Errorf("site: provisioning certificate: %w", err)
	}
	trusted := pair
	if s.cfg.UntrustedProvisioningRoot {
		if trusted, err = provcert.NewTestPair(Domain); err != nil {
			return fmt.Errorf("site: provisioning certificate: %w", err)
		}
	}
	if s.trustHash, err = hex.DecodeString(trusted.RootSHA256); err != nil {
		return fmt.Errorf("site: provisioning root hash: %w", err)
	}
	s.prov = pair
	for range s.cfg.Subnets {
		// A free loopback port now, for the agent to listen on later.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("site: hello port: %w", err)
		}
		s.helloAddrs = append(s.helloAddrs, l.Addr().String())
		_ = l.Close()
	}
	return nil
}

// factory: the fleet starts as from the factory (Config.Profile).
func (s *Site) factory() bool { return s.cfg.Profile == 0 || s.cfg.Profile == amtsim.KindFactory }

// TriggerHellos makes every device in state 0 send a Hello now, as an
// agent on its operating system would through the management engine.
func (s *Site) TriggerHellos() error {
	for _, sim := range s.Sims {
		for _, d := range sim.Devices() {
			if err := sim.TriggerHello(d.Addr); err != nil && !errors.Is(err, amtsim.ErrNoHello) {
				return fmt.Errorf("site: %w", err)
			}
		}
	}
	return nil
}

// TriggerHello is TriggerHellos for the device at ip.
func (s *Site) TriggerHello(ip string) error {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return fmt.Errorf("site: trigger hello: %w", err)
	}
	for _, sim := range s.Sims {
		if _, ok := sim.Device(a); ok {
			return sim.TriggerHello(a)
		}
	}
	return fmt.Errorf("site: trigger hello: no simulated device at %s", ip)
}

// startFleet runs one simulator per subnet, 127.61.<n>.0/24 (Config.Net).
func (s *Site) startFleet(ctx context.Context, password string) error {
	per := s.cfg.Devices / s.cfg.Subnets
	for i := range s.cfg.Subnets {
		n := per
		if i == s.cfg.Subnets-1 {
			n = s.cfg.Devices - per*(s.cfg.Subnets-1)
		}
		base := netip.AddrFrom4([4]byte{s.cfg.Net[0], s.cfg.Net[1], byte(i), 1})
		overrides := map[netip.Addr]amtsim.Override{}
		if len(s.cfg.Versions) > 0 {
			for k := range n {
				a := netip.AddrFrom4([4]byte{s.cfg.Net[0], s.cfg.Net[1], byte(i), byte(1 + k)})
				overrides[a] = amtsim.Override{Version: s.cfg.Versions[(i*per+k)%len(s.cfg.Versions)]}
			}
		}
		if i == 0 {
			for k := range s.cfg.Strangers {
				a := netip.AddrFrom4([4]byte{s.cfg.Net[0], s.cfg.Net[1], byte(i), byte(n - k)})
				o := overrides[a]
				if s.factory() {
					o.MEBxPassword = "Hand-Set-Pa55!"
				} else {
					o.Password = "Hand-Set-Pa55!"
				}
				overrides[a] = o
			}
		}
		sc := amtsim.Config{Devices: n, BaseIP: base, HTTPPort: s.cfg.HTTPPort, TLSPort: s.cfg.TLSPort, Kind: s.cfg.Profile,
			Password: password, Faults: s.cfg.Faults, Seed: s.cfg.Seed + int64(i), CommitDelay: 300 * time.Millisecond,
			Overrides: overrides, Log: s.cfg.Log.With().Str("part", "amtsim").Logger()}
		sc.FactoryHashes, sc.TrustedDomain = [][]byte{s.trustHash}, Domain
		// Hellos on a compressed schedule, from devices in state 0; the
		// agent may not be up for the first ones, as on a real network.
		sc.HelloAddr, sc.HelloInterval = s.helloAddrs[i], time.Second
		sim, err := amtsim.New(sc)
		if err != nil {
			return fmt.Errorf("site: simulator: %w", err)
		}
		s.g.Go(func() error { return sim.Run(ctx) })
		select {
		case <-sim.Ready():
		case <-time.After(30 * time.Second):
			return errors.New("site: simulator did not start")
		}
		s.Sims = append(s.Sims, sim)
		s.Subnets = append(s.Subnets, netip.PrefixFrom(base, 24).Masked())
	}
	return nil
}

func (s *Site) startServer(ctx, runCtx context.Context, password string) error {
	cfg := config.DefaultServer()
	cfg.Redis.Addr = s.cfg.RedisAddr
	cfg.DataDir = filepath.Join(s.cfg.Dir, "server")
	cfg.GRPC.Listen, cfg.HTTP.Listen, cfg.Console.Listen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("site: %w", err)
	}
	cfg.AMT.ProvisioningPasswordFile = filepath.Join(cfg.DataDir, "provisioning.password")
	if err := os.WriteFile(cfg.AMT.ProvisioningPasswordFile, []byte(password), 0o600); err != nil {
		return fmt.Errorf("site: %w", err)
	}
	if s.cfg.Directory.URL != "" {
		cfg.Directory = s.cfg.Directory
		cfg.Directory.PasswordFile = filepath.Join(cfg.DataDir, "directory.password")
		if err := os.WriteFile(cfg.Directory.PasswordFile, []byte(s.cfg.DirectoryPassword), 0o600); err != nil {
			return fmt.Errorf("site: %w", err)
		}
		cfg.AMT.Kerberos.Enabled = true
	}
	if s.prov != nil {
		rc := &cfg.AMT.RemoteConfig
		rc.ChainFile, rc.KeyFile = filepath.Join(cfg.DataDir, "provisioning.pem"), filepath.Join(cfg.DataDir, "provisioning.key")
		rc.TrustedDomain = Domain
		if err := errors.Join(os.WriteFile(rc.ChainFile, s.prov.ChainPEM, 0o600), os.WriteFile(rc.KeyFile, s.prov.KeyPEM, 0o600)); err != nil {
			return fmt.Errorf("site: %w", err)
		}
	}
	if s.cfg.Server != nil {
		s.cfg.Server(&cfg)
	}
	s.serverCfg = cfg
	return s.runServer(ctx, runCtx)
}

// runServer starts a server replica on serverCfg, stoppable on its own.
func (s *Site) runServer(ctx, runCtx context.Context) error {
	srv, err := server.New(ctx, s.serverCfg, s.cfg.Log.With().Str("part", "server").Logger())
	if err != nil {
		return fmt.Errorf("site: %w", err)
	}
	s.Server, s.HTTPAddr = srv, srv.HTTPAddr()
	sctx, cancel := context.WithCancel(runCtx)
	done := make(chan error, 1)
	s.stopServer = func() error { cancel(); return <-done }
	s.g.Go(func() error {
		defer srv.Close()
		err := srv.Run(sctx)
		done <- err
		return err
	})
	// Keep the addresses: agents and administrators know the server there.
	s.serverCfg.GRPC.Listen, s.serverCfg.HTTP.Listen, s.serverCfg.Console.Listen = srv.GRPCAddr(), srv.HTTPAddr(), srv.ConsoleAddr()
	s.CAFile = filepath.Join(s.serverCfg.DataDir, "grpc-ca.pem")
	s.TokenFile = filepath.Join(s.serverCfg.DataDir, "admin.token")
	return nil
}

// bearer sends the administrator token with every call.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return true }

func (s *Site) dialAdmin(ctx context.Context) error {
	var token []byte
	for deadline := time.Now().Add(10 * time.Second); ; {
		var err error
		if token, err = os.ReadFile(s.TokenFile); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("site: admin token: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	pemCA, err := os.ReadFile(s.CAFile)
	if err != nil {
		return fmt.Errorf("site: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemCA)
	conn, err := grpc.NewClient(s.Server.GRPCAddr(),
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})),
		grpc.WithPerRPCCredentials(bearer(strings.TrimSpace(string(token)))))
	if err != nil {
		return fmt.Errorf("site: dial admin: %w", err)
	}
	s.conn, s.Admin = conn, pb.NewAdminServiceClient(conn)
	return nil
}

// HostName is the Windows computer name of a simulated device.
func HostName(subnet, n int) string { return fmt.Sprintf("pc-%d-%03d", subnet, n) }

// importInventory loads the computers the site knows from its inventory
// (as Configuration Manager knows them from its clients) into Collection.
func (s *Site) importInventory(ctx context.Context) error {
	// Factory devices are provisioned when their Hello arrives, as in an
	// auto-provisioning collection of Configuration Manager.
	if _, err := s.Admin.CreateCollection(ctx, &pb.CreateCollectionRequest{Name: Collection,
		Description: "simulated fleet", AutoProvision: s.factory()}); err != nil {
		return fmt.Errorf("site: create collection: %w", err)
	}
	var csv bytes.Buffer
	// The inventory knows each computer's SMBIOS UUID, which is the AMT
	// UUID the directory account records.
	csv.WriteString("host_name,domain,ip,uuid\n")
	var hosts []string
	for i, sim := range s.Sims {
		for n, d := range sim.Devices() {
			hosts = append(hosts, HostName(i, n+1))
			fmt.Fprintf(&csv, "%s,%s,%s,%s\n", HostName(i, n+1), Domain, d.Addr, d.UUID)
		}
	}
	if s.cfg.Directory.URL != "" {
		if err := s.JoinComputers(hosts...); err != nil {
			return err
		}
	}
	if _, err := s.Admin.ImportDevices(ctx, &pb.ImportDevicesRequest{Collection: Collection, Csv: csv.Bytes()}); err != nil {
		return fmt.Errorf("site: import inventory: %w", err)
	}
	return nil
}

func (s *Site) startAgents(ctx, runCtx context.Context) error {
	for i, subnet := range s.Subnets {
		tok, err := s.Admin.CreateEnrollmentToken(ctx, &pb.CreateEnrollmentTokenRequest{Subnets: []string{subnet.String()}, TtlSeconds: 600})
		if err != nil {
			return fmt.Errorf("site: enrollment token: %w", err)
		}
		cfg := config.DefaultAgent()
		cfg.Name = fmt.Sprintf("agent-%d", i)
		cfg.Server, cfg.ServerCAFile = s.Server.GRPCAddr(), s.CAFile
		cfg.StateDir = filepath.Join(s.cfg.Dir, cfg.Name)
		cfg.AMT.HTTPPort, cfg.AMT.TLSPort = s.cfg.HTTPPort, s.cfg.TLSPort
		cfg.AMT.CommitWait, cfg.AMT.CommitDeadline = 200*time.Millisecond, 30*time.Second
		cfg.Discovery.Interval = 0 // the demo asks for discovery itself
		// Each agent hears Hellos on its own loopback port (the default
		// ":9971" is every interface, and two agents in one process cannot
		// share it).
		cfg.Hello.Listen = s.helloAddrs[i]
		if s.cfg.Agent != nil {
			s.cfg.Agent(&cfg)
		}
		a, err := agent.New(cfg, s.cfg.Log.With().Str("part", cfg.Name).Logger(), agent.WithBootstrapToken(tok.GetToken()),
			agent.WithBackoff(50*time.Millisecond, 2*time.Second))
		if err != nil {
			return fmt.Errorf("site: %w", err)
		}
		s.g.Go(func() error { return a.Run(runCtx) })
	}
	// Ready when every agent has enrolled with its subnet.
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := s.Admin.ListAgents(ctx, &pb.ListAgentsRequest{})
		if err != nil {
			return fmt.Errorf("site: list agents: %w", err)
		}
		if len(resp.GetAgents()) >= len(s.Subnets) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("site: %d of %d agents enrolled after 30s", len(resp.GetAgents()), len(s.Subnets))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Discover asks every agent to sweep its subnet and waits until the
// inventory's devices have been seen.
func (s *Site) Discover(ctx context.Context) (seen int, err error) {
	var subnets []string
	for _, p := range s.Subnets {
		subnets = append(subnets, p.String())
	}
	if _, err := s.Admin.StartBatch(ctx, &pb.StartBatchRequest{Kind: pb.JobKind_JOB_KIND_DISCOVER, Subnets: subnets}); err != nil {
		return 0, fmt.Errorf("site: discover: %w", err)
	}
	for {
		seen, err = s.countSeen(ctx)
		if err != nil || seen >= s.cfg.Devices {
			return seen, err
		}
		select {
		case <-ctx.Done():
			return seen, fmt.Errorf("site: discover: %d of %d devices seen: %w", seen, s.cfg.Devices, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (s *Site) countSeen(ctx context.Context) (int, error) {
	seen, cursor := 0, ""
	for {
		resp, err := s.Admin.ListDevices(ctx, &pb.ListDevicesRequest{Collection: Collection, Limit: 1000, Cursor: cursor})
		if err != nil {
			return 0, fmt.Errorf("site: list devices: %w", err)
		}
		for _, d := range resp.GetDevices() {
			if d.GetStatus() != pb.DeviceStatus_DEVICE_STATUS_UNKNOWN && d.GetStatus() != pb.DeviceStatus_DEVICE_STATUS_UNSPECIFIED {
				seen++
			}
		}
		if cursor = resp.GetNextCursor(); cursor == "" {
			return seen, nil
		}
	}
}

// Run starts a batch on the inventory and follows it to the end,
// calling progress with each update.
func (s *Site) Run(ctx context.Context, kind pb.JobKind, progress func(*pb.Batch)) (*pb.Batch, error) {
	b, err := s.Admin.StartBatch(ctx, &pb.StartBatchRequest{Kind: kind, Collection: Collection})
	if err != nil {
		return nil, fmt.Errorf("site: start batch: %w", err)
	}
	return s.Watch(ctx, b.GetId(), progress)
}

// Watch follows a batch until it is done.
func (s *Site) Watch(ctx context.Context, id string, progress func(*pb.Batch)) (*pb.Batch, error) {
	stream, err := s.Admin.WatchBatch(ctx, &pb.GetBatchRequest{Id: id})
	if err != nil {
		return nil, fmt.Errorf("site: watch batch: %w", err)
	}
	var last *pb.Batch
	for {
		b, err := stream.Recv()
		if err != nil {
			if last != nil && last.GetDone() {
				return last, nil
			}
			return last, fmt.Errorf("site: watch batch %s: %w", id, err)
		}
		last = b
		if progress != nil {
			progress(b)
		}
		if b.GetDone() {
			return b, nil
		}
	}
}

// Settle waits until every device of the inventory is provisioned or has
// failed with a reason (factory devices are provisioned one by one as
// their Hellos arrive, in batches the site starts itself), calling
// progress with the counts, and returns the devices.
func (s *Site) Settle(ctx context.Context, progress func(provisioned, failed int)) ([]*pb.Device, error) {
	for {
		var devs []*pb.Device
		cursor := ""
		for {
			resp, err := s.Admin.ListDevices(ctx, &pb.ListDevicesRequest{Collection: Collection, Limit: 1000, Cursor: cursor})
			if err != nil {
				return nil, fmt.Errorf("site: list devices: %w", err)
			}
			devs = append(devs, resp.GetDevices()...)
			if cursor = resp.GetNextCursor(); cursor == "" {
				break
			}
		}
		ok, failed := 0, 0
		for _, d := range devs {
			switch {
			case d.GetStatus() == pb.DeviceStatus_DEVICE_STATUS_PROVISIONED:
				ok++
			case d.GetLastError() != "":
				failed++
			}
		}
		if progress != nil {
			progress(ok, failed)
		}
		if ok+failed >= s.cfg.Devices {
			return devs, nil
		}
		select {
		case <-ctx.Done():
			return devs, fmt.Errorf("site: %d provisioned and %d failed of %d: %w", ok, failed, s.cfg.Devices, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Failure is one step at which jobs of a batch failed.
type Failure struct {
	Step    string `json:"step"`
	Count   int    `json:"count"`
	Example string `json:"example"` // one job's reason
}

// Failures groups a batch's failed jobs by the step that failed.
func (s *Site) Failures(ctx context.Context, batchID string) ([]Failure, error) {
	var out []Failure
	cursor := ""
	for {
		resp, err := s.Admin.ListBatchJobs(ctx, &pb.ListBatchJobsRequest{BatchId: batchID, State: "failed", Limit: 1000, Cursor: cursor})
		if err != nil {
			return nil, fmt.Errorf("site: list jobs: %w", err)
		}
		for _, j := range resp.GetJobs() {
			i := slices.IndexFunc(out, func(f Failure) bool { return f.Step == j.GetErrorStep() })
			if i < 0 {
				out = append(out, Failure{Step: j.GetErrorStep(), Example: j.GetLastError()})
				i = len(out) - 1
			}
			out[i].Count++
		}
		if cursor = resp.GetNextCursor(); cursor == "" {
			slices.SortFunc(out, func(a, b Failure) int { return b.Count - a.Count })
			return out, nil
		}
	}
}

// RestartServer stops the site server and starts it again on the same
// addresses, as an upgrade or a crash-and-restart would; agents and
// in-flight work must ride it out. It needs an external Redis: the
// embedded one dies with the server.
func (s *Site) RestartServer(ctx context.Context) error {
	if s.cfg.RedisAddr == "" {
		return errors.New("site: restart: the embedded Redis would lose everything")
	}
	if err := s.stopServer(); err != nil {
		return fmt.Errorf("site: stop server: %w", err)
	}
	return s.runServer(ctx, s.runCtx)
}

// Close stops agents, server and simulator and waits for them.
func (s *Site) Close() error {
	s.cancel()
	err := s.g.Wait()
	if s.conn != nil {
		_ = s.conn.Close()
	}
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}
