package jobs

import (
	"context"
	"errors"
	"testing"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/pki"
)

// crashBeforePhase2 fails the first move of a job into phase 2, as a
// phase-1 run stopped (task deadline, lost asynq lease, crash) between
// queueing the phase-2 job and recording that it did.
type crashBeforePhase2 struct {
	Store
	done bool
}

func (c *crashBeforePhase2) MoveJob(ctx context.Context, batchID, jobID string, next domain.JobState) error {
	if next == domain.JobPhase2 && !c.done {
		c.done = true
		return errors.New("phase-1 run stopped")
	}
	return c.Store.MoveJob(ctx, batchID, jobID, next)
}

// TestPhase1RerunLeavesPhase2Alone is the key-on-device race of issue 15:
// a phase-1 task runs again (asynq redelivers a task whose lease expired
// or whose run stopped) after its phase-2 job was queued and an agent
// leased it. When that redundant run fails for good, recording the
// failure used to abandon the job under the agent's feet — its
// sign-on-device mark deleted, the job marked failed — and the agent's
// next SignDeviceCSR failed "not prepared for key_on_device". The run
// that is here made to fail does so because an administrator began a
// rename meanwhile; any final phase-1 failure did the same.
func TestPhase1RerunLeavesPhase2Alone(t *testing.T) {
	for _, tc := range []struct {
		name  string
		crash bool // the first run stopped between queueing and marking phase 2
	}{
		{name: "duplicate delivery after phase 2 was marked"},
		{name: "re-run after a stop between queueing and marking phase 2", crash: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil, Site{KeyOnDevice: true})
			ctx := context.Background()
			d := f.device(t, "pc-race")
			task := f.task(t, "b1", d, domain.KindProvision)
			real := f.prov.store
			if tc.crash {
				f.prov.store = &crashBeforePhase2{Store: real}
			}
			err := f.prov.Handle(ctx, task)
			f.prov.store = real
			if tc.crash == (err == nil) {
				t.Fatalf("first run: %v", err)
			}
			_, l := f.leaseOne(t) // an agent works the device

			if _, err := f.store.UpdateDevice(ctx, d.ID, func(d *domain.Device) error { d.RenamePending = true; return nil }); err != nil {
				t.Fatal(err)
			}
			// The worker's handling of the redelivered task (Worker.process).
			if err := f.prov.Handle(ctx, task); err != nil {
				if !domain.IsPermanent(err) {
					t.Fatalf("re-run: %v", err)
				}
				if err := f.prov.FailJob(ctx, task, err); err != nil {
					t.Fatal(err)
				}
			}
			j, err := f.store.GetJob(ctx, task.BatchID, task.JobID)
			if err != nil {
				t.Fatal(err)
			}
			if j.State != domain.JobPhase2 {
				t.Errorf("job %s after the re-run, want phase2: its phase 2 is under way", j.State)
			}
			csr := deviceCSR(t, d.FQDN())
			if _, err := f.prov.SignDeviceCSR(ctx, "agent-1", domain.LeaseRef{Subnet: l.Subnet, JobID: l.JobID, Token: l.Token}, csr); err != nil {
				t.Fatalf("the agent's SignDeviceCSR after the re-run: %v", err)
			}
		})
	}
}

// deviceCSR is the PKCS#10 request a device makes for a key it generated
// (key_on_device), for fqdn.
func deviceCSR(t *testing.T, fqdn string) []byte {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CSR(key, fqdn)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}
