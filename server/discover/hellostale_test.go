package discover_test

import (
	"bytes"
	"context"
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

// A report's Hellos: each device recorded (they are recorded in
// parallel), and a Hello the agent received before the device was
// provisioned — sent before its activation, come late — changes nothing:
// it used to reset the device to state 0 and start provisioning it again
// against a device that no longer offers remote configuration (2,268
// failed jobs in a 10,000-device bench). A Hello received after that is
// news: the device was reset to the factory.
func TestHelloReportAndStaleHellos(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: testpeers.Redis(t)})
	t.Cleanup(func() { _ = rdb.Close() })
	sealer, err := secrets.New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(rdb, sealer, store.Options{})
	ac := asynq.NewClientFromRedisClient(rdb)
	t.Cleanup(func() { _ = ac.Close() })
	ctx := context.Background()
	if err := st.PutCollection(ctx, domain.Collection{Name: "auto", AutoProvision: true, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	subnet := netip.MustParsePrefix("127.77.21.0/24")
	provisionedAt := time.Now().Add(-time.Minute).UTC().Truncate(time.Millisecond)
	const n = 200
	var fresh []discover.Hello
	for i := range n {
		d := domain.Device{ID: fmt.Sprintf("pc-%03d.amt.test", i), HostName: fmt.Sprintf("pc-%03d", i), Domain: "amt.test",
			IP: netip.AddrFrom4([4]byte{127, 77, 21, byte(1 + i)}), Subnet: subnet, Status: domain.StatusDetected}
		if i == 0 {
			d.Status, d.State, d.ProvisionedAt = domain.StatusProvisioned, domain.ProvisioningPost, provisionedAt
		}
		if err := st.PutDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
		if err := st.AddMembers(ctx, "auto", d.ID); err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			fresh = append(fresh, discover.Hello{IP: d.IP, UUID: fmt.Sprintf("8c4d2e6f-0000-4000-8000-%012d", i), At: time.Now()})
		}
	}
	rec := discover.NewHelloRecorder(st, batch.New(st, jobs.NewEnqueuer(ac, 3, time.Minute), zerolog.Nop()), nil, zerolog.Nop(), nil)
	got, err := rec.Record(ctx, "agent-1", subnet, fresh)
	if err != nil || got.Matched != n-1 || got.Queued != n-1 {
		t.Fatalf("report of %d new devices: %+v, %v; want all matched and queued", n-1, got, err)
	}
	ids, err := st.ListBatches(ctx, 10)
	if err != nil || len(ids) != 1 {
		t.Fatalf("batches %v, %v; want one", ids, err)
	}
	if b, err := st.GetBatch(ctx, ids[0]); err != nil || b.Total != n-1 {
		t.Fatalf("batch %+v, %v; want %d devices", b, err, n-1)
	}

	provisioned := netip.AddrFrom4([4]byte{127, 77, 21, 1})
	cases := []struct {
		name      string
		at        time.Time
		wantStart bool
	}{
		{"received before the device was provisioned", provisionedAt.Add(-5 * time.Second), false},
		{"received after it was: reset to the factory", provisionedAt.Add(30 * time.Second), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := discover.Hello{IP: provisioned, UUID: "8c4d2e6f-0000-4000-8000-000000000000", At: tc.at}
			got, err := rec.Record(ctx, "agent-1", subnet, []discover.Hello{h})
			if err != nil {
				t.Fatal(err)
			}
			d, err := st.GetDevice(ctx, "pc-000.amt.test")
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantStart {
				if got.Queued != 1 || d.State != domain.ProvisioningPre {
					t.Fatalf("queued %d, state %d; want the device reset to state 0 and provisioning started", got.Queued, d.State)
				}
				return
			}
			if got.Queued != 0 || got.Matched != 1 || d.Status != domain.StatusProvisioned || d.State != domain.ProvisioningPost || d.Hello != nil {
				t.Fatalf("counts %+v, status %s, state %d, hello %+v; want the device left provisioned and the Hello ignored", got, d.Status, d.State, d.Hello)
			}
		})
	}
}
