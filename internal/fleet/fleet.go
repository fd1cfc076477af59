// Package fleet runs a whole site as separate processes, the way a new
// user would: a private redis-server, amtops-server replicas, enrolled
// amtops-agents and amtsim fleets of factory devices that send their
// Hellos to the agents. It samples what each kind of process costs
// (/proc CPU and memory, Redis INFO commandstats) and follows the site's
// state until every device is provisioned or has failed for good.
//
// Every process is known by its PID and can be stopped, killed (-9),
// paused (SIGSTOP) and restarted on its own files, for the fleet bench
// (scripts/benchfleet) and the chaos suite.
package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"

	"github.com/amtops/amtops/internal/amt"
	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/provcert"
	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// Process kinds, as CPU and memory are reported.
const (
	KindServer    = "server"
	KindAgent     = "agent"
	KindRedis     = "redis"
	KindSimulator = "simulator"
)

// Collection is the auto-provisioning collection holding the fleet.
const Collection = "fleet"

// Domain is the simulated computers' DNS domain and the provisioning
// certificate's trusted suffix.
const Domain = "amt.test"

// Config describes the fleet. Zero values take the defaults noted.
type Config struct {
	Devices  int // factory devices, spread evenly over the agents; required
	Agents   int // one subnet each; 1
	Replicas int // server replicas on the one Redis; 1
	// Net is the loopback range every address comes from: agents'
	// subnets from its start, the processes' listeners in its last /24;
	// 127.22.0.0/16.
	Net netip.Prefix
	// Dir holds binaries, logs and state; a temporary directory when empty
	// (removed by Close), kept when set.
	Dir string
	// Bin holds already built commands (Build); built into Dir when empty.
	Bin map[string]string

	KeyOnDevice bool          // amt.key_on_device: the devices make their keys
	Latency     time.Duration // added by the simulator to every WS-Man call
	TLSRestart  time.Duration // 16993 silent after a TLS commit; 20s
	CommitDelay time.Duration // off the network after CommitChanges; 3s
	// HelloInterval is the simulator's Hello schedule base; 1s.
	HelloInterval time.Duration
	AOF           bool // Redis append-only file
	// Cluster runs a three-master Redis Cluster instead of one
	// redis-server (RedisAddrs are its nodes).
	Cluster bool
	// Profile serves /debug/pprof/ on the servers' HTTP listeners and on
	// agents' metrics listeners (ProfileAddrs).
	Profile bool
	// Faults is the simulators' fault spec (amtsim --faults), e.g.
	// "drop=0.05,http500=0.05,reboot=0.01"; none when empty.
	Faults string
	// Proxy puts a Proxy the harness owns between each agent and its
	// server replica (Fleet.Proxies), for partitions.
	Proxy bool
	// Server and Agent adjust each process's configuration before it is
	// written (timings in tests).
	Server func(*config.Server)
	Agent  func(i int, c *config.Agent)
	// SimulatorsOnly starts the simulators alone (the bare limit's
	// fleet): their Hellos go to HelloAddrs, free ports on the range
	// chosen by Start, on which BeforeSimulators must start listening.
	SimulatorsOnly   bool
	BeforeSimulators func(f *Fleet) error
}

func (c *Config) defaults() error {
	if c.Devices <= 0 {
		return fmt.Errorf("fleet: devices: must be positive, got %d", c.Devices)
	}
	c.Agents, c.Replicas = max(c.Agents, 1), max(c.Replicas, 1)
	if !c.Net.IsValid() {
		c.Net = netip.MustParsePrefix("127.22.0.0/16")
	}
	if !c.Net.Addr().Is4() || !c.Net.Addr().IsLoopback() || c.Net.Bits() > 16 {
		return fmt.Errorf("fleet: net: %s must be an IPv4 loopback /16 or larger", c.Net)
	}
	if c.TLSRestart == 0 {
		c.TLSRestart = 20 * time.Second
	}
	if c.CommitDelay == 0 {
		c.CommitDelay = 3 * time.Second
	}
	if c.HelloInterval == 0 {
		c.HelloInterval = time.Second
	}
	return nil
}

// Fleet is a running site of separate processes.
type Fleet struct {
	cfg     Config
	dir     string
	tempDir bool
	logDir  string
	bin     map[string]string

	mu    sync.Mutex
	procs []*Proc

	rdb       *redis.Client
	RedisAddr string
	// RedisAddrs and nodes are the cluster's, with Config.Cluster.
	RedisAddrs []string
	nodes      []*redis.Client
	// GRPCAddrs are the server replicas' gRPC addresses; CAFile and
	// TokenFile what amtopsctl needs to reach them.
	GRPCAddrs, HTTPAddrs []string
	CAFile, TokenFile    string
	Admin                pb.AdminServiceClient
	conn                 *grpc.ClientConn
	// ProfileAddrs are where each process serves /debug/pprof/, by
	// process name, with Config.Profile.
	ProfileAddrs map[string]string

	// Subnets are the agents' subnets, HelloAddrs where each agent hears
	// Hellos, StateAddrs each simulator's state API.
	Subnets    []netip.Prefix
	HelloAddrs []string
	StateAddrs []string
	// Devices are the fleet's addresses per subnet.
	Devices [][]netip.Addr
	// Proxies are the agents' relays to the server, by agent, when
	// Config.Proxy is set.
	Proxies []*Proxy

	prov      *provcert.TestPair
	infra     netip.Addr // next free listener address
	infraLast netip.Addr

	// T0 is when the first simulator served (its devices' Hellos begin);
	// base holds each process's usage then, and redisBase Redis's
	// command counts: the window Watch measures starts there.
	T0        time.Time
	base      map[string]Usage
	redisBase CommandStats
}

// Start builds (unless Config.Bin is set) and starts Redis, the server
// replicas, the inventory, the agents (enrolled with one-time tokens) and
// the simulators. The devices start sending Hellos at once; Close stops
// everything by PID.
func Start(ctx context.Context, cfg Config) (*Fleet, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if !cfg.SimulatorsOnly {
		if _, err := lookRedis(); err != nil {
			return nil, err // before building anything
		}
	}
	f := &Fleet{cfg: cfg, dir: cfg.Dir, bin: cfg.Bin}
	if f.dir == "" {
		d, err := os.MkdirTemp("", "amtops-fleet-")
		if err != nil {
			return nil, fmt.Errorf("fleet: %w", err)
		}
		f.dir, f.tempDir = d, true
	}
	f.logDir = filepath.Join(f.dir, "log")
	if err := os.MkdirAll(f.logDir, 0o700); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
		}
	}()
	if err := f.layout(); err != nil {
		return nil, err
	}
	if f.bin == nil {
		var err error
		if f.bin, err = Build(ctx, filepath.Join(f.dir, "bin")); err != nil {
			return nil, err
		}
	}
	steps := []func(context.Context) error{f.startStore, f.startServers, f.importInventory, f.startAgents, f.startSimulators}
	if cfg.SimulatorsOnly {
		steps = []func(context.Context) error{f.simulatorsOnly, f.startSimulators}
	}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return nil, err
		}
	}
	ok = true
	return f, nil
}

// layout places the agents' subnets at the start of Net, each a power of
// two holding its devices, and keeps the last /24 for listeners.
func (f *Fleet) layout() error {
	per := (f.cfg.Devices + f.cfg.Agents - 1) / f.cfg.Agents
	size := 256
	for size < per+2 {
		size *= 2
	}
	base := f.cfg.Net.Masked().Addr().As4()
	start := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8
	span := uint32(1) << (32 - f.cfg.Net.Bits())
	if uint64(size)*uint64(f.cfg.Agents) > uint64(span)-256 {
		return fmt.Errorf("fleet: %d agents with %d devices each do not fit in %s", f.cfg.Agents, per, f.cfg.Net)
	}
	bits := 32
	for s := size; s > 1; s /= 2 {
		bits--
	}
	left := f.cfg.Devices
	for i := range f.cfg.Agents {
		p := netip.PrefixFrom(u32Addr(start+uint32(i*size)), bits)
		n := min(per, left)
		left -= n
		var addrs []netip.Addr
		for a, k := p.Addr().Next(), 0; k < n; a, k = a.Next(), k+1 {
			addrs = append(addrs, a)
		}
		f.Subnets, f.Devices = append(f.Subnets, p), append(f.Devices, addrs)
	}
	f.infra = u32Addr(start + span - 256 + 1)
	f.infraLast = u32Addr(start + span - 2)
	return nil
}

func u32Addr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// listenAddr is a free port on the next listener address of the range.
func (f *Fleet) listenAddr() (string, error) {
	if f.infra.Compare(f.infraLast) > 0 {
		return "", errors.New("fleet: out of listener addresses")
	}
	a := f.infra
	f.infra = a.Next()
	l, err := net.Listen("tcp", netip.AddrPortFrom(a, 0).String())
	if err != nil {
		return "", fmt.Errorf("fleet: free port on %s: %w", a, err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// add starts p and keeps it for Close.
func (f *Fleet) add(p *Proc) error {
	if err := p.Start(); err != nil {
		return err
	}
	f.mu.Lock()
	f.procs = append(f.procs, p)
	f.mu.Unlock()
	return nil
}

// Procs are the processes started, in start order.
func (f *Fleet) Procs() []*Proc {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*Proc(nil), f.procs...)
}

// Proc returns the process called name, or nil.
func (f *Fleet) Proc(name string) *Proc {
	for _, p := range f.Procs() {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Dir is where binaries, logs and state live.
func (f *Fleet) Dir() string { return f.dir }

// LogDir holds every process's log, <name>.log.
func (f *Fleet) LogDir() string { return f.logDir }

// RedisDir holds Redis's files (its append-only file).
func (f *Fleet) RedisDir() string { return filepath.Join(f.dir, "redis") }

// SiteDir holds the files every server replica shares: site.key (the
// site key that seals secrets), provisioning.password, the provisioning
// certificate and its key.
func (f *Fleet) SiteDir() string { return filepath.Join(f.dir, "site") }

// Redis is a client of the fleet's Redis.
func (f *Fleet) Redis() *redis.Client { return f.rdb }

func (f *Fleet) startStore(ctx context.Context) error {
	bin, err := lookRedis()
	if err != nil {
		return err
	}
	if f.cfg.Cluster {
		return f.startCluster(ctx, bin)
	}
	if f.RedisAddr, err = f.listenAddr(); err != nil {
		return err
	}
	dir := filepath.Join(f.dir, "redis")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	_, err = f.startRedis(ctx, bin, f.RedisAddr, dir, f.cfg.AOF)
	return err
}

// simulatorsOnly prepares the simulators' provisioning root and Hello
// addresses without a site, and lets the caller listen on them.
func (f *Fleet) simulatorsOnly(context.Context) error {
	pair, err := provcert.NewTestPair(Domain)
	if err != nil {
		return fmt.Errorf("fleet: provisioning certificate: %w", err)
	}
	f.prov = pair
	for range f.Subnets {
		a, err := f.listenAddr()
		if err != nil {
			return err
		}
		f.HelloAddrs = append(f.HelloAddrs, a)
	}
	if f.cfg.BeforeSimulators != nil {
		return f.cfg.BeforeSimulators(f)
	}
	return nil
}

// Provisioning is the provisioning certificate the devices trust.
func (f *Fleet) Provisioning() *provcert.TestPair { return f.prov }

// Close stops every process (SIGTERM, then SIGKILL after 10 s), in
// reverse start order, and removes a temporary directory.
func (f *Fleet) Close() error {
	if f.conn != nil {
		_ = f.conn.Close()
	}
	if f.rdb != nil {
		_ = f.rdb.Close()
	}
	for _, n := range f.nodes {
		_ = n.Close()
	}
	err := stopAll(f.Procs(), 10*time.Second)
	for _, p := range f.Proxies {
		err = errors.Join(err, p.Close())
	}
	if f.tempDir {
		err = errors.Join(err, os.RemoveAll(f.dir))
	}
	return err
}

// writeSecret writes a new random password file (0600).
func writeSecret(path string) error {
	pw, err := amt.GeneratePassword(rand.Reader)
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	return os.WriteFile(path, []byte(pw), 0o600)
}

func writeSiteKey(path string) error {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return fmt.Errorf("fleet: site key: %w", err)
	}
	return os.WriteFile(path, []byte(hex.EncodeToString(k)), 0o600)
}

// poll calls cond every interval until it is true, fails, or timeout passes.
func poll(ctx context.Context, timeout, interval time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
