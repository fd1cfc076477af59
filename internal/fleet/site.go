package fleet

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"gopkg.in/yaml.v3"

	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/provcert"
	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// ErrNoRedis is Start's error when no redis-server is installed.
var ErrNoRedis = errors.New("fleet: redis-server not found in PATH (apt-get install redis-server)")

func lookRedis() (string, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", ErrNoRedis
	}
	return bin, nil
}

func writeYAML(path string, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Errorf("fleet: %s: %w", path, err)
	}
	return os.WriteFile(path, b, 0o600)
}

// startServers starts the replicas on one Redis, one site key and one
// provisioning certificate; the first one alone first, so that it makes
// the admin token and CAs the others find in Redis.
func (f *Fleet) startServers(ctx context.Context) error {
	shared := filepath.Join(f.dir, "site")
	if err := os.MkdirAll(shared, 0o700); err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	pair, err := provcert.NewTestPair(Domain)
	if err != nil {
		return fmt.Errorf("fleet: provisioning certificate: %w", err)
	}
	f.prov = pair
	siteKey, pwFile := filepath.Join(shared, "site.key"), filepath.Join(shared, "provisioning.password")
	chain, key := filepath.Join(shared, "provisioning.pem"), filepath.Join(shared, "provisioning.key")
	if err := errors.Join(writeSiteKey(siteKey), writeSecret(pwFile), os.WriteFile(chain, pair.ChainPEM, 0o600),
		os.WriteFile(key, pair.KeyPEM, 0o600)); err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	for i := range f.cfg.Replicas {
		cfg := config.DefaultServer()
		cfg.Redis.Addr, cfg.SiteKeyFile = f.RedisAddr, siteKey
		if f.cfg.Cluster {
			cfg.Redis.Addr, cfg.Redis.Addrs, cfg.Redis.Cluster = "", f.RedisAddrs, true
		}
		cfg.DataDir = filepath.Join(f.dir, "server-"+itoa(i))
		var err error
		if cfg.GRPC.Listen, err = f.listenAddr(); err != nil {
			return err
		}
		if cfg.HTTP.Listen, err = f.listenAddr(); err != nil {
			return err
		}
		cfg.HTTP.Pprof = f.cfg.Profile
		cfg.Console.Disabled = true // not what the fleet measures; its default port would clash between replicas
		cfg.AMT.ProvisioningPasswordFile, cfg.AMT.KeyOnDevice = pwFile, f.cfg.KeyOnDevice
		cfg.AMT.Kerberos.Enabled = false // no directory
		// The auto-provisioning sweep's slots fall on the wall clock (every
		// 15 min by default); one during a run adds batches of its own.
		// The fleet measures the Hello path alone: no slot starts during
		// a run, and the one a start enqueues is awaited before the
		// inventory exists (waitSweep).
		cfg.Sweep.Interval = 24 * time.Hour
		rc := &cfg.AMT.RemoteConfig
		rc.ChainFile, rc.KeyFile, rc.TrustedDomain = chain, key, Domain
		if f.cfg.Server != nil {
			f.cfg.Server(&cfg)
		}
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return fmt.Errorf("fleet: %w", err)
		}
		path := filepath.Join(cfg.DataDir, "server.yaml")
		if err := writeYAML(path, cfg); err != nil {
			return err
		}
		p := newProc("server-"+itoa(i), KindServer, f.logDir, f.bin["amtops-server"], []string{"--config", path}, nil)
		if err := f.add(p); err != nil {
			return err
		}
		f.GRPCAddrs, f.HTTPAddrs = append(f.GRPCAddrs, cfg.GRPC.Listen), append(f.HTTPAddrs, cfg.HTTP.Listen)
		f.profiled(p.Name, cfg.HTTP.Listen)
		if i == 0 {
			f.CAFile, f.TokenFile = filepath.Join(cfg.DataDir, "grpc-ca.pem"), filepath.Join(cfg.DataDir, "admin.token")
			if err := f.dialAdmin(ctx, p); err != nil {
				return err
			}
		}
	}
	if err := f.waitServers(ctx); err != nil {
		return err
	}
	return f.waitSweep(ctx)
}

// waitSweep waits until the first replica has run the sweep its start
// enqueued for the current slot. With no inventory yet it finds nothing;
// run later, it would start a batch of its own for every device that
// had sent a Hello, refused as busy (failed jobs) beside their Hello jobs.
func (f *Fleet) waitSweep(ctx context.Context) error {
	p := f.Proc("server-0")
	err := poll(ctx, 60*time.Second, 50*time.Millisecond, func() (bool, error) {
		if !p.Running() {
			return false, fmt.Errorf("fleet: %s exited: %s", p.Name, p.LogTail(2000))
		}
		tail := p.LogTail(1 << 16)
		return strings.Contains(tail, `"sweep found nothing to provision"`) || strings.Contains(tail, `"sweep batch started"`), nil
	})
	if err != nil {
		return fmt.Errorf("fleet: %s: startup sweep: %w", p.Name, err)
	}
	return nil
}

func (f *Fleet) profiled(name, addr string) {
	if !f.cfg.Profile {
		return
	}
	if f.ProfileAddrs == nil {
		f.ProfileAddrs = map[string]string{}
	}
	f.ProfileAddrs[name] = addr
}

// waitServers waits until every replica answers on gRPC.
func (f *Fleet) waitServers(ctx context.Context) error {
	for i, addr := range f.GRPCAddrs {
		c, err := f.adminClient(addr)
		if err != nil {
			return err
		}
		p := f.Proc("server-" + itoa(i))
		err = poll(ctx, 60*time.Second, 50*time.Millisecond, func() (bool, error) {
			if !p.Running() {
				return false, fmt.Errorf("fleet: %s exited: %s", p.Name, p.LogTail(2000))
			}
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			_, err := pb.NewAdminServiceClient(c).ListAgents(cctx, &pb.ListAgentsRequest{})
			return err == nil, nil
		})
		c.Close()
		if err != nil {
			return fmt.Errorf("fleet: %s not serving: %w", p.Name, err)
		}
	}
	return nil
}

// bearer sends the administrator token with every call.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return true }

// dialAdmin waits for the first replica's token and CA and dials it.
func (f *Fleet) dialAdmin(ctx context.Context, p *Proc) error {
	err := poll(ctx, 60*time.Second, 50*time.Millisecond, func() (bool, error) {
		if !p.Running() {
			return false, fmt.Errorf("fleet: %s exited: %s", p.Name, p.LogTail(2000))
		}
		_, e1 := os.Stat(f.TokenFile)
		_, e2 := os.Stat(f.CAFile)
		return e1 == nil && e2 == nil, nil
	})
	if err != nil {
		return fmt.Errorf("fleet: admin token: %w", err)
	}
	if f.conn, err = f.adminClient(f.GRPCAddrs[0]); err != nil {
		return err
	}
	f.Admin = pb.NewAdminServiceClient(f.conn)
	return nil
}

// adminClient dials a replica with the first one's token and CA.
func (f *Fleet) adminClient(addr string) (*grpc.ClientConn, error) {
	token, err := os.ReadFile(f.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	pemCA, err := os.ReadFile(f.CAFile)
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemCA)
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})),
		grpc.WithPerRPCCredentials(bearer(strings.TrimSpace(string(token)))))
	if err != nil {
		return nil, fmt.Errorf("fleet: dial %s: %w", addr, err)
	}
	return conn, nil
}

// HostName is the computer name of device n (from 0) of subnet i.
func HostName(i, n int) string { return fmt.Sprintf("pc-%d-%05d", i, n) }

// importInventory makes the auto-provisioning collection and imports the
// fleet by name and address, as an inventory knows them (no UUIDs: the
// Hello brings them).
func (f *Fleet) importInventory(ctx context.Context) error {
	if _, err := f.Admin.CreateCollection(ctx, &pb.CreateCollectionRequest{Name: Collection,
		Description: "fleet bench", AutoProvision: true}); err != nil {
		return fmt.Errorf("fleet: create collection: %w", err)
	}
	var csv bytes.Buffer
	csv.WriteString("host_name,domain,ip\n")
	for i, addrs := range f.Devices {
		for n, a := range addrs {
			fmt.Fprintf(&csv, "%s,%s,%s\n", HostName(i, n), Domain, a)
		}
	}
	if _, err := f.Admin.ImportDevices(ctx, &pb.ImportDevicesRequest{Collection: Collection, Csv: csv.Bytes()}); err != nil {
		return fmt.Errorf("fleet: import inventory: %w", err)
	}
	return nil
}

// startAgents enrols one agent per subnet with a one-time token (as
// `amtopsctl agents token` makes), spread over the replicas, each
// hearing Hellos on its own address.
func (f *Fleet) startAgents(ctx context.Context) error {
	for i, subnet := range f.Subnets {
		tok, err := f.Admin.CreateEnrollmentToken(ctx, &pb.CreateEnrollmentTokenRequest{Subnets: []string{subnet.String()}, TtlSeconds: 600})
		if err != nil {
			return fmt.Errorf("fleet: enrollment token: %w", err)
		}
		name := "agent-" + itoa(i)
		cfg := config.DefaultAgent()
		cfg.Name, cfg.Server, cfg.ServerCAFile = name, f.GRPCAddrs[i%len(f.GRPCAddrs)], f.CAFile
		if f.cfg.Proxy {
			if err := f.proxyAgent(&cfg); err != nil {
				return err
			}
		}
		cfg.StateDir = filepath.Join(f.dir, name)
		cfg.BootstrapTokenFile = filepath.Join(cfg.StateDir, "bootstrap.token")
		cfg.Discovery.Interval = 0 // devices announce themselves
		if cfg.Hello.Listen, err = f.listenAddr(); err != nil {
			return err
		}
		if f.cfg.Profile {
			if cfg.Metrics.Listen, err = f.listenAddr(); err != nil {
				return err
			}
			cfg.Metrics.Pprof = true
			f.profiled(name, cfg.Metrics.Listen)
		}
		if f.cfg.Agent != nil {
			f.cfg.Agent(i, &cfg)
		}
		if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
			return fmt.Errorf("fleet: %w", err)
		}
		path := filepath.Join(cfg.StateDir, "agent.yaml")
		if err := errors.Join(os.WriteFile(cfg.BootstrapTokenFile, []byte(tok.GetToken()), 0o600), writeYAML(path, cfg)); err != nil {
			return fmt.Errorf("fleet: %w", err)
		}
		if err := f.add(newProc(name, KindAgent, f.logDir, f.bin["amtops-agent"], []string{"--config", path}, nil)); err != nil {
			return err
		}
		f.HelloAddrs = append(f.HelloAddrs, cfg.Hello.Listen)
	}
	return poll(ctx, 60*time.Second, 100*time.Millisecond, func() (bool, error) {
		for i := range f.Subnets {
			if p := f.Proc("agent-" + itoa(i)); !p.Running() {
				return false, fmt.Errorf("fleet: %s exited: %s", p.Name, p.LogTail(2000))
			}
		}
		resp, err := f.Admin.ListAgents(ctx, &pb.ListAgentsRequest{})
		if err != nil {
			return false, fmt.Errorf("fleet: list agents: %w", err)
		}
		return len(resp.GetAgents()) >= len(f.Subnets), nil
	})
}

// proxyAgent points an agent at a new Proxy to its server, checking the
// server's certificate for the server's own address.
func (f *Fleet) proxyAgent(cfg *config.Agent) error {
	listen, err := f.listenAddr()
	if err != nil {
		return err
	}
	p, err := NewProxy(listen, cfg.Server)
	if err != nil {
		return err
	}
	f.Proxies = append(f.Proxies, p)
	host, _, err := net.SplitHostPort(cfg.Server)
	if err != nil {
		return fmt.Errorf("fleet: proxy: %w", err)
	}
	cfg.Server, cfg.ServerName = p.Addr, host
	return nil
}

// startSimulators runs one amtsim per subnet whose factory devices trust
// the provisioning root and send their Hellos to that subnet's agent.
func (f *Fleet) startSimulators(ctx context.Context) error {
	f.base = map[string]Usage{}
	for _, p := range f.Procs() {
		f.base[p.Name] = p.Sample()
	}
	if f.rdb != nil || len(f.nodes) > 0 {
		var err error
		if f.redisBase, err = f.redisStats(ctx); err != nil {
			return err
		}
	}
	for i, addrs := range f.Devices {
		if len(addrs) == 0 {
			continue
		}
		state, err := f.listenAddr()
		if err != nil {
			return err
		}
		args := []string{"--profile", "factory", "--devices", itoa(len(addrs)), "--base-ip", addrs[0].String(),
			"--hello", f.HelloAddrs[i], "--hello-interval", f.cfg.HelloInterval.String(),
			"--trust-hash", f.prov.RootSHA256, "--trusted-domain", Domain, "--state-addr", state,
			"--latency", f.cfg.Latency.String(), "--tls-restart", f.cfg.TLSRestart.String(),
			"--commit-delay", f.cfg.CommitDelay.String(), "--seed", itoa(i + 1)}
		if f.cfg.Faults != "" {
			args = append(args, "--faults", f.cfg.Faults)
		}
		p := newProc("amtsim-"+itoa(i), KindSimulator, f.logDir, f.bin["amtsim"], args, nil)
		if err := f.add(p); err != nil {
			return err
		}
		f.StateAddrs = append(f.StateAddrs, state)
		err = poll(ctx, 120*time.Second, 100*time.Millisecond, func() (bool, error) {
			if !p.Running() {
				return false, fmt.Errorf("fleet: %s exited: %s", p.Name, p.LogTail(2000))
			}
			return strings.Contains(p.LogTail(1<<16), "serving "), nil
		})
		if err != nil {
			return fmt.Errorf("fleet: %s not serving: %w", p.Name, err)
		}
		// Its start-up (device identities) is not the fleet's work.
		f.base[p.Name] = p.Sample()
		if f.T0.IsZero() {
			f.T0 = time.Now()
		}
	}
	return nil
}
