package sweep_test

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/amtops/amtops/agent/phase2"
	"github.com/amtops/amtops/internal/amtsim"
	"github.com/amtops/amtops/internal/amtsim/amtsimtest"
	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/pki/builtin"
	"github.com/amtops/amtops/internal/pki/pkitest"
	"github.com/amtops/amtops/internal/secrets"
	"github.com/amtops/amtops/internal/testpeers"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/batch"
	"github.com/amtops/amtops/server/jobs"
	"github.com/amtops/amtops/server/store"
	"github.com/amtops/amtops/server/sweep"
)

const simPassword = "P@ssw0rd!"

// replica is one site-server replica's share of the sweep: its own Redis
// connections, asynq client, batch service and Sweeper, on a shared Redis.
type replica struct {
	rdb    *redis.Client
	st     *store.Store
	client *asynq.Client
	batch  *batch.Service
	sw     *sweep.Sweeper
}

func newReplica(t *testing.T, addr string, sealer *secrets.Sealer, interval time.Duration, now func() time.Time) *replica {
	t.Helper()
	r := &replica{rdb: redis.NewClient(&redis.Options{Addr: addr})}
	t.Cleanup(func() { r.rdb.Close() })
	r.st = store.New(r.rdb, sealer, store.Options{})
	r.client = asynq.NewClientFromRedisClient(r.rdb)
	r.batch = batch.New(r.st, jobs.NewEnqueuer(r.client, 2, time.Minute), zerolog.Nop())
	sw, err := sweep.New(r.st, r.batch, r.client, sweep.Config{Interval: interval, Now: now}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	r.sw = sw
	return r
}

func sealer(t *testing.T) *secrets.Sealer {
	t.Helper()
	s, err := secrets.New(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func startSim(t *testing.T, devices int) *amtsim.Sim {
	t.Helper()
	return amtsimtest.Start(t, amtsim.Config{Devices: devices, Kind: amtsim.KindMEBx, Password: simPassword, CommitDelay: 30 * time.Millisecond}, nil)
}

// startWorker runs the phase-1 worker of a replica with a real
// provisioner (built-in CA, no directory) and the sweep handler.
func startWorker(t *testing.T, r *replica, q *store.LeaseQueue) {
	t.Helper()
	ca, err := builtin.New(context.Background(), &pkitest.MemStorage{}, builtin.Config{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	site := jobs.Site{ProvisioningUser: "admin", ProvisioningPassword: simPassword,
		Settings: config.DefaultServer().AMT.Settings, JobDeadline: 10 * time.Minute,
		NewPassword: func() (string, error) { return "N3w-Strong!pw", nil }}
	prov := jobs.New(r.st, q, ca, nil, jobs.Config{Site: site, Actor: "test"}, zerolog.Nop())
	w := jobs.NewWorker(r.rdb, jobs.WorkerConfig{Concurrency: 4, ShutdownTimeout: time.Second,
		Extra: map[string]asynq.Handler{sweep.TaskType: asynq.HandlerFunc(r.sw.Handle)}}, prov, prov, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
}

// waitFor polls cond until it holds or a generous bound passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func sweepBatches(t *testing.T, st *store.Store) []domain.Batch {
	t.Helper()
	ids, err := st.ListBatches(context.Background(), 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []domain.Batch
	for _, id := range ids {
		b, err := st.GetBatch(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if b.Origin == sweep.Origin {
			out = append(out, b)
		}
	}
	return out
}

// S22, C7, C8: two replicas tick the same slot; one sweep task, one
// batch, and only the eligible devices get provisioned — down to the
// simulated controllers.
func TestSweepTwoReplicasProvisionOnlyEligible(t *testing.T) {
	addr := testpeers.Redis(t)
	ctx := context.Background()
	seal := sealer(t)
	interval := time.Hour
	slotNow := time.Date(2030, 5, 6, 7, 0, 0, 0, time.UTC)
	clock := func() time.Time { return slotNow }
	r1 := newReplica(t, addr, seal, interval, clock)
	r2 := newReplica(t, addr, seal, interval, clock)

	sim := startSim(t, 8)
	subnet := netip.PrefixFrom(sim.Addrs()[0], 24).Masked()
	type dev struct {
		host  string
		colls []string
		mod   func(*domain.Device)
		want  bool
	}
	devices := []dev{
		{host: "eligible", colls: []string{"auto", "auto2"}, want: true}, // in two auto collections: once
		{host: "suppressed", colls: []string{"auto"}, mod: func(d *domain.Device) { d.SuppressAutoProvision = true }},
		{host: "renaming", colls: []string{"auto"}, mod: func(d *domain.Device) { d.RenamePending = true }},
		{host: "provisioned", colls: []string{"auto"}, mod: func(d *domain.Device) { d.Status = domain.StatusProvisioned }},
		{host: "detected", colls: []string{"auto"}, mod: func(d *domain.Device) { d.Status = domain.StatusDetected }},
		{host: "manual", colls: []string{"manual"}},
		{host: "nocollection"},
		{host: "ruled-in", want: true}, // added by auto2's rule at sweep time
	}
	for _, c := range []domain.Collection{{Name: "auto", AutoProvision: true}, {Name: "manual"},
		{Name: "auto2", AutoProvision: true, Rules: []domain.CollectionRule{{Subnet: subnet, NamePattern: "ruled-*"}}}} {
		if err := r1.st.PutCollection(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	byID := map[string]dev{}
	for i, d := range devices {
		dd := domain.Device{ID: "dev-" + d.host, HostName: d.host, Domain: "amt.test", IP: sim.Addrs()[i], Subnet: subnet,
			Status: domain.StatusNotProvisioned, State: domain.ProvisioningPost} // mebx devices
		if d.mod != nil {
			d.mod(&dd)
		}
		if err := r1.st.PutDevice(ctx, dd); err != nil {
			t.Fatal(err)
		}
		for _, c := range d.colls {
			if err := r1.st.AddMembers(ctx, c, dd.ID); err != nil {
				t.Fatal(err)
			}
		}
		byID[dd.ID] = d
	}

	// Both replicas tick the slot (the second late in it): one task.
	if ok, err := r1.sw.Enqueue(ctx, slotNow); err != nil || !ok {
		t.Fatalf("first replica: enqueued %t, %v; want the slot's task", ok, err)
	}
	if ok, err := r2.sw.Enqueue(ctx, slotNow.Add(interval-time.Second)); err != nil || ok {
		t.Fatalf("second replica, same slot: enqueued %t, %v; want a collision", ok, err)
	}
	tasks, err := asynq.NewInspectorFromRedisClient(r1.rdb).ListPendingTasks(jobs.QueueSweep)
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) != 1 || tasks[0].Type != sweep.TaskType {
		t.Fatalf("pending sweep-queue tasks: %d, want one %s", len(tasks), sweep.TaskType)
	}

	// Both replicas run workers; one of them takes the task.
	q := store.NewLeaseQueue(r1.st, store.QueueOptions{})
	startWorker(t, r1, q)
	startWorker(t, r2, store.NewLeaseQueue(r2.st, store.QueueOptions{}))
	var b domain.Batch
	waitFor(t, "the sweep batch to reach phase 2", func() bool {
		bs := sweepBatches(t, r1.st)
		if len(bs) != 1 {
			return false
		}
		b = bs[0]
		page, err := r1.st.ListJobs(ctx, b.ID, domain.JobFilter{State: domain.JobPhase2})
		return err == nil && len(page.Jobs) == b.Total
	})
	if want := "sweep-" + r1.sw.Slot(slotNow); b.ID != want || b.Kind != domain.KindProvision || b.Total != 2 {
		t.Fatalf("batch %s kind %s total %d; want %s, provision, 2", b.ID, b.Kind, b.Total, want)
	}
	// The same slot's task handled again (a retry, a late replica) adds nothing.
	again := asynq.NewTask(sweep.TaskType, []byte(`{"slot":"`+r1.sw.Slot(slotNow)+`"}`))
	if err := r2.sw.Handle(ctx, again); err != nil {
		t.Fatalf("the slot's task handled again: %v", err)
	}

	// Phase 2 on the simulated controllers: exactly the eligible ones.
	leased, err := q.Lease(ctx, "agent-1", []netip.Prefix{subnet}, 100, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ex := phase2.NewExecutor(phase2.Config{HTTPPort: sim.HTTPPort(), TLSPort: sim.TLSPort(), CallTimeout: 5 * time.Second,
		CommitWait: 40 * time.Millisecond, CommitDeadline: 5 * time.Second, PollInterval: 20 * time.Millisecond, Log: zerolog.Nop()})
	var got []string
	for _, l := range leased {
		var job pb.Phase2Job
		if err := proto.Unmarshal(l.Payload, &job); err != nil {
			t.Fatal(err)
		}
		got = append(got, job.DeviceId)
		if res := ex.Run(ctx, &job, nil); res.Err != nil {
			t.Fatalf("phase 2 of %s: %s: %v", job.DeviceId, res.ErrorStep, res.Err)
		}
	}
	slices.Sort(got)
	if want := []string{"dev-eligible", "dev-ruled-in"}; !slices.Equal(got, want) {
		t.Fatalf("phase-2 jobs for %v, want %v", got, want)
	}
	for i, d := range devices {
		st, _ := sim.Device(sim.Addrs()[i])
		if provisioned := st.Commits > 0; provisioned != d.want {
			t.Errorf("%s: controller provisioned %t, want %t", d.host, provisioned, d.want)
		}
	}
	if n := len(sweepBatches(t, r1.st)); n != 1 {
		t.Errorf("%d sweep batches, want 1", n)
	}
}

// Every replica's Run enqueues the current slot at once; two replicas
// running together leave one task for the slot.
func TestRunTwoReplicas(t *testing.T) {
	addr := testpeers.Redis(t)
	seal := sealer(t)
	now := func() time.Time { return time.Date(2030, 5, 6, 7, 30, 0, 0, time.UTC) }
	r1 := newReplica(t, addr, seal, time.Hour, now)
	r2 := newReplica(t, addr, seal, time.Hour, now)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, r := range []*replica{r1, r2} {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- r.sw.Run(ctx) }()
	}
	insp := asynq.NewInspectorFromRedisClient(r1.rdb)
	var tasks []*asynq.TaskInfo
	waitFor(t, "the slot's task", func() bool {
		var err error
		tasks, err = insp.ListPendingTasks(jobs.QueueSweep)
		return err == nil && len(tasks) > 0
	})
	// Both Runs have ticked once the second Enqueue returns; asking the
	// same slot again shows the ID is taken.
	if ok, err := r2.sw.Enqueue(context.Background(), now()); err != nil || ok {
		t.Fatalf("enqueue after both runs: %t %v, want a collision", ok, err)
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	tasks, err := insp.ListPendingTasks(jobs.QueueSweep)
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) != 1 || tasks[0].ID != "sweep:"+r1.sw.Slot(now()) {
		t.Fatalf("tasks %d (first %v), want one with ID sweep:%s", len(tasks), tasks, r1.sw.Slot(now()))
	}
}

func TestSlots(t *testing.T) {
	base := time.Date(2030, 1, 2, 3, 0, 0, 0, time.UTC)
	cases := []struct {
		name     string
		interval time.Duration
		a, b     time.Time
		same     bool
		want     string
	}{
		{"start and end of a 15-minute slot", 15 * time.Minute, base, base.Add(15*time.Minute - time.Millisecond), true, "20300102T030000Z"},
		{"next 15-minute slot", 15 * time.Minute, base.Add(14 * time.Minute), base.Add(15 * time.Minute), false, "20300102T030000Z"},
		{"other time zone, same instant", time.Hour, base.In(time.FixedZone("x", 9*3600)), base.Add(59 * time.Minute), true, "20300102T030000Z"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sw, err := sweep.New(fakeStore{}, nopBatches{}, asynq.NewClientFromRedisClient(redis.NewClient(&redis.Options{})),
				sweep.Config{Interval: tc.interval}, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			if got := sw.Slot(tc.a); got != tc.want || strings.Contains(got, ":") {
				t.Errorf("Slot(%s) = %q, want %q", tc.a, got, tc.want)
			}
			if same := sw.Slot(tc.a) == sw.Slot(tc.b); same != tc.same {
				t.Errorf("same slot %t, want %t", same, tc.same)
			}
		})
	}
	if _, err := sweep.New(fakeStore{}, nopBatches{}, asynq.NewClientFromRedisClient(redis.NewClient(&redis.Options{})),
		sweep.Config{}, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "sweep.interval") {
		t.Errorf("zero interval: %v, want an error naming sweep.interval", err)
	}
}

// With no auto-provisioning collection, or nothing eligible in one, a
// sweep starts no batch.
func TestSweepNothingToDo(t *testing.T) {
	r := newReplica(t, testpeers.Redis(t), sealer(t), time.Hour, time.Now)
	ctx := context.Background()
	b, err := r.sw.SweepNow(ctx, "ops")
	if err != nil || b.ID != "" || b.Total != 0 {
		t.Fatalf("sweep without collections: %+v %v", b, err)
	}
	if err := r.st.PutCollection(ctx, domain.Collection{Name: "auto", AutoProvision: true}); err != nil {
		t.Fatal(err)
	}
	d := domain.Device{ID: "dev-x", HostName: "x", IP: netip.MustParseAddr("127.0.0.9"), Subnet: netip.MustParsePrefix("127.0.0.0/24"),
		Status: domain.StatusProvisioned}
	if err := r.st.PutDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := r.st.AddMembers(ctx, "auto", d.ID); err != nil {
		t.Fatal(err)
	}
	if b, err = r.sw.SweepNow(ctx, "ops"); err != nil || b.ID != "" {
		t.Fatalf("sweep with nothing eligible: %+v %v", b, err)
	}
	if n := len(sweepBatches(t, r.st)); n != 0 {
		t.Fatalf("%d batches created", n)
	}
}

type fakeStore struct{}

func (fakeStore) ListCollections(context.Context) ([]domain.Collection, error) { return nil, nil }
func (fakeStore) ApplyCollectionRules(context.Context, string) (int, error)    { return 0, nil }
func (fakeStore) Members(context.Context, string, int, string) (domain.DevicePage, error) {
	return domain.DevicePage{}, nil
}

type nopBatches struct{}

func (nopBatches) Start(context.Context, batch.Request) (domain.Batch, bool, error) {
	return domain.Batch{}, false, nil
}
