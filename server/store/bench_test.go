package store

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/amtops/amtops/internal/secrets"
	"github.com/amtops/amtops/internal/testpeers"
)

// BenchmarkLeaseComplete measures the phase-2 queue's round trip (Lease
// then Complete) against a real redis-server, with concurrent leasers on
// one subnet. b.N is the number of jobs; run it with a bounded count, e.g.
// -benchtime=20000x.
func BenchmarkLeaseComplete(b *testing.B) {
	addr := testpeers.Redis(b)
	for _, bc := range []struct{ leasers, batch int }{{1, 1}, {16, 1}, {64, 1}, {16, 10}} {
		b.Run(fmt.Sprintf("leasers=%d/batch=%d", bc.leasers, bc.batch), func(b *testing.B) {
			ctx := context.Background()
			rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: bc.leasers + 16})
			defer rdb.Close()
			if err := rdb.FlushDB(ctx).Err(); err != nil {
				b.Fatal(err)
			}
			sealer, _ := secrets.New(bytes.Repeat([]byte{1}, 32))
			q := NewLeaseQueue(New(rdb, sealer, Options{}), QueueOptions{})
			subnet := netip.MustParsePrefix("10.9.0.0/24")
			payload := bytes.Repeat([]byte("x"), 512)

			// Fill the queue outside the timer, 16 writers at a time.
			var next atomic.Int64
			var wg sync.WaitGroup
			for range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
						if _, err := q.Enqueue(ctx, subnet, fmt.Sprintf("job-%d", i), payload); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()

			var done atomic.Int64
			b.ResetTimer()
			start := time.Now()
			for w := range bc.leasers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					agent := fmt.Sprintf("agent-%d", w)
					for done.Load() < int64(b.N) {
						got, err := q.Lease(ctx, agent, []netip.Prefix{subnet}, bc.batch, time.Minute)
						if err != nil {
							b.Error(err)
							return
						}
						if len(got) == 0 {
							return
						}
						for _, l := range got {
							if err := q.Complete(ctx, subnet, l.JobID, l.Token); err != nil {
								b.Error(err)
								return
							}
						}
						done.Add(int64(len(got)))
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if done.Load() != int64(b.N) {
				b.Fatalf("completed %d of %d jobs", done.Load(), b.N)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "jobs/s")
		})
	}
}
