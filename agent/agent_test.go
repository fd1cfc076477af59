package agent_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/agent"
	"github.com/amtops/amtops/agent/phase2"
	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/agentca"
	"github.com/amtops/amtops/server/api"
	"github.com/amtops/amtops/server/api/apitest"
)

// fakeExecutor succeeds at once, except for jobs of batches named
// "block…", which run until their context ends.
type fakeExecutor struct {
	mu      sync.Mutex
	ran     map[string]int
	started chan string
}

func (f *fakeExecutor) Run(ctx context.Context, j *pb.Phase2Job, rep phase2.Reporter) phase2.Result {
	f.mu.Lock()
	f.ran[j.GetLease().GetJobId()]++
	f.mu.Unlock()
	rep.Step(ctx, "fake", domain.OutcomeStarted, "")
	if len(j.GetBatchId()) > 5 && j.GetBatchId()[:5] == "block" {
		f.started <- j.GetLease().GetJobId()
		<-ctx.Done()
		return phase2.Result{Err: ctx.Err(), ErrorStep: "fake"}
	}
	rep.Step(ctx, "fake", domain.OutcomeOK, "done")
	return phase2.Result{Facts: &pb.DeviceFacts{AmtVersion: "12.0"}}
}

// waitFor polls cond, bounded in count; it is a wait, not a timing test.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 400 {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("never: %s", what)
}

func TestAgentRuntime(t *testing.T) {
	s := apitest.Start(t, apitest.Options{})
	ctx := context.Background()
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, s.CA.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.DefaultAgent()
	cfg.Server, cfg.ServerCAFile, cfg.StateDir = s.Addr, caFile, filepath.Join(dir, "state")
	cfg.Hello.Listen = "" // tests that want the provisioning port bind loopback
	cfg.Concurrency, cfg.LongPoll, cfg.DeviceDeadline = 3, time.Second, 20*time.Second
	fx := &fakeExecutor{ran: map[string]int{}, started: make(chan string, 4)}
	a, err := agent.New(cfg, zerolog.Nop(), agent.WithExecutor(fx),
		agent.WithBootstrapToken(s.Token(t, "10.1.0.0/24", "10.2.0.0/24")),
		agent.WithBackoff(10*time.Millisecond, 200*time.Millisecond), agent.WithShutdownGrace(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}

	const n = 8
	var batches []string
	for i := range n {
		b := fmt.Sprintf("n%d", i)
		subnet, ip := "10.1.0.0/24", fmt.Sprintf("10.1.0.%d", 10+i)
		if i%2 == 1 {
			subnet, ip = "10.2.0.0/24", fmt.Sprintf("10.2.0.%d", 10+i)
		}
		s.Job(t, b, subnet, ip, domain.KindProvision)
		batches = append(batches, b)
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		<-done
	})

	waitFor(t, "all jobs succeeded", func() bool {
		for _, b := range batches {
			if bt, err := s.Store.GetBatch(ctx, b); err != nil || bt.Succeeded != 1 {
				return false
			}
		}
		return true
	})
	fx.mu.Lock()
	for id, runs := range fx.ran {
		if runs != 1 {
			t.Errorf("job %s ran %d times", id, runs)
		}
	}
	fx.mu.Unlock()
	if evs, err := s.Store.Events(ctx, "dev-10-1-0-10", 20); err != nil || len(evs) < 3 {
		t.Errorf("events = %d, %v; want the agent's steps and the completion", len(evs), err)
	}
	st, err := os.Stat(filepath.Join(cfg.StateDir, "agent.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("agent.key: %v, %v; want mode 0600", st, err)
	}

	// Graceful shutdown: two jobs still running past the grace period
	// are handed back, pending and with their attempt not counted.
	blocked := []string{
		s.Job(t, "block1", "10.1.0.0/24", "10.1.0.100", domain.KindProvision),
		s.Job(t, "block2", "10.2.0.0/24", "10.2.0.100", domain.KindProvision),
	}
	for range blocked {
		select {
		case <-fx.started:
		case <-time.After(20 * time.Second):
			t.Fatal("blocked jobs never started")
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	done <- nil // for the cleanup
	for i, id := range blocked {
		p := netip.MustParsePrefix([]string{"10.1.0.0/24", "10.2.0.0/24"}[i])
		qj, err := s.Queue.Job(ctx, p, id)
		if err != nil {
			t.Fatal(err)
		}
		if qj.State != "pending" || qj.Attempts != 0 {
			t.Errorf("%s after shutdown: state %s attempts %d, want pending 0", id, qj.State, qj.Attempts)
		}
	}

	// A restarted agent uses its saved certificate (no token needed).
	b, err := agent.New(cfg, zerolog.Nop(), agent.WithShutdownGrace(100*time.Millisecond),
		agent.WithExecutor(&fakeExecutor{ran: map[string]int{}, started: make(chan string, 4)}))
	if err != nil {
		t.Fatal(err)
	}
	rctx, rstop := context.WithCancel(ctx)
	rdone := make(chan error, 1)
	go func() { rdone <- b.Run(rctx) }()
	waitFor(t, "restarted agent enrolled from state", func() bool { return b.ID() != "" })
	if b.ID() != a.ID() {
		t.Errorf("restarted agent ID %q, want %q", b.ID(), a.ID())
	}
	rstop()
	<-rdone
}

// An administrator's change to the agent's subnets reaches it with the
// next heartbeat, and is saved for a restart.
func TestSubnetsFollowHeartbeats(t *testing.T) {
	s := apitest.Start(t, apitest.Options{API: api.Options{LeaseTTL: 600 * time.Millisecond}})
	ctx := context.Background()
	a, cfg := runAgent(t, s, "10.1.0.0/24")
	waitFor(t, "enrolled", func() bool { return a.ID() != "" && len(a.Subnets()) == 1 })

	rec, err := s.Store.GetAgent(ctx, a.ID())
	if err != nil {
		t.Fatal(err)
	}
	rec.Subnets = append(rec.Subnets, netip.MustParsePrefix("10.3.0.0/24"))
	if err := s.Store.PutAgent(ctx, rec); err != nil {
		t.Fatal(err)
	}
	// A lease teaches the agent the short TTL, so heartbeats come often.
	waitFor(t, "new subnet learnt", func() bool { return len(a.Subnets()) == 2 })
	saved, err := os.ReadFile(filepath.Join(cfg.StateDir, "subnets"))
	if err != nil || string(saved) != "10.1.0.0/24\n10.3.0.0/24\n" {
		t.Fatalf("saved subnets %q, %v", saved, err)
	}
}

// The agent renews its certificate well before it expires (at two thirds
// of its life) and the server records the new one.
func TestCertificateRenewedBeforeExpiry(t *testing.T) {
	// Agent certificates start 5 minutes back (clock skew), so 153 s of
	// validity puts the renewal 2 s after issuance.
	s := apitest.Start(t, apitest.Options{CA: agentca.Options{AgentValidity: 153 * time.Second}})
	ctx := context.Background()
	a, cfg := runAgent(t, s, "10.1.0.0/24")
	waitFor(t, "enrolled", func() bool { return a.ID() != "" })

	serial := func() string {
		b, err := os.ReadFile(filepath.Join(cfg.StateDir, "agent.crt"))
		if err != nil {
			return ""
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			return ""
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return ""
		}
		return c.SerialNumber.String()
	}
	first := serial()
	waitFor(t, "certificate renewed", func() bool { return serial() != first && serial() != "" })
	rec, err := s.Store.GetAgent(ctx, a.ID())
	if err != nil {
		t.Fatal(err)
	}
	if rec.CertSerial == "" || rec.CertSerial == first {
		t.Fatalf("server records certificate %q, want the renewed one (first was %s)", rec.CertSerial, first)
	}
	// And the renewed agent still works.
	s.Job(t, "after-renewal", "10.1.0.0/24", "10.1.0.9", domain.KindProvision)
	waitFor(t, "job done after renewal", func() bool {
		b, err := s.Store.GetBatch(ctx, "after-renewal")
		return err == nil && b.Succeeded == 1
	})
}

// runAgent enrols an agent for subnets with a fake executor and runs it
// until the test ends.
func runAgent(t *testing.T, s *apitest.Server, subnets ...string) (*agent.Agent, config.Agent) {
	t.Helper()
	cfg := agentConfig(t, s)
	cfg.LongPoll = 200 * time.Millisecond
	a, err := agent.New(cfg, zerolog.Nop(), agent.WithExecutor(&fakeExecutor{ran: map[string]int{}}),
		agent.WithBootstrapToken(s.Token(t, subnets...)), agent.WithBackoff(10*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	runUntilEnd(t, a)
	return a, cfg
}

// agentConfig is the default agent configuration for s, with the server's
// CA and a private state directory.
func agentConfig(t *testing.T, s *apitest.Server) config.Agent {
	t.Helper()
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, s.CA.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.DefaultAgent()
	cfg.Server, cfg.ServerCAFile, cfg.StateDir = s.Addr, caFile, filepath.Join(dir, "state")
	cfg.Hello.Listen = "" // tests that want the provisioning port bind loopback
	return cfg
}

// runUntilEnd runs a until the test ends and checks that it stopped
// cleanly.
func runUntilEnd(t *testing.T, a *agent.Agent) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
}

// An agent whose server_ca_file is some other CA, or whose server name
// the certificate does not carry, stops enrolling at once and says what
// to fix, instead of retrying forever.
func TestEnrollNamesTheTrustProblem(t *testing.T) {
	s := apitest.Start(t, apitest.Options{})
	other := apitest.Start(t, apitest.Options{})
	cases := []struct {
		name       string
		ca         []byte
		serverName string
		want       string
	}{
		{"another site's CA", other.CA.CertPEM(), "", "not signed by the CA in server_ca_file"},
		{"name not in the certificate", s.CA.CertPEM(), "elsewhere.example.test", `does not name "elsewhere.example.test": set server_name`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			caFile := filepath.Join(dir, "ca.pem")
			if err := os.WriteFile(caFile, c.ca, 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := config.DefaultAgent()
			cfg.Server, cfg.ServerCAFile, cfg.ServerName, cfg.StateDir = s.Addr, caFile, c.serverName, filepath.Join(dir, "state")
			cfg.Hello.Listen = ""
			a, err := agent.New(cfg, zerolog.Nop(), agent.WithBootstrapToken(s.Token(t, "10.9.0.0/24")),
				agent.WithBackoff(10*time.Millisecond, 50*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err = a.Run(ctx)
			if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Run = %v (ctx %v), want an error saying %q", err, ctx.Err(), c.want)
			}
		})
	}
}
