package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// A device claim names the one job allowed to work on a device, so two
// batches never configure one controller at once. The batch layer decides
// whether a holder is stale (its job has ended); the TTL only bounds a
// claim whose job record was lost.
func (s *Store) claimKey(deviceID string) string { return s.key("{dev}", "claim", deviceID) }

// claimTTL outlives any job: phase-1 retries plus phase-2 attempts.
const claimTTL = 7 * 24 * time.Hour

// takeClaimScript sets the claim when it is free, already ours, or held
// by ARGV[2] (a holder the caller found stale). Returns the holder after.
var takeClaimScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if not cur or cur == ARGV[1] or (ARGV[2] ~= '' and cur == ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  return ARGV[1]
end
return cur
`)

// ClaimDevice gives the device to job (a "batch:job" reference) unless
// another job holds it; stale, when not empty, is a holder the caller has
// checked has ended and may be replaced. It returns the holder after the
// call: ok is true when that is job.
func (s *Store) ClaimDevice(ctx context.Context, deviceID, job, stale string) (holder string, ok bool, err error) {
	holder, err = takeClaimScript.Run(ctx, s.rdb, []string{s.claimKey(deviceID)}, job, stale, claimTTL.Milliseconds()).Text()
	if err != nil {
		return "", false, fmt.Errorf("store: claim device %s: %w", deviceID, err)
	}
	return holder, holder == job, nil
}

var releaseClaimScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// ReleaseDevice drops job's claim on the device; another job's claim is
// left alone.
func (s *Store) ReleaseDevice(ctx context.Context, deviceID, job string) error {
	if err := releaseClaimScript.Run(ctx, s.rdb, []string{s.claimKey(deviceID)}, job).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("store: release device %s: %w", deviceID, err)
	}
	return nil
}
