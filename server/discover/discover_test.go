package discover_test

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/secrets"
	"github.com/amtops/amtops/internal/testpeers"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/discover"
	"github.com/amtops/amtops/server/store"
)

func newQueue(t *testing.T) *store.LeaseQueue {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: testpeers.Redis(t)})
	t.Cleanup(func() { _ = rdb.Close() })
	sealer, err := secrets.New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return store.NewLeaseQueue(store.New(rdb, sealer, store.Options{}), store.QueueOptions{})
}

func TestRequestIsIdempotentPerSlot(t *testing.T) {
	q := newQueue(t)
	ctx := context.Background()
	subnet := netip.MustParsePrefix("127.77.9.0/24")
	t0 := time.Date(2026, 3, 1, 12, 3, 0, 0, time.UTC)
	slot := discover.Slot(t0, 5*time.Minute)

	// Ten callers in the same slot: one job.
	ids := make([]string, 10)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			var err error
			if ids[i], err = discover.Request(ctx, q, netip.MustParsePrefix("127.77.9.99/24"), slot); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("IDs differ: %v", ids)
		}
	}
	if want := "discover-1772366400:127.77.9.0/24"; ids[0] != want {
		t.Errorf("job ID = %q, want %q", ids[0], want)
	}
	if !discover.IsJobID(ids[0]) {
		t.Errorf("IsJobID(%q) = false", ids[0])
	}
	st, err := q.Stats(ctx, subnet)
	if err != nil || st.Pending != 1 {
		t.Fatalf("stats = %+v, %v; want one pending job", st, err)
	}

	// The next slot is a new sweep.
	next, err := discover.Request(ctx, q, subnet, discover.Slot(t0.Add(5*time.Minute), 5*time.Minute))
	if err != nil || next == ids[0] {
		t.Fatalf("next slot: %q, %v; want a new job", next, err)
	}

	leased, err := q.Lease(ctx, "agent-1", []netip.Prefix{subnet}, 10, time.Minute)
	if err != nil || len(leased) != 2 {
		t.Fatalf("lease: %d jobs, %v; want 2", len(leased), err)
	}
	for _, l := range leased {
		var job pb.Phase2Job
		if err := proto.Unmarshal(l.Payload, &job); err != nil {
			t.Fatal(err)
		}
		if job.GetKind() != pb.JobKind_JOB_KIND_DISCOVER || len(job.GetDiscover().GetSubnets()) != 1 ||
			job.GetDiscover().GetSubnets()[0] != "127.77.9.0/24" {
			t.Errorf("payload = %v, want a discover job for 127.77.9.0/24", &job)
		}
	}

	// Completed, the same slot still yields no second job.
	for _, l := range leased {
		if err := q.Complete(ctx, subnet, l.JobID, l.Token); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := discover.Request(ctx, q, subnet, slot); err != nil {
		t.Fatal(err)
	}
	if st, err := q.Stats(ctx, subnet); err != nil || st.Pending != 0 {
		t.Errorf("after completion: stats = %+v, %v; want nothing pending", st, err)
	}
}

func TestRequestRefuses(t *testing.T) {
	q := newQueue(t)
	slot := time.Unix(1772366400, 0)
	cases := []struct {
		name   string
		subnet netip.Prefix
		slot   time.Time
		field  string
	}{
		{name: "IPv4 /8", subnet: netip.MustParsePrefix("127.0.0.0/8"), slot: slot, field: "subnet"},
		{name: "IPv6 /64", subnet: netip.MustParsePrefix("fd00::/64"), slot: slot, field: "subnet"},
		{name: "invalid prefix", slot: slot, field: "subnet"},
		{name: "no slot", subnet: netip.MustParsePrefix("127.77.9.0/24"), field: "slot"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := discover.Request(context.Background(), q, tc.subnet, tc.slot)
			var fe *domain.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Errorf("err = %v, want a field error on %s", err, tc.field)
			}
		})
	}
}

func TestIsJobID(t *testing.T) {
	cases := []struct {
		id   string
		want bool
	}{
		{id: "discover-1772366400:127.77.9.0/24", want: true},
		{id: "discover-1772366400:fd00::/112", want: true},
		{id: "b1:dev-1", want: false},
		{id: "b1:discover-1", want: false},
		{id: "discover-1", want: false},
		{id: "", want: false},
	}
	for _, tc := range cases {
		t.Run(tc.id, func(t *testing.T) {
			if got := discover.IsJobID(tc.id); got != tc.want {
				t.Errorf("IsJobID(%q) = %v, want %v", tc.id, got, tc.want)
			}
		})
	}
}
