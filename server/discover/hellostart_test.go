package discover_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/secrets"
	"github.com/amtops/amtops/internal/testpeers"
	"github.com/amtops/amtops/server/batch"
	"github.com/amtops/amtops/server/discover"
	"github.com/amtops/amtops/server/jobs"
	"github.com/amtops/amtops/server/store"
)

// giveUp is the agent's side of a slow ReportHellos (its call deadline,
// 10 s, passes while the server queues the batch): the call's context is
// cancelled once the batch exists and its first phase-1 tasks are queued.
type giveUp struct {
	next   batch.Enqueuer
	cancel context.CancelFunc
	n      *int
}

func (g giveUp) Enqueue(ctx context.Context, t jobs.Task, queue string) error {
	if *g.n++; *g.n == 3 {
		g.cancel()
	}
	return g.next.Enqueue(ctx, t, queue)
}

// TestHelloBatchQueuedWhole: once a Hello report has marked its devices
// with the batch it starts, the batch is queued whole even when the agent
// gives up on the call. It used to be cut off with the call: jobs left
// queued without a phase-1 task wait forever, and every later Hello of
// those devices finds their job still open and starts nothing (found by
// the fleet bench with keys made at the site: a third of 1,000 devices
// never provisioned).
func TestHelloBatchQueuedWhole(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: testpeers.Redis(t)})
	t.Cleanup(func() { _ = rdb.Close() })
	sealer, err := secrets.New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(rdb, sealer, store.Options{})
	ac := asynq.NewClientFromRedisClient(rdb)
	t.Cleanup(func() { _ = ac.Close() })
	bg := context.Background()
	if err := st.PutCollection(bg, domain.Collection{Name: "auto", AutoProvision: true, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	subnet := netip.MustParsePrefix("127.77.20.0/24")
	var hellos []discover.Hello
	for i := range 20 {
		d := domain.Device{ID: fmt.Sprintf("pc-%02d.amt.test", i), HostName: fmt.Sprintf("pc-%02d", i), Domain: "amt.test",
			IP: netip.AddrFrom4([4]byte{127, 77, 20, byte(10 + i)}), Subnet: subnet, Status: domain.StatusDetected}
		if err := st.PutDevice(bg, d); err != nil {
			t.Fatal(err)
		}
		if err := st.AddMembers(bg, "auto", d.ID); err != nil {
			t.Fatal(err)
		}
		hellos = append(hellos, discover.Hello{IP: d.IP, UUID: fmt.Sprintf("8c4d2e6f-0000-4000-8000-%012d", i), At: time.Now()})
	}
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	var calls int
	enq := giveUp{next: jobs.NewEnqueuer(ac, 3, time.Minute), cancel: cancel, n: &calls}
	rec := discover.NewHelloRecorder(st, batch.New(st, enq, zerolog.Nop()), nil, zerolog.Nop(), nil)
	n, err := rec.Record(ctx, "agent-1", subnet, hellos)
	if err != nil {
		t.Logf("Record: %v (the agent gave up; it resends)", err)
	}
	if n.Queued != len(hellos) {
		t.Logf("queued %d of %d before the agent gave up", n.Queued, len(hellos))
	}
	in := asynq.NewInspectorFromRedisClient(rdb)
	for _, h := range hellos {
		d, err := st.GetDevice(bg, fmt.Sprintf("pc-%02d.amt.test", int(h.IP.As4()[3])-10))
		if err != nil {
			t.Fatal(err)
		}
		if d.Hello == nil || d.Hello.Batch == "" {
			continue // not marked: the next Hello starts it
		}
		jobID := domain.JobID(d.Hello.Batch, d.ID)
		j, err := st.GetJob(bg, d.Hello.Batch, jobID)
		if errors.Is(err, domain.ErrNotFound) {
			continue // the batch was never made: the next Hello starts one
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := in.GetTaskInfo(jobs.QueueDefault, jobs.Task{JobID: jobID}.TaskID()); j.State == domain.JobQueued && err != nil {
			t.Errorf("%s: job %s queued with no phase-1 task (%v): it would wait forever", d.ID, jobID, err)
		}
	}
}
