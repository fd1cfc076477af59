package phase2_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/amtops/amtops/agent/phase2"
	amtopsv1 "github.com/amtops/amtops/proto/amtops/v1"
)

// A site that cannot sign right now (restarting, overloaded) must not fail
// a key_on_device job for good: the next attempt signs. A refusal stands.
func TestSignCSRFailureClassified(t *testing.T) {
	cases := []struct {
		name      string
		err       error
		permanent bool
	}{
		{"server unavailable", status.Error(codes.Unavailable, "connection refused"), false},
		{"server deadline", status.Error(codes.DeadlineExceeded, "deadline exceeded"), false},
		{"server overloaded", status.Error(codes.ResourceExhausted, "too many requests"), false},
		{"server aborted", status.Error(codes.Aborted, "conflict"), false},
		{"local deadline", fmt.Errorf("call: %w", context.DeadlineExceeded), false},
		{"refused by the site", status.Error(codes.PermissionDenied, "not your lease"), true},
		{"bad request", status.Error(codes.InvalidArgument, "csr_der: not a CSR"), true},
	}
	sim := startSim(t, len(cases), nil)
	c := newCA(t)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			job := provisionJob(t, c, sim.Addrs()[i], fmt.Sprintf("sign%d", i))
			job.Tls = &amtopsv1.TLSMaterial{KeyOnDevice: true, ChainDer: job.Tls.ChainDer}
			ex := phase2.NewExecutor(phase2.Config{
				HTTPPort: sim.HTTPPort(), TLSPort: sim.TLSPort(), CallTimeout: 5 * time.Second,
				CommitWait: 40 * time.Millisecond, CommitDeadline: 5 * time.Second, PollInterval: 20 * time.Millisecond,
				Log: zerolog.Nop(),
				SignCSR: func(context.Context, []byte) ([]byte, [][]byte, string, error) {
					// As the agent wraps it.
					return nil, nil, "", fmt.Errorf("agent: sign device csr: %w", tc.err)
				},
			})
			res := ex.Run(context.Background(), job, nil)
			if res.Err == nil || res.ErrorStep != phase2.StepInstallKey {
				t.Fatalf("err %v at step %q, want a failure at %s", res.Err, res.ErrorStep, phase2.StepInstallKey)
			}
			if res.Permanent != tc.permanent {
				t.Errorf("permanent %t, want %t (%v)", res.Permanent, tc.permanent, res.Err)
			}
		})
	}
}

// The commit deadline is measured on the injected clock, like the device
// time: a clock that runs an hour ahead per call gives up on a TLS port
// that never answers after a few probes, long before the test's 10 s.
func TestCommitDeadlineUsesInjectedClock(t *testing.T) {
	sim := startSim(t, 1, nil)
	c := newCA(t)
	job := provisionJob(t, c, sim.Addrs()[0], "clock")
	var mu sync.Mutex
	fake := time.Now()
	var d net.Dialer
	tlsPort := fmt.Sprint(sim.TLSPort())
	ex := phase2.NewExecutor(phase2.Config{
		HTTPPort: sim.HTTPPort(), TLSPort: sim.TLSPort(), CallTimeout: 5 * time.Second,
		CommitWait: 10 * time.Millisecond, CommitDeadline: time.Hour, PollInterval: 20 * time.Millisecond,
		Log: zerolog.Nop(),
		Now: func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			fake = fake.Add(20 * time.Minute)
			return fake
		},
		// The TLS port never answers.
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if strings.HasSuffix(addr, ":"+tlsPort) {
				return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("connection refused")}
			}
			return d.DialContext(ctx, network, addr)
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := ex.Run(ctx, job, nil)
	if res.ErrorStep != phase2.StepVerifyTLS || res.Err == nil || !strings.Contains(res.Err.Error(), "within 1h0m0s") {
		t.Fatalf("step %q err %v, want verify-tls giving up within the commit deadline", res.ErrorStep, res.Err)
	}
	if res.Permanent {
		t.Errorf("a TLS port not answering in time is permanent: %v", res.Err)
	}
}

// A re-run on a device that already serves our leaf reports the TLS stage
// as already done, step by step in the stage's order, sets the clock and
// still runs the settings stage.
func TestRerunSkipsDoneTLSStage(t *testing.T) {
	sim := startSim(t, 1, nil)
	c := newCA(t)
	job := provisionJob(t, c, sim.Addrs()[0], "rerun")
	mustRun(t, newExecutor(sim), job)
	job.Attempt = 2 // the new password's turn
	rec := &recorder{}
	if res := newExecutor(sim).Run(context.Background(), job, rec); res.Err != nil {
		t.Fatalf("re-run: step %s: %v", res.ErrorStep, res.Err)
	}
	var got []string
	for _, e := range rec.events {
		if !strings.Contains(e, " started") {
			got = append(got, strings.SplitN(e, " ", 3)[0]+" "+strings.SplitN(e, " ", 3)[1])
		}
	}
	want := []string{"connect ok", "identity ok",
		"install-root skipped", "install-key skipped", "install-cert skipped", "set-fqdn skipped", "sync-clock ok",
		"enable-tls skipped", "commit skipped", "verify-tls skipped", "reconnect skipped", "delete-replaced skipped",
		"redirection ok", "ping ok", "web-ui ok", "power ok", "admin-password skipped", "remove-users ok",
		"kerberos ok", "kerberos-acl ok", "network-profiles skipped", "commit ok", "verify-tls ok", "verify-settings ok",
		"detect-link ok", "control-mode ok"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("re-run events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
