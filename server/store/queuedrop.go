package store

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/redis/go-redis/v9"
)

// dropPendingScript moves a subnet's pending jobs created before ARGV[2]
// (ms) to its dead list, as the reaper does with jobs out of attempts.
// ARGV: job key prefix, created before, now, retention ms, dead cap.
// Returns the IDs moved.
var dropPendingScript = redis.NewScript(`
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
local keep, out = {}, {}
for _, id in ipairs(ids) do
  local jk = ARGV[1] .. id
  local c = tonumber(redis.call('HGET', jk, 'c') or '0')
  if redis.call('HGET', jk, 's') == 'pending' and c < tonumber(ARGV[2]) then
    redis.call('HSET', jk, 's', 'dead', 'f', ARGV[3])
    redis.call('HDEL', jk, 'p')
    redis.call('PEXPIRE', jk, ARGV[4])
    redis.call('RPUSH', KEYS[2], id)
    out[#out + 1] = id
  else
    keep[#keep + 1] = id
  end
end
if #out > 0 then
  redis.call('DEL', KEYS[1])
  for i = 1, #keep, 1000 do
    redis.call('RPUSH', KEYS[1], unpack(keep, i, math.min(i + 999, #keep)))
  end
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[5]), -1)
end
return out
`)

// DropPending dead-letters a subnet's pending jobs enqueued before
// before (jobs no agent took in time), and returns their IDs so that the
// caller records why they failed.
func (q *LeaseQueue) DropPending(ctx context.Context, subnet netip.Prefix, before time.Time) ([]string, error) {
	if err := checkSubnet(subnet); err != nil {
		return nil, fmt.Errorf("store: drop pending: %w", err)
	}
	subnet = subnet.Masked()
	ids, err := dropPendingScript.Run(ctx, q.s.rdb, []string{q.pendingKey(subnet), q.deadKey(subnet)},
		q.jobPrefix(subnet), ms(before), ms(q.s.now()), q.retention.Milliseconds(), q.deadCap).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("store: drop pending of %s: %w", subnet, err)
	}
	return ids, nil
}
