package store

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/amtops/amtops/internal/secrets"
	"github.com/amtops/amtops/internal/testpeers"
)

// fakeClock is the store's injectable clock in tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type env struct {
	s     *Store
	q     *LeaseQueue
	rdb   redis.UniversalClient
	clock *fakeClock
	ctx   context.Context
}

// backends runs fn once against a private redis-server and once against
// miniredis, so that every script is proven on both.
func backends(t *testing.T, qo QueueOptions, fn func(t *testing.T, e *env)) {
	t.Helper()
	for _, b := range []struct {
		name  string
		start func(testing.TB) string
	}{
		{"redis", testpeers.Redis},
		{"miniredis", testpeers.Miniredis},
	} {
		t.Run(b.name, func(t *testing.T) {
			e := newEnv(t, b.start(t), qo)
			fn(t, e)
		})
	}
}

func newEnv(t *testing.T, addr string, qo QueueOptions) *env {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64})
	t.Cleanup(func() { _ = rdb.Close() })
	sealer, err := secrets.New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	clock := newClock()
	s := New(rdb, sealer, Options{Clock: clock.Now, OplogCap: 50})
	return &env{s: s, q: NewLeaseQueue(s, qo), rdb: rdb, clock: clock, ctx: context.Background()}
}

// dumpAll reads every key and value in Redis: strings, hash fields and
// values, list items, set and sorted-set members, stream entries.
func dumpAll(t *testing.T, ctx context.Context, rdb redis.UniversalClient) map[string][][]byte {
	t.Helper()
	out := make(map[string][][]byte)
	var cursor uint64
	for {
		keys, next, err := rdb.Scan(ctx, cursor, "*", 1000).Result()
		if err != nil {
			t.Fatalf("SCAN: %v", err)
		}
		for _, k := range keys {
			typ, err := rdb.Type(ctx, k).Result()
			if err != nil {
				t.Fatalf("TYPE %s: %v", k, err)
			}
			var vals []string
			switch typ {
			case "string":
				v, err := rdb.Get(ctx, k).Result()
				if err != nil {
					t.Fatalf("GET %s: %v", k, err)
				}
				vals = []string{v}
			case "hash":
				h, err := rdb.HGetAll(ctx, k).Result()
				if err != nil {
					t.Fatalf("HGETALL %s: %v", k, err)
				}
				for f, v := range h {
					vals = append(vals, f, v)
				}
			case "list":
				vals, err = rdb.LRange(ctx, k, 0, -1).Result()
			case "set":
				vals, err = rdb.SMembers(ctx, k).Result()
			case "zset":
				vals, err = rdb.ZRange(ctx, k, 0, -1).Result()
			case "stream":
				var msgs []redis.XMessage
				msgs, err = rdb.XRange(ctx, k, "-", "+").Result()
				for _, m := range msgs {
					for f, v := range m.Values {
						vals = append(vals, f, v.(string))
					}
				}
			case "none": // expired between SCAN and TYPE
			default:
				t.Fatalf("key %s has unexpected type %s", k, typ)
			}
			if err != nil {
				t.Fatalf("read %s (%s): %v", k, typ, err)
			}
			entry := [][]byte{[]byte(k)}
			for _, v := range vals {
				entry = append(entry, []byte(v))
			}
			out[k] = entry
		}
		cursor = next
		if cursor == 0 {
			return out
		}
	}
}

// assertAbsent fails if secret appears anywhere in Redis, raw, hex or
// base64 encoded.
func assertAbsent(t *testing.T, dump map[string][][]byte, secret []byte) {
	t.Helper()
	forms := [][]byte{secret, []byte(hex.EncodeToString(secret)),
		[]byte(base64.StdEncoding.EncodeToString(secret)), []byte(base64.RawURLEncoding.EncodeToString(secret))}
	for k, entry := range dump {
		for _, v := range entry {
			for _, f := range forms {
				if bytes.Contains(v, f) {
					t.Errorf("secret %q found in key %s", secret, k)
				}
			}
		}
	}
}
