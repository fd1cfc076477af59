package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/amtops/amtops/internal/domain"
)

// The phase-2 lease queue keeps one set of keys per subnet under the tag
// {q:<subnet>}:
//
//	…:pending       list of job IDs, oldest first
//	…:leased        sorted set, score = lease deadline (Unix ms)
//	…:job:<id>      hash: p sealed payload, a attempts, s state, t token,
//	                g agent, d deadline, c created, f finished
//	…:dead          list of dead-lettered job IDs, newest last
//
// plus <prefix>:queues, the set of known subnets, and the pub/sub channel
// <prefix>:wake carrying the subnet that just got work. Every script
// touches one subnet's keys only. Lease and Reap build job keys from the
// IDs they pop; those keys share the tag, hence the slot, of the declared
// ones.
//
// Job states in the queue: pending, leased, completed, dead. Completed and
// dead jobs keep their hash (without the payload) for Retention, so that
// an idempotent Enqueue of the same ID stays a no-op for that long.

// QueueOptions tunes a LeaseQueue. The zero value is usable.
type QueueOptions struct {
	// MaxAttempts is how many leases a job gets before an expired lease
	// sends it to the dead-letter list; default 5.
	MaxAttempts int
	// Retention keeps completed and dead jobs' hashes (not payloads) so
	// that re-enqueueing them is a no-op; default 24h.
	Retention time.Duration
	// DeadCap bounds each subnet's dead-letter list; default 10000.
	DeadCap int
}

// LeaseQueue is the per-subnet phase-2 job queue. Safe for concurrent use
// by any number of server replicas.
type LeaseQueue struct {
	s           *Store
	maxAttempts int
	retention   time.Duration
	deadCap     int
}

// NewLeaseQueue builds the queue on a store (same client, sealer, prefix
// and clock).
func NewLeaseQueue(s *Store, o QueueOptions) *LeaseQueue {
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 5
	}
	if o.Retention <= 0 {
		o.Retention = 24 * time.Hour
	}
	if o.DeadCap <= 0 {
		o.DeadCap = 10000
	}
	return &LeaseQueue{s: s, maxAttempts: o.MaxAttempts, retention: o.Retention, deadCap: o.DeadCap}
}

func subnetTag(p netip.Prefix) string { return "{q:" + p.Masked().String() + "}" }

func (q *LeaseQueue) pendingKey(p netip.Prefix) string { return q.s.key(subnetTag(p), "pending") }
func (q *LeaseQueue) leasedKey(p netip.Prefix) string  { return q.s.key(subnetTag(p), "leased") }
func (q *LeaseQueue) deadKey(p netip.Prefix) string    { return q.s.key(subnetTag(p), "dead") }
func (q *LeaseQueue) jobKey(p netip.Prefix, id string) string {
	return q.jobPrefix(p) + id
}
func (q *LeaseQueue) jobPrefix(p netip.Prefix) string { return q.s.key(subnetTag(p), "job") + ":" }
func (q *LeaseQueue) queuesKey() string               { return q.s.key("queues") }
func (q *LeaseQueue) wakeChannel() string             { return q.s.key("wake") }

func checkSubnet(p netip.Prefix) error {
	if !p.IsValid() {
		return domain.InvalidField("subnet", p.String(), "invalid prefix")
	}
	return nil
}

func checkJobID(id string) error {
	if id == "" {
		return domain.InvalidField("job_id", "", "must not be empty")
	}
	return nil
}

var enqueueScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'p', ARGV[2], 'a', 0, 's', 'pending', 'c', ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
`)

// Enqueue adds a job for a subnet. It is idempotent by job ID: when the ID
// is already known in any state (including completed, for Retention)
// nothing changes and created is false. The payload is sealed with the
// job's key as associated data. Waiting leasers are woken.
func (q *LeaseQueue) Enqueue(ctx context.Context, subnet netip.Prefix, jobID string, payload []byte) (created bool, err error) {
	if err := errors.Join(checkSubnet(subnet), checkJobID(jobID)); err != nil {
		return false, fmt.Errorf("store: enqueue: %w", err)
	}
	subnet = subnet.Masked()
	jk := q.jobKey(subnet, jobID)
	blob, err := q.s.seal(jk, payload)
	if err != nil {
		return false, fmt.Errorf("store: enqueue %s: seal: %w", jobID, err)
	}
	// Register first: a reaper must know the subnet before it has leases.
	if err := q.s.rdb.SAdd(ctx, q.queuesKey(), subnet.String()).Err(); err != nil {
		return false, fmt.Errorf("store: enqueue %s: register subnet: %w", jobID, err)
	}
	n, err := enqueueScript.Run(ctx, q.s.rdb, []string{jk, q.pendingKey(subnet)},
		jobID, blob, ms(q.s.now())).Int()
	if err != nil {
		return false, fmt.Errorf("store: enqueue %s: %w", jobID, err)
	}
	if n == 1 {
		q.wake(ctx, subnet)
	}
	return n == 1, nil
}

// wake tells long-polls waiting on subnet that there is work. Losing a
// wake-up only delays a lease until the poller's next check.
func (q *LeaseQueue) wake(ctx context.Context, subnet netip.Prefix) {
	_ = q.s.rdb.Publish(ctx, q.wakeChannel(), subnet.String()).Err()
}

// leaseScript pops up to ARGV[5] pending jobs and leases them.
// ARGV: job key prefix, agent, now, deadline, max, tokens...
// Returns a flat list: id, token, sealed payload, attempts, … .
var leaseScript = redis.NewScript(`
local max = tonumber(ARGV[5])
local out = {}
local got = 0
local tries = 0
while got < max and tries < max * 4 + 16 do
  tries = tries + 1
  local id = redis.call('LPOP', KEYS[1])
  if not id then break end
  local jk = ARGV[1] .. id
  if redis.call('HGET', jk, 's') == 'pending' then
    got = got + 1
    local tok = ARGV[5 + got]
    local a = redis.call('HINCRBY', jk, 'a', 1)
    redis.call('HSET', jk, 's', 'leased', 't', tok, 'g', ARGV[2], 'd', ARGV[4])
    redis.call('ZADD', KEYS[2], ARGV[4], id)
    out[#out + 1] = id
    out[#out + 1] = tok
    out[#out + 1] = redis.call('HGET', jk, 'p')
    out[#out + 1] = a
  end
end
return out
`)

// Lease hands up to max pending jobs from the given subnets to agentID for
// ttl. Each job goes to exactly one leaser; its attempt count goes up. An
// empty result means no work right now (see dispatch for waiting).
func (q *LeaseQueue) Lease(ctx context.Context, agentID string, subnets []netip.Prefix, max int, ttl time.Duration) ([]domain.Leased, error) {
	switch {
	case agentID == "":
		return nil, fmt.Errorf("store: lease: %w", domain.InvalidField("agent_id", "", "must not be empty"))
	case max <= 0 || max > 1000:
		return nil, fmt.Errorf("store: lease: %w", domain.InvalidField("max_jobs", strconv.Itoa(max), "must be 1 to 1000"))
	case ttl <= 0:
		return nil, fmt.Errorf("store: lease: %w", domain.InvalidField("ttl", ttl.String(), "must be positive"))
	}
	for _, p := range subnets {
		if err := checkSubnet(p); err != nil {
			return nil, fmt.Errorf("store: lease: %w", err)
		}
	}
	var out []domain.Leased
	// Start at a random subnet so that one busy subnet does not starve
	// the others for an agent serving several.
	start := 0
	if len(subnets) > 1 {
		start = int(randUint32() % uint32(len(subnets)))
	}
	for i := range subnets {
		want := max - len(out)
		if want == 0 {
			break
		}
		subnet := subnets[(start+i)%len(subnets)].Masked()
		got, err := q.leaseOne(ctx, agentID, subnet, want, ttl)
		out = append(out, got...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

func (q *LeaseQueue) leaseOne(ctx context.Context, agentID string, subnet netip.Prefix, want int, ttl time.Duration) ([]domain.Leased, error) {
	now := q.s.now()
	deadline := now.Add(ttl)
	args := make([]any, 0, 5+want)
	args = append(args, q.jobPrefix(subnet), agentID, ms(now), ms(deadline), want)
	for range want {
		args = append(args, newToken())
	}
	res, err := leaseScript.Run(ctx, q.s.rdb, []string{q.pendingKey(subnet), q.leasedKey(subnet)}, args...).Slice()
	if err != nil {
		return nil, fmt.Errorf("store: lease %s: %w", subnet, err)
	}
	out := make([]domain.Leased, 0, len(res)/4)
	for i := 0; i+3 < len(res); i += 4 {
		id, _ := res[i].(string)
		tok, _ := res[i+1].(string)
		blob, _ := res[i+2].(string)
		att, _ := res[i+3].(int64)
		pt, err := q.s.open(q.jobKey(subnet, id), []byte(blob))
		if err != nil {
			// The job stays leased and will come back after the TTL;
			// a wrong site key is an operator problem worth surfacing.
			return out, fmt.Errorf("store: lease %s: open payload of %s: %w", subnet, id, err)
		}
		out = append(out, domain.Leased{Subnet: subnet, JobID: id, Token: tok, Payload: pt,
			Attempt: int(att), Deadline: time.UnixMilli(ms(deadline))})
	}
	return out, nil
}

func newToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand never fails on supported platforms
	return hex.EncodeToString(b)
}

func randUint32() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// extendScript: ARGV token, deadline, id[, new token]. 1 ok, 0 lost, 2
// completed. A new token ends the caller's hold (Defer).
var extendScript = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 's')
if not st or redis.call('HGET', KEYS[1], 't') ~= ARGV[1] then return 0 end
if st == 'completed' then return 2 end
if st ~= 'leased' then return 0 end
redis.call('HSET', KEYS[1], 'd', ARGV[2])
if ARGV[4] and ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 't', ARGV[4]) end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 1
`)

// Extend moves a lease's deadline to now+ttl. A stale token is
// domain.ErrLeaseLost; a job already completed with this token is
// domain.ErrAlreadyCompleted. A lease past its deadline but not yet reaped can
// still be extended: nobody else holds the job.
func (q *LeaseQueue) Extend(ctx context.Context, subnet netip.Prefix, jobID, token string, ttl time.Duration) (time.Time, error) {
	if err := errors.Join(checkSubnet(subnet), checkJobID(jobID)); err != nil {
		return time.Time{}, fmt.Errorf("store: extend lease: %w", err)
	}
	if ttl <= 0 {
		return time.Time{}, fmt.Errorf("store: extend lease: %w", domain.InvalidField("ttl", ttl.String(), "must be positive"))
	}
	subnet = subnet.Masked()
	deadline := time.UnixMilli(ms(q.s.now().Add(ttl)))
	n, err := extendScript.Run(ctx, q.s.rdb, []string{q.jobKey(subnet, jobID), q.leasedKey(subnet)},
		token, ms(deadline), jobID).Int()
	if err != nil {
		return time.Time{}, fmt.Errorf("store: extend lease %s: %w", jobID, err)
	}
	switch n {
	case 0:
		return time.Time{}, fmt.Errorf("store: extend lease %s: %w", jobID, domain.ErrLeaseLost)
	case 2:
		return time.Time{}, fmt.Errorf("store: extend lease %s: %w", jobID, domain.ErrAlreadyCompleted)
	}
	return deadline, nil
}

// Defer ends the holder's lease on a job that failed but will be retried:
// the reaper gives it out again after delay. The old token stops working,
// as after a Complete. Errors are those of Extend.
func (q *LeaseQueue) Defer(ctx context.Context, subnet netip.Prefix, jobID, token string, delay time.Duration) error {
	if err := errors.Join(checkSubnet(subnet), checkJobID(jobID)); err != nil {
		return fmt.Errorf("store: defer job: %w", err)
	}
	subnet = subnet.Masked()
	// A token nobody holds: a heartbeat already on its way cannot stretch
	// the wait back to a full lease.
	n, err := extendScript.Run(ctx, q.s.rdb, []string{q.jobKey(subnet, jobID), q.leasedKey(subnet)},
		token, ms(q.s.now().Add(max(delay, 0))), jobID, newToken()).Int()
	if err != nil {
		return fmt.Errorf("store: defer job %s: %w", jobID, err)
	}
	switch n {
	case 0:
		return fmt.Errorf("store: defer job %s: %w", jobID, domain.ErrLeaseLost)
	case 2:
		return fmt.Errorf("store: defer job %s: %w", jobID, domain.ErrAlreadyCompleted)
	}
	return nil
}

// ExtendMany extends many leases in one pipelined round trip (an agent's
// batched heartbeat). errs[i] is nil, domain.ErrLeaseLost or
// domain.ErrAlreadyCompleted (wrapped) for refs[i]; err is set only when the
// round trip itself failed.
func (q *LeaseQueue) ExtendMany(ctx context.Context, refs []domain.LeaseRef, ttl time.Duration) (deadline time.Time, errs []error, err error) {
	if ttl <= 0 {
		return time.Time{}, nil, fmt.Errorf("store: extend leases: %w", domain.InvalidField("ttl", ttl.String(), "must be positive"))
	}
	deadline = time.UnixMilli(ms(q.s.now().Add(ttl)))
	errs = make([]error, len(refs))
	cmds := make([]*redis.Cmd, len(refs))
	_, err = q.s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, r := range refs {
			if e := errors.Join(checkSubnet(r.Subnet), checkJobID(r.JobID)); e != nil {
				errs[i] = fmt.Errorf("store: extend lease: %w", e)
				continue
			}
			sn := r.Subnet.Masked()
			// EVAL, not EVALSHA: a pipeline cannot fall back on NOSCRIPT.
			cmds[i] = extendScript.Eval(ctx, p, []string{q.jobKey(sn, r.JobID), q.leasedKey(sn)},
				r.Token, ms(deadline), r.JobID)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return time.Time{}, nil, fmt.Errorf("store: extend leases: %w", err)
	}
	for i, c := range cmds {
		if c == nil {
			continue
		}
		n, e := c.Int()
		switch {
		case e != nil:
			errs[i] = fmt.Errorf("store: extend lease %s: %w", refs[i].JobID, e)
		case n == 0:
			errs[i] = fmt.Errorf("store: extend lease %s: %w", refs[i].JobID, domain.ErrLeaseLost)
		case n == 2:
			errs[i] = fmt.Errorf("store: extend lease %s: %w", refs[i].JobID, domain.ErrAlreadyCompleted)
		}
	}
	return deadline, errs, nil
}

// completeScript: ARGV token, now, retention ms, id. 1 ok, 0 lost, 2 already.
var completeScript = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 's')
if not st or redis.call('HGET', KEYS[1], 't') ~= ARGV[1] then return 0 end
if st == 'completed' then return 2 end
if st ~= 'leased' then return 0 end
redis.call('HSET', KEYS[1], 's', 'completed', 'f', ARGV[2])
redis.call('HDEL', KEYS[1], 'p', 'd')
redis.call('ZREM', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`)

// Complete ends a lease: the job is done and its payload is dropped. A
// stale token (the lease expired and the job was leased again, or
// dead-lettered) is domain.ErrLeaseLost; repeating a successful Complete
// is domain.ErrAlreadyCompleted and changes nothing. The caller records the
// job's result separately (FinishJob is idempotent too).
func (q *LeaseQueue) Complete(ctx context.Context, subnet netip.Prefix, jobID, token string) error {
	if err := errors.Join(checkSubnet(subnet), checkJobID(jobID)); err != nil {
		return fmt.Errorf("store: complete lease: %w", err)
	}
	subnet = subnet.Masked()
	n, err := completeScript.Run(ctx, q.s.rdb, []string{q.jobKey(subnet, jobID), q.leasedKey(subnet)},
		token, ms(q.s.now()), q.retention.Milliseconds(), jobID).Int()
	if err != nil {
		return fmt.Errorf("store: complete lease %s: %w", jobID, err)
	}
	switch n {
	case 0:
		return fmt.Errorf("store: complete lease %s: %w", jobID, domain.ErrLeaseLost)
	case 2:
		return fmt.Errorf("store: complete lease %s: %w", jobID, domain.ErrAlreadyCompleted)
	}
	return nil
}

// releaseScript: ARGV token, id. 1 ok, 0 lost, 2 completed.
var releaseScript = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 's')
if not st or redis.call('HGET', KEYS[1], 't') ~= ARGV[1] then return 0 end
if st == 'completed' then return 2 end
if st ~= 'leased' then return 0 end
redis.call('HSET', KEYS[1], 's', 'pending')
redis.call('HDEL', KEYS[1], 't', 'g', 'd')
redis.call('HINCRBY', KEYS[1], 'a', -1)
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('LPUSH', KEYS[3], ARGV[2])
return 1
`)

// Release gives a leased job back at once, at the head of the queue,
// without counting the attempt (an agent shutting down gracefully).
func (q *LeaseQueue) Release(ctx context.Context, subnet netip.Prefix, jobID, token string) error {
	if err := errors.Join(checkSubnet(subnet), checkJobID(jobID)); err != nil {
		return fmt.Errorf("store: release lease: %w", err)
	}
	subnet = subnet.Masked()
	n, err := releaseScript.Run(ctx, q.s.rdb,
		[]string{q.jobKey(subnet, jobID), q.leasedKey(subnet), q.pendingKey(subnet)}, token, jobID).Int()
	if err != nil {
		return fmt.Errorf("store: release lease %s: %w", jobID, err)
	}
	switch n {
	case 0:
		return fmt.Errorf("store: release lease %s: %w", jobID, domain.ErrLeaseLost)
	case 2:
		return fmt.Errorf("store: release lease %s: %w", jobID, domain.ErrAlreadyCompleted)
	}
	q.wake(ctx, subnet)
	return nil
}

// reapScript returns expired leases (deadline <= now) to pending, or to
// the dead list once attempts reach the maximum. Dead jobs lose their
// payload and expire after the retention.
// ARGV: job key prefix, now, max attempts, limit, retention ms, dead cap.
// Returns {requeued, scanned, dead ids...}.
var reapScript = redis.NewScript(`
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[4]))
local out = {0, #ids}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local jk = ARGV[1] .. id
  if redis.call('HGET', jk, 's') == 'leased' then
    redis.call('HDEL', jk, 't', 'g', 'd')
    local a = tonumber(redis.call('HGET', jk, 'a') or '0')
    if a >= tonumber(ARGV[3]) then
      redis.call('HSET', jk, 's', 'dead', 'f', ARGV[2])
      redis.call('HDEL', jk, 'p')
      redis.call('PEXPIRE', jk, ARGV[5])
      redis.call('RPUSH', KEYS[3], id)
      out[#out + 1] = id
    else
      redis.call('HSET', jk, 's', 'pending')
      redis.call('RPUSH', KEYS[2], id)
      out[1] = out[1] + 1
    end
  end
end
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[6]), -1)
return out
`)

// Reap returns a subnet's leases whose deadline is at or before now to
// pending, and dead-letters jobs that used MaxAttempts leases. It returns
// the dead-lettered IDs so the caller can record the failure. Any replica
// may reap; the script is atomic.
func (q *LeaseQueue) Reap(ctx context.Context, subnet netip.Prefix, now time.Time) (domain.ReapResult, error) {
	if err := checkSubnet(subnet); err != nil {
		return domain.ReapResult{}, fmt.Errorf("store: reap: %w", err)
	}
	subnet = subnet.Masked()
	const chunk = 500
	keys := []string{q.leasedKey(subnet), q.pendingKey(subnet), q.deadKey(subnet)}
	var rr domain.ReapResult
	for {
		res, err := reapScript.Run(ctx, q.s.rdb, keys, q.jobPrefix(subnet), ms(now), q.maxAttempts,
			chunk, q.retention.Milliseconds(), q.deadCap).Slice()
		if err != nil {
			return rr, fmt.Errorf("store: reap %s: %w", subnet, err)
		}
		requeued, _ := res[0].(int64)
		scanned, _ := res[1].(int64)
		rr.Requeued += int(requeued)
		for _, v := range res[2:] {
			if id, ok := v.(string); ok {
				rr.Dead = append(rr.Dead, id)
			}
		}
		if requeued > 0 {
			q.wake(ctx, subnet)
		}
		if scanned < chunk {
			return rr, nil
		}
	}
}

// DeadLetters lists a subnet's dead-lettered job IDs, oldest first.
func (q *LeaseQueue) DeadLetters(ctx context.Context, subnet netip.Prefix) ([]string, error) {
	if err := checkSubnet(subnet); err != nil {
		return nil, fmt.Errorf("store: dead letters: %w", err)
	}
	ids, err := q.s.rdb.LRange(ctx, q.deadKey(subnet.Masked()), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("store: dead letters of %s: %w", subnet, err)
	}
	return ids, nil
}

// Subnets lists every subnet that ever had a job, for the reaper.
func (q *LeaseQueue) Subnets(ctx context.Context) ([]netip.Prefix, error) {
	vals, err := q.s.rdb.SMembers(ctx, q.queuesKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("store: queue subnets: %w", err)
	}
	out := make([]netip.Prefix, 0, len(vals))
	for _, v := range vals {
		if p, err := netip.ParsePrefix(v); err == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// Job reports a job's queue state; a job unknown (or past retention) is
// domain.ErrNotFound.
func (q *LeaseQueue) Job(ctx context.Context, subnet netip.Prefix, jobID string) (domain.QueueJob, error) {
	subnet = subnet.Masked()
	h, err := q.s.rdb.HMGet(ctx, q.jobKey(subnet, jobID), "s", "a", "g", "d").Result()
	if err != nil {
		return domain.QueueJob{}, fmt.Errorf("store: queue job %s: %w", jobID, err)
	}
	st, _ := h[0].(string)
	if st == "" {
		return domain.QueueJob{}, fmt.Errorf("store: queue job %s: %w", jobID, domain.ErrNotFound)
	}
	str := func(v any) string { s, _ := v.(string); return s }
	j := domain.QueueJob{Subnet: subnet, JobID: jobID, State: st, Attempts: atoi(str(h[1])), Agent: str(h[2])}
	if d, err := strconv.ParseInt(str(h[3]), 10, 64); err == nil {
		j.Deadline = time.UnixMilli(d)
	}
	return j, nil
}

// Stats counts a subnet's pending, leased and dead jobs.
func (q *LeaseQueue) Stats(ctx context.Context, subnet netip.Prefix) (domain.QueueStats, error) {
	subnet = subnet.Masked()
	var p, l, d *redis.IntCmd
	_, err := q.s.rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
		p = pl.LLen(ctx, q.pendingKey(subnet))
		l = pl.ZCard(ctx, q.leasedKey(subnet))
		d = pl.LLen(ctx, q.deadKey(subnet))
		return nil
	})
	if err != nil {
		return domain.QueueStats{}, fmt.Errorf("store: queue stats %s: %w", subnet, err)
	}
	return domain.QueueStats{Pending: p.Val(), Leased: l.Val(), Dead: d.Val()}, nil
}

// ListenWakeups holds the process's one subscription to the wake-up
// channel and calls wake with each subnet that got work, until ctx ends.
// subscribed is called once the subscription is confirmed. go-redis
// resubscribes by itself after a reconnect.
func (q *LeaseQueue) ListenWakeups(ctx context.Context, subscribed func(), wake func(netip.Prefix)) error {
	ps := q.s.rdb.Subscribe(ctx, q.wakeChannel())
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("store: subscribe wake-ups: %w", err)
	}
	if subscribed != nil {
		subscribed()
	}
	ch := ps.Channel()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-ch:
			if !ok {
				return errors.New("store: wake-up subscription closed")
			}
			if p, err := netip.ParsePrefix(m.Payload); err == nil {
				wake(p)
			}
		}
	}
}
