package fleet

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/testpeers"
)

// TestSmallFleet runs the bench harness on a small fleet of factory
// devices, keys made on the device, with short timings, and checks
// correctness only: every device is provisioned through its Hello, one
// job each, none failed, each simulated device activated once, and the
// processes were measured. Never a time.
func TestSmallFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole site as processes")
	}
	const devices = 200
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	f, err := Start(ctx, Config{Devices: devices, Agents: 2, KeyOnDevice: true, Dir: t.TempDir(),
		TLSRestart: time.Second, CommitDelay: 300 * time.Millisecond,
		Server: func(c *config.Server) { c.Phase2.RetryDelay = 2 * time.Second; c.Phase2.ReapEvery = time.Second },
		Agent:  func(_ int, c *config.Agent) { c.AMT.CommitWait = 200 * time.Millisecond },
	})
	if errors.Is(err, ErrNoRedis) {
		testpeers.Missing(t, "redis-server", "apt-get install redis-server")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range f.Procs() {
				t.Logf("%s log tail:\n%s", p.Name, p.LogTail(3000))
			}
		}
		if err := f.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	r, err := f.Watch(ctx, 6*time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.TimedOut || r.Provisioned != devices || r.Failed != 0 {
		t.Fatalf("%d provisioned, %d failed of %d (timed out: %v); failures: %+v", r.Provisioned, r.Failed, devices, r.TimedOut, r.Failures)
	}
	// A repeated Hello's job for a device another job already holds is
	// cancelled, not failed (batch.Service), so only those may be extra.
	if r.JobsSucceeded != devices || r.JobsFailed != 0 {
		t.Errorf("jobs: %d succeeded, %d failed, %d cancelled; want exactly %d succeeded and none failed", r.JobsSucceeded, r.JobsFailed, r.JobsCancelled, devices)
	}
	checkDevices(t, f, devices)
	checkMeasured(t, r)
	tm, err := f.ReadTimings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(tm.Device) != devices || tm.InFlight < 1 || tm.InFlightPhase2 < 1 {
		t.Errorf("timings of %d devices (want %d), in flight %d, phase 2 %d", len(tm.Device), devices, tm.InFlight, tm.InFlightPhase2)
	}
}

// checkDevices asks the simulators: every device activated in admin
// control mode, no provisioning handshake refused.
func checkDevices(t *testing.T, f *Fleet, devices int) {
	t.Helper()
	states, err := f.SimDevices(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != devices {
		t.Fatalf("simulators report %d devices, want %d", len(states), devices)
	}
	for _, d := range states {
		if d.ProvisioningState != 2 || d.ControlMode != 2 || d.ProvisioningSessions < 1 || d.ProvisioningRefusals != 0 {
			t.Errorf("device %s: state %d, control mode %d, %d provisioning sessions, %d refusals; want activated in ACM through provisioning sessions, none refused",
				d.Addr, d.ProvisioningState, d.ControlMode, d.ProvisioningSessions, d.ProvisioningRefusals)
		}
	}
}

// checkMeasured: every kind of process and Redis were measured.
func checkMeasured(t *testing.T, r Report) {
	t.Helper()
	for _, k := range []string{KindServer, KindAgent, KindRedis, KindSimulator} {
		if r.CPU[k] <= 0 || r.PeakRSS[k] <= 0 {
			t.Errorf("%s: CPU %v, peak RSS %d: not measured", k, r.CPU[k], r.PeakRSS[k])
		}
	}
	if r.Redis.Calls() == 0 {
		t.Error("no Redis commands counted")
	}
}

// TestSmallFleetCluster is TestSmallFleet's correctness on a real
// three-master Redis Cluster: the site's hash-tagged keys, its Lua
// scripts and asynq's queues all work across the masters, and the keys
// are spread over all three.
func TestSmallFleetCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole site as processes")
	}
	const devices = 60
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	f, err := Start(ctx, Config{Devices: devices, Agents: 2, KeyOnDevice: true, Cluster: true, Dir: t.TempDir(),
		Net:        netip.MustParsePrefix("127.25.0.0/16"),
		TLSRestart: time.Second, CommitDelay: 300 * time.Millisecond,
		Server: func(c *config.Server) { c.Phase2.RetryDelay = 2 * time.Second; c.Phase2.ReapEvery = time.Second },
		Agent:  func(_ int, c *config.Agent) { c.AMT.CommitWait = 200 * time.Millisecond },
	})
	if errors.Is(err, ErrNoRedis) {
		testpeers.Missing(t, "redis-server", "apt-get install redis-server redis-tools")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range f.Procs() {
				t.Logf("%s log tail:\n%s", p.Name, p.LogTail(3000))
			}
		}
		if err := f.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	r, err := f.Watch(ctx, 4*time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.TimedOut || r.Provisioned != devices || r.Failed != 0 || r.JobsSucceeded != devices || r.JobsFailed != 0 {
		t.Fatalf("%d provisioned, %d failed of %d (timed out: %v), jobs %d succeeded %d failed; failures: %+v",
			r.Provisioned, r.Failed, devices, r.TimedOut, r.JobsSucceeded, r.JobsFailed, r.Failures)
	}
	checkDevices(t, f, devices)
	keys, err := f.RedisKeysPerNode(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 {
		t.Fatalf("%d Redis nodes, want 3", len(keys))
	}
	for i, n := range keys {
		if n < devices/10 {
			t.Errorf("master %d holds %d keys (all: %v): the site's keys are not spread over the cluster", i, n, keys)
		}
	}
}
