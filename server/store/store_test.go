package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/secrets"
)

func device(id, host string, ip string, st domain.Status) domain.Device {
	d := domain.Device{ID: id, HostName: host, Domain: "amt.test", Status: st}
	if ip != "" {
		d.IP = netip.MustParseAddr(ip)
		d.Subnet = netip.PrefixFrom(d.IP, 24).Masked()
	}
	return d
}

// checkIndexes proves that every index holds exactly what the device
// records say: no stale entry after updates and deletes, none missing.
func checkIndexes(t *testing.T, e *env) {
	t.Helper()
	ctx := e.ctx
	want := make(map[string][]string) // index key → sorted IDs
	fqdns := make(map[string]string)
	page, err := e.s.ListDevices(ctx, domain.DeviceFilter{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range page.Devices {
		for _, k := range e.s.indexKeys(&d) {
			want[k] = append(want[k], d.ID)
		}
		if f := fqdnOf(&d); f != "" {
			fqdns[f] = d.ID
		}
	}
	keys, err := e.rdb.Keys(ctx, e.s.key("{dev}", "ix", "*")).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k == e.s.devFQDNKey() {
			continue
		}
		got, _ := e.rdb.ZRange(ctx, k, 0, -1).Result()
		slices.Sort(want[k])
		if !slices.Equal(got, want[k]) {
			t.Errorf("index %s = %v, want %v", k, got, want[k])
		}
		delete(want, k)
	}
	for k, ids := range want {
		t.Errorf("index %s missing, want %v", k, ids)
	}
	got, _ := e.rdb.HGetAll(ctx, e.s.devFQDNKey()).Result()
	if fmt.Sprint(got) != fmt.Sprint(fqdns) {
		t.Errorf("fqdn index %v, want %v", got, fqdns)
	}
}

func TestDevices(t *testing.T) {
	backends(t, QueueOptions{}, func(t *testing.T, e *env) {
		ctx := e.ctx
		s := e.s
		for _, d := range []domain.Device{
			device("d1", "pc01", "10.1.2.11", domain.StatusNotProvisioned),
			device("d2", "pc02", "10.1.2.12", domain.StatusProvisioned),
			device("d3", "pc03", "10.1.3.13", domain.StatusNotProvisioned),
			device("d4", "", "", domain.StatusUnknown),
		} {
			if err := s.PutDevice(ctx, d); err != nil {
				t.Fatalf("put %s: %v", d.ID, err)
			}
		}
		checkIndexes(t, e)

		t.Run("get round trip and not found", func(t *testing.T) {
			d, err := s.GetDevice(ctx, "d1")
			if err != nil || d.FQDN() != "pc01.amt.test" || d.IP != netip.MustParseAddr("10.1.2.11") || !d.UpdatedAt.Equal(e.clock.Now()) {
				t.Fatalf("get d1: %+v %v", d, err)
			}
			if _, err := s.GetDevice(ctx, "nope"); !errors.Is(err, domain.ErrNotFound) {
				t.Fatalf("get missing: %v", err)
			}
		})
		t.Run("invalid device names the field", func(t *testing.T) {
			bad := device("d9", "bad_name", "", domain.StatusUnknown)
			var fe *domain.FieldError
			if err := s.PutDevice(ctx, bad); !errors.As(err, &fe) || fe.Field != "device.host_name" {
				t.Fatalf("put invalid: %v", err)
			}
		})
		t.Run("fqdn is unique and the conflict names the owner", func(t *testing.T) {
			dup := device("d5", "PC01", "10.1.2.50", domain.StatusUnknown)
			err := s.PutDevice(ctx, dup)
			if !errors.Is(err, domain.ErrConflict) || !strings.Contains(err.Error(), "d1") {
				t.Fatalf("duplicate fqdn: %v", err)
			}
			_, err = s.UpdateDevice(ctx, "d2", func(d *domain.Device) error { d.HostName = "pc01"; return nil })
			if !errors.Is(err, domain.ErrConflict) {
				t.Fatalf("rename onto another's fqdn: %v", err)
			}
			if got, err := s.DeviceByFQDN(ctx, "PC01.AMT.TEST"); err != nil || got.ID != "d1" {
				t.Fatalf("by fqdn: %v %v", got.ID, err)
			}
		})
		t.Run("update moves every index", func(t *testing.T) {
			_, err := s.UpdateDevice(ctx, "d1", func(d *domain.Device) error {
				d.HostName, d.Status = "pc01new", domain.StatusProvisioned
				d.IP, d.Subnet = netip.MustParseAddr("10.1.3.11"), netip.MustParsePrefix("10.1.3.0/24")
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			checkIndexes(t, e)
			if _, err := s.DeviceByFQDN(ctx, "pc01.amt.test"); !errors.Is(err, domain.ErrNotFound) {
				t.Fatalf("old fqdn still found: %v", err)
			}
			if ds, _ := s.DevicesByIP(ctx, netip.MustParseAddr("10.1.3.11")); len(ds) != 1 || ds[0].ID != "d1" {
				t.Fatalf("by ip: %+v", ds)
			}
			_, err = s.UpdateDevice(ctx, "d1", func(d *domain.Device) error { d.ID = "other"; return nil })
			var fe *domain.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("changing the id: %v", err)
			}
		})
		t.Run("concurrent updates all apply", func(t *testing.T) {
			var wg sync.WaitGroup
			for i := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, err := s.UpdateDevice(ctx, "d4", func(d *domain.Device) error {
						d.Warnings = append(d.Warnings, fmt.Sprintf("w%02d", i))
						return nil
					})
					if err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			d, _ := s.GetDevice(ctx, "d4")
			if len(d.Warnings) != 16 {
				t.Fatalf("%d warnings after 16 concurrent updates: lost updates", len(d.Warnings))
			}
		})
		t.Run("list filters and pages", func(t *testing.T) {
			p, err := s.ListDevices(ctx, domain.DeviceFilter{Subnet: netip.MustParsePrefix("10.1.3.0/24"), Status: domain.StatusNotProvisioned})
			if err != nil || len(p.Devices) != 1 || p.Devices[0].ID != "d3" {
				t.Fatalf("filter: %+v %v", p, err)
			}
			var ids []string
			cursor := ""
			for range 10 {
				p, err := s.ListDevices(ctx, domain.DeviceFilter{Limit: 3, Cursor: cursor})
				if err != nil {
					t.Fatal(err)
				}
				for _, d := range p.Devices {
					ids = append(ids, d.ID)
				}
				if cursor = p.Next; cursor == "" {
					break
				}
			}
			if !slices.Equal(ids, []string{"d1", "d2", "d3", "d4"}) {
				t.Fatalf("paged ids %v", ids)
			}
			n, err := s.CountDevices(ctx)
			if err != nil || n[domain.StatusProvisioned] != 2 || n[domain.StatusNotProvisioned] != 1 || n[""] != 4 {
				t.Fatalf("counts %v %v", n, err)
			}
		})
		t.Run("delete drops every index entry", func(t *testing.T) {
			if err := s.DeleteDevice(ctx, "d1"); err != nil {
				t.Fatal(err)
			}
			if err := s.DeleteDevice(ctx, "d1"); !errors.Is(err, domain.ErrNotFound) {
				t.Fatalf("second delete: %v", err)
			}
			checkIndexes(t, e)
			// The freed FQDN can be taken by another device.
			if err := s.PutDevice(ctx, device("d6", "pc01new", "10.1.3.66", domain.StatusUnknown)); err != nil {
				t.Fatal(err)
			}
			checkIndexes(t, e)
		})
	})
}

func TestCollections(t *testing.T) {
	backends(t, QueueOptions{}, func(t *testing.T, e *env) {
		ctx, s := e.ctx, e.s
		for i := range 5 {
			if err := s.PutDevice(ctx, device(fmt.Sprintf("d%d", i), fmt.Sprintf("pc%d", i), "", domain.StatusNotProvisioned)); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.AddMembers(ctx, "lab", "d1"); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("add to a missing collection: %v", err)
		}
		if err := s.PutCollection(ctx, domain.Collection{Name: "bad name"}); err == nil {
			t.Fatal("invalid collection name accepted")
		}
		if err := s.PutCollection(ctx, domain.Collection{Name: "lab", AutoProvision: true}); err != nil {
			t.Fatal(err)
		}
		if err := s.AddMembers(ctx, "lab", "d1", "d2", "d3", "d1"); err != nil {
			t.Fatal(err)
		}
		if err := s.AddMembers(ctx, "lab", "missing"); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("add a missing device: %v", err)
		}
		if err := s.RemoveMembers(ctx, "lab", "d2"); err != nil {
			t.Fatal(err)
		}
		p, err := s.Members(ctx, "lab", 0, "")
		if err != nil || len(p.Devices) != 2 || p.Devices[0].ID != "d1" || p.Devices[1].ID != "d3" {
			t.Fatalf("members %+v %v", p, err)
		}
		d1, _ := s.GetDevice(ctx, "d1")
		if !slices.Equal(d1.Collections, []string{"lab"}) {
			t.Fatalf("d1 collections %v", d1.Collections)
		}
		checkIndexes(t, e)
		cs, err := s.ListCollections(ctx)
		if err != nil || len(cs) != 1 || !cs[0].AutoProvision || cs[0].CreatedAt.IsZero() {
			t.Fatalf("list %+v %v", cs, err)
		}
		t.Run("rules add matching devices", func(t *testing.T) {
			for i, ip := range []string{"10.1.2.3", "10.1.9.9", "10.2.0.1"} {
				d := device(fmt.Sprintf("r%d", i), fmt.Sprintf("LAB-PC%d", i), ip, domain.StatusNotProvisioned)
				if err := s.PutDevice(ctx, d); err != nil {
					t.Fatal(err)
				}
			}
			bad := domain.Collection{Name: "empty", Rules: []domain.CollectionRule{{}}}
			if err := s.PutCollection(ctx, bad); err == nil || !strings.Contains(err.Error(), "rule") {
				t.Fatalf("empty rule accepted: %v", err)
			}
			c := domain.Collection{Name: "wing", Rules: []domain.CollectionRule{
				{Subnet: netip.MustParsePrefix("10.1.0.0/16"), NamePattern: "lab-pc[01]"}, {NamePattern: "pc4"}}}
			if err := s.PutCollection(ctx, c); err != nil {
				t.Fatal(err)
			}
			for _, want := range []int{3, 0} { // r0, r1, d4; then nothing new
				n, err := s.ApplyCollectionRules(ctx, "wing")
				if err != nil || n != want {
					t.Fatalf("apply: added %d, %v; want %d", n, err, want)
				}
			}
			p, _ := s.Members(ctx, "wing", 0, "")
			var ids []string
			for _, d := range p.Devices {
				ids = append(ids, d.ID)
			}
			if !slices.Equal(ids, []string{"d4", "r0", "r1"}) {
				t.Fatalf("members %v", ids)
			}
			if err := s.DeleteCollection(ctx, "wing"); err != nil {
				t.Fatal(err)
			}
		})
		if err := s.DeleteCollection(ctx, "lab"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetCollection(ctx, "lab"); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("get deleted: %v", err)
		}
		d1, _ = s.GetDevice(ctx, "d1")
		if len(d1.Collections) != 0 {
			t.Fatalf("d1 still in %v", d1.Collections)
		}
		checkIndexes(t, e)
	})
}

func TestCertificates(t *testing.T) {
	backends(t, QueueOptions{}, func(t *testing.T, e *env) {
		ctx, s := e.ctx, e.s
		t0 := e.clock.Now()
		recs := []domain.CertificateRecord{
			{Serial: "100", DeviceID: "d1", Purpose: domain.PurposeServerAuth, Status: domain.CertInstalled, NotBefore: t0},
			{Serial: "101", DeviceID: "d1", Purpose: domain.Purpose8021X, Status: domain.CertIssued, NotBefore: t0.Add(time.Hour)},
			{Serial: "200", DeviceID: "d2", Purpose: domain.PurposeServerAuth, Status: domain.CertIssued, NotBefore: t0},
		}
		for _, r := range recs {
			if err := s.PutCertificate(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.PutCertificate(ctx, domain.CertificateRecord{DeviceID: "d1"}); err == nil {
			t.Fatal("record without serial accepted")
		}
		got, err := s.CertificatesByDevice(ctx, "d1")
		if err != nil || len(got) != 2 || got[0].Serial != "100" || got[1].Serial != "101" {
			t.Fatalf("by device %+v %v", got, err)
		}
		r, err := s.UpdateCertificateStatus(ctx, "100", domain.CertRevoked, domain.ReasonSuperseded, time.Time{})
		if err != nil || r.Status != domain.CertRevoked || r.Reason != domain.ReasonSuperseded || !r.RevokedAt.Equal(t0) {
			t.Fatalf("revoke %+v %v", r, err)
		}
		r, err = s.CertificateBySerial(ctx, "100")
		if err != nil || r.Status != domain.CertRevoked {
			t.Fatalf("by serial after revoke %+v %v", r, err)
		}
		if _, err := s.UpdateCertificateStatus(ctx, "999", domain.CertRevoked, 0, time.Time{}); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("update missing: %v", err)
		}
		// Moving a record to another device moves its index entry.
		recs[2].DeviceID = "d3"
		if err := s.PutCertificate(ctx, recs[2]); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.CertificatesByDevice(ctx, "d2"); len(got) != 0 {
			t.Fatalf("d2 still has %+v", got)
		}
	})
}

func batchWithJobs(id string, n int) (domain.Batch, []domain.Job) {
	b := domain.Batch{ID: id, Kind: domain.KindProvision, Origin: "admin"}
	jobs := make([]domain.Job, n)
	for i := range jobs {
		dev := fmt.Sprintf("dev%03d", i)
		jobs[i] = domain.Job{ID: domain.JobID(id, dev), DeviceID: dev}
	}
	return b, jobs
}

func TestBatches(t *testing.T) {
	backends(t, QueueOptions{}, func(t *testing.T, e *env) {
		ctx, s := e.ctx, e.s
		b, jobs := batchWithJobs("b1", 40)
		created, err := s.CreateBatch(ctx, b, jobs)
		if err != nil || !created {
			t.Fatalf("create: %v %v", created, err)
		}
		created, err = s.CreateBatch(ctx, b, jobs[:3])
		if err != nil || created {
			t.Fatalf("repeat create: %v %v", created, err)
		}
		got, err := s.GetBatch(ctx, "b1")
		if err != nil || got.Total != 40 || got.Pending() != 40 || got.Origin != "admin" {
			t.Fatalf("get batch %+v %v", got, err)
		}
		if _, err := s.CreateBatch(ctx, domain.Batch{ID: "b2", Kind: "nope"}, nil); err == nil {
			t.Fatal("unknown kind accepted")
		}

		t.Run("move follows the state machine", func(t *testing.T) {
			id := jobs[0].ID
			if err := s.MoveJob(ctx, "b1", id, domain.JobPhase1); err != nil {
				t.Fatal(err)
			}
			if err := s.MoveJob(ctx, "b1", id, domain.JobPhase2); err != nil {
				t.Fatal(err)
			}
			if err := s.MoveJob(ctx, "b1", id, domain.JobPhase1); !errors.Is(err, domain.ErrConflict) {
				t.Fatalf("phase2 → phase1: %v", err)
			}
			if err := s.MoveJob(ctx, "b1", id, domain.JobSucceeded); err == nil {
				t.Fatal("MoveJob accepted a final state")
			}
			j, err := s.GetJob(ctx, "b1", id)
			if err != nil || j.State != domain.JobPhase2 || j.Attempts != 1 || j.DeviceID != "dev000" {
				t.Fatalf("job %+v %v", j, err)
			}
		})
		t.Run("concurrent duplicate finishes count once", func(t *testing.T) {
			var wg sync.WaitGroup
			var mu sync.Mutex
			wins := make(map[string]int)
			for i := range 20 {
				for range 8 { // 8 duplicate reports per job
					wg.Add(1)
					go func() {
						defer wg.Done()
						state := domain.JobSucceeded
						if i%4 == 0 {
							state = domain.JobFailed
						}
						ok, err := s.FinishJob(ctx, "b1", jobs[i].ID, state, "step", "msg")
						if err != nil {
							t.Error(err)
						}
						if ok {
							mu.Lock()
							wins[jobs[i].ID]++
							mu.Unlock()
						}
					}()
				}
			}
			wg.Wait()
			for i := range 20 {
				if wins[jobs[i].ID] != 1 {
					t.Errorf("job %s finished %d times", jobs[i].ID, wins[jobs[i].ID])
				}
			}
			got, _ := s.GetBatch(ctx, "b1")
			if got.Succeeded != 15 || got.Failed != 5 {
				t.Fatalf("counters %+v, want 15 succeeded 5 failed", got)
			}
			if _, err := s.FinishJob(ctx, "b1", "nope", domain.JobFailed, "", ""); !errors.Is(err, domain.ErrNotFound) {
				t.Fatalf("finish missing job: %v", err)
			}
		})
		t.Run("cancel cancels only queued jobs", func(t *testing.T) {
			if err := s.MoveJob(ctx, "b1", jobs[30].ID, domain.JobPhase1); err != nil {
				t.Fatal(err)
			}
			n, err := s.CancelBatch(ctx, "b1")
			if err != nil || n != 19 { // 40 - 20 finished - 1 running
				t.Fatalf("cancelled %d, %v; want 19", n, err)
			}
			if n, _ := s.CancelBatch(ctx, "b1"); n != 0 {
				t.Fatalf("second cancel cancelled %d", n)
			}
			got, _ := s.GetBatch(ctx, "b1")
			if !got.CancelRequested || got.Cancelled != 19 || got.Pending() != 1 {
				t.Fatalf("after cancel %+v", got)
			}
			p, err := s.ListJobs(ctx, "b1", domain.JobFilter{State: domain.JobCancelled, Limit: 7})
			if err != nil || len(p.Jobs) != 7 || p.Next == "" {
				t.Fatalf("list cancelled page 1: %d %q %v", len(p.Jobs), p.Next, err)
			}
			total := len(p.Jobs)
			for p.Next != "" {
				if p, err = s.ListJobs(ctx, "b1", domain.JobFilter{State: domain.JobCancelled, Limit: 7, Cursor: p.Next}); err != nil {
					t.Fatal(err)
				}
				total += len(p.Jobs)
			}
			if total != 19 {
				t.Fatalf("listed %d cancelled jobs, want 19", total)
			}
			if _, err := s.CancelBatch(ctx, "nope"); !errors.Is(err, domain.ErrNotFound) {
				t.Fatalf("cancel missing batch: %v", err)
			}
		})
	})
}

func TestOperationsLog(t *testing.T) {
	backends(t, QueueOptions{}, func(t *testing.T, e *env) {
		ctx, s := e.ctx, e.s // OplogCap is 50 in tests
		for i := range 300 {
			err := s.AppendEvent(ctx, domain.OperationEvent{DeviceID: "d1", Phase: 2, Step: fmt.Sprintf("step-%03d", i), Outcome: domain.OutcomeOK})
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := s.AppendEvent(ctx, domain.OperationEvent{Step: "x"}); err == nil {
			t.Fatal("event without device accepted")
		}
		last, err := s.Events(ctx, "d1", 3)
		if err != nil || len(last) != 3 || last[0].Step != "step-297" || last[2].Step != "step-299" || last[2].Time.IsZero() {
			t.Fatalf("last 3: %+v %v", last, err)
		}
		all, _ := s.Events(ctx, "d1", 0)
		if len(all) < 50 || len(all) > 250 {
			t.Fatalf("%d events kept, want about 50 (approximate trim)", len(all))
		}
		if other, _ := s.Events(ctx, "d2", 10); len(other) != 0 {
			t.Fatalf("d2 has %d events", len(other))
		}
		// A batch is written in order, and one bad event writes none.
		batch := []domain.OperationEvent{{DeviceID: "d3", Step: "a"}, {DeviceID: "d3", Step: "b"}, {DeviceID: "d3", Step: "c"}}
		if err := s.AppendEvents(ctx, append(slices.Clone(batch), domain.OperationEvent{Step: "no device"})); err == nil {
			t.Fatal("batch with an event without device accepted")
		}
		if got, _ := s.Events(ctx, "d3", 0); len(got) != 0 {
			t.Fatalf("a refused batch wrote %d events", len(got))
		}
		if err := s.AppendEvents(ctx, batch); err != nil {
			t.Fatal(err)
		}
		got, err := s.Events(ctx, "d3", 0)
		if err != nil || len(got) != 3 || got[0].Step != "a" || got[1].Step != "b" || got[2].Step != "c" || got[1].Time.IsZero() {
			t.Fatalf("batch: %+v %v; want a, b, c with times", got, err)
		}
	})
}

func TestAgentsAndEnrollment(t *testing.T) {
	backends(t, QueueOptions{}, func(t *testing.T, e *env) {
		ctx, s := e.ctx, e.s
		a := domain.Agent{ID: "agent-1", Subnets: []netip.Prefix{netip.MustParsePrefix("10.1.2.7/24")}}
		if err := s.PutAgent(ctx, a); err != nil {
			t.Fatal(err)
		}
		at := e.clock.Now().Add(time.Minute)
		if err := s.Heartbeat(ctx, "agent-1", at); err != nil {
			t.Fatal(err)
		}
		if err := s.Heartbeat(ctx, "ghost", at); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("heartbeat of unknown agent: %v", err)
		}
		got, err := s.GetAgent(ctx, "agent-1")
		if err != nil || !got.LastHeartbeat.Equal(at) || !got.Authorized(netA) {
			t.Fatalf("agent %+v %v", got, err)
		}
		if l, _ := s.ListAgents(ctx); len(l) != 1 {
			t.Fatalf("list %+v", l)
		}

		grant := domain.Enrollment{AgentID: "agent-2", Subnets: []netip.Prefix{netA}}
		tok, err := s.CreateEnrollmentToken(ctx, grant, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				g, err := s.ConsumeEnrollmentToken(ctx, tok)
				switch {
				case err == nil && g.AgentID == "agent-2":
					mu.Lock()
					wins++
					mu.Unlock()
				case !errors.Is(err, domain.ErrUnauthorized):
					t.Errorf("consume: %v", err)
				}
			}()
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("token redeemed %d times, want once", wins)
		}
		expiring, _ := s.CreateEnrollmentToken(ctx, grant, time.Hour)
		e.clock.Add(2 * time.Hour)
		if _, err := s.ConsumeEnrollmentToken(ctx, expiring); !errors.Is(err, domain.ErrUnauthorized) {
			t.Fatalf("expired token: %v", err)
		}
		dump := dumpAll(t, ctx, e.rdb)
		assertAbsent(t, dump, []byte(tok))
	})
}

func TestSecretsAndPayloadsNeverStoredInPlain(t *testing.T) {
	backends(t, QueueOptions{}, func(t *testing.T, e *env) {
		ctx, s := e.ctx, e.s
		secret := []byte("admin-P@ssw0rd-4b1e")
		payload := []byte("phase2-payload-with-kerberos-key-9f3c")
		if err := s.PutSecret(ctx, "device/d1/admin", secret); err != nil {
			t.Fatal(err)
		}
		if created, err := s.CreateSecret(ctx, "device/d1/admin", []byte("other")); err != nil || created {
			t.Fatalf("create over existing: %v %v", created, err)
		}
		got, err := s.GetSecret(ctx, "device/d1/admin")
		if err != nil || string(got) != string(secret) {
			t.Fatalf("round trip %q %v", got, err)
		}
		if _, err := s.GetSecret(ctx, "missing"); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("missing secret: %v", err)
		}
		if _, err := e.q.Enqueue(ctx, netA, "j1", payload); err != nil {
			t.Fatal(err)
		}
		if _, err := e.q.Enqueue(ctx, netA, "j2", payload); err != nil {
			t.Fatal(err)
		}
		l, err := e.q.Lease(ctx, "a", []netip.Prefix{netA}, 1, time.Minute)
		if err != nil || len(l) != 1 || string(l[0].Payload) != string(payload) {
			t.Fatalf("lease %+v %v", l, err)
		}
		dump := dumpAll(t, ctx, e.rdb)
		if len(dump) < 4 {
			t.Fatalf("dump saw only %d keys", len(dump))
		}
		assertAbsent(t, dump, secret)
		assertAbsent(t, dump, payload)

		// A sealed blob copied under another name does not open: the key
		// is the associated data.
		blob, _ := e.rdb.Get(ctx, s.secretKey("device/d1/admin")).Bytes()
		e.rdb.Set(ctx, s.secretKey("device/d2/admin"), blob, 0)
		if _, err := s.GetSecret(ctx, "device/d2/admin"); err == nil {
			t.Fatal("blob opened under another key")
		}
		if err := s.DeleteSecret(ctx, "device/d1/admin"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetSecret(ctx, "device/d1/admin"); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("after delete: %v", err)
		}
	})
}

func TestEmbedded(t *testing.T) {
	ctx := context.Background()
	rdb, closeFn, err := Embedded(ctx, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeFn)
	sealer, _ := secrets.New(make([]byte, 32))
	q := NewLeaseQueue(New(rdb, sealer, Options{}), QueueOptions{})
	if _, err := q.Enqueue(ctx, netA, "j1", []byte("p")); err != nil {
		t.Fatal(err)
	}
	l, err := q.Lease(ctx, "a", []netip.Prefix{netA}, 1, time.Minute)
	if err != nil || len(l) != 1 {
		t.Fatalf("lease %+v %v", l, err)
	}
	if err := q.Complete(ctx, netA, "j1", l[0].Token); err != nil {
		t.Fatal(err)
	}
	closeFn()
	closeFn() // safe twice
}
