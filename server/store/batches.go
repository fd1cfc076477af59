package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/amtops/amtops/internal/domain"
)

// A batch is a hash (immutable JSON plus live counters) and each job a hash
// (immutable JSON plus live state), all under the batch's own hash tag so
// that a script can move a job and bump the batch counter atomically.
func (s *Store) batchTag(id string) string           { return "{b:" + id + "}" }
func (s *Store) batchKey(id string) string           { return s.key(s.batchTag(id), "batch") }
func (s *Store) batchJobsKey(id string) string       { return s.key(s.batchTag(id), "jobs") }
func (s *Store) jobKey(batchID, jobID string) string { return s.key(s.batchTag(batchID), "job", jobID) }
func (s *Store) jobPrefix(batchID string) string     { return s.key(s.batchTag(batchID), "job") + ":" }
func (s *Store) batchesKey() string                  { return s.key("batches") }

// Batch and job hash fields.
const (
	fJSON      = "json"
	fState     = "state"
	fAttempts  = "attempts"
	fAttempts2 = "attempts2"
	fLastError = "last_error"
	fErrStep   = "error_step"
	fUpdated   = "updated_at" // Unix ms
	fCancelReq = "cancel_requested"
)

// CreateBatch stores a batch and its jobs at once. It is idempotent by
// batch ID: when the batch exists nothing changes and created is false.
// Jobs get the batch ID, state queued (unless set) and the store's clock.
func (s *Store) CreateBatch(ctx context.Context, b domain.Batch, jobs []domain.Job) (created bool, err error) {
	if err := s.checkBatch(&b, jobs); err != nil {
		return false, fmt.Errorf("store: create batch: %w", err)
	}
	now := s.now().UTC()
	if b.CreatedAt.IsZero() {
		b.CreatedAt = now
	}
	b.Total, b.Succeeded, b.Failed, b.Cancelled, b.CancelRequested = len(jobs), 0, 0, 0, false
	bj, err := json.Marshal(b)
	if err != nil {
		return false, fmt.Errorf("store: encode batch %s: %w", b.ID, err)
	}
	key := s.batchKey(b.ID)
	err = s.watchRetry(ctx, func(tx *redis.Tx) error {
		created = false
		n, err := tx.Exists(ctx, key).Result()
		if err != nil || n > 0 {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for i := range jobs {
				j := jobs[i]
				if j.CreatedAt.IsZero() {
					j.CreatedAt = now
				}
				j.UpdatedAt = now
				jj, err := json.Marshal(j)
				if err != nil {
					return fmt.Errorf("encode job %s: %w", j.ID, err)
				}
				p.HSet(ctx, s.jobKey(b.ID, j.ID), fJSON, jj, fState, string(j.State),
					fAttempts, j.Attempts, fUpdated, ms(now))
				p.ZAdd(ctx, s.batchJobsKey(b.ID), redis.Z{Score: 0, Member: j.ID})
			}
			// The batch header goes last in the same MULTI: its presence
			// is what makes the batch exist.
			p.HSet(ctx, key, fJSON, bj, string(domain.JobSucceeded), 0,
				string(domain.JobFailed), 0, string(domain.JobCancelled), 0, fCancelReq, 0)
			created = true
			return nil
		})
		return err
	}, key)
	if err != nil {
		return false, fmt.Errorf("store: create batch %s: %w", b.ID, err)
	}
	// The listing index is another slot; adding it again on a repeat
	// repairs a crash between the two writes.
	if err := s.rdb.ZAdd(ctx, s.batchesKey(), redis.Z{Score: float64(ms(b.CreatedAt)), Member: b.ID}).Err(); err != nil {
		return created, fmt.Errorf("store: index batch %s: %w", b.ID, err)
	}
	return created, nil
}

func (s *Store) checkBatch(b *domain.Batch, jobs []domain.Job) error {
	if b.ID == "" {
		return domain.InvalidField("batch.id", "", "must not be empty")
	}
	if !b.Kind.Valid() {
		return domain.InvalidField("batch.kind", string(b.Kind), "unknown kind")
	}
	seen := make(map[string]bool, len(jobs))
	for i := range jobs {
		j := &jobs[i]
		if j.BatchID == "" {
			j.BatchID = b.ID
		}
		if j.Kind == "" {
			j.Kind = b.Kind
		}
		if j.State == "" {
			j.State = domain.JobQueued
		}
		switch {
		case j.ID == "":
			return domain.InvalidField("job.id", "", fmt.Sprintf("job %d: must not be empty", i))
		case j.BatchID != b.ID:
			return domain.InvalidField("job.batch_id", j.BatchID, "differs from batch "+b.ID)
		case j.DeviceID == "":
			return domain.InvalidField("job.device_id", "", "job "+j.ID+": must not be empty")
		case !j.Kind.Valid():
			return domain.InvalidField("job.kind", string(j.Kind), "unknown kind")
		case j.State.Final():
			return domain.InvalidField("job.state", string(j.State), "a new job cannot be final")
		case seen[j.ID]:
			return domain.InvalidField("job.id", j.ID, "appears twice in the batch")
		}
		seen[j.ID] = true
	}
	return nil
}

// GetBatch returns a batch with its live counters.
func (s *Store) GetBatch(ctx context.Context, id string) (domain.Batch, error) {
	h, err := s.rdb.HGetAll(ctx, s.batchKey(id)).Result()
	if err != nil {
		return domain.Batch{}, fmt.Errorf("store: get batch %s: %w", id, err)
	}
	if len(h) == 0 {
		return domain.Batch{}, fmt.Errorf("store: get batch %s: %w", id, domain.ErrNotFound)
	}
	var b domain.Batch
	if err := json.Unmarshal([]byte(h[fJSON]), &b); err != nil {
		return domain.Batch{}, fmt.Errorf("store: decode batch %s: %w", id, err)
	}
	b.Succeeded = atoi(h[string(domain.JobSucceeded)])
	b.Failed = atoi(h[string(domain.JobFailed)])
	b.Cancelled = atoi(h[string(domain.JobCancelled)])
	b.CancelRequested = h[fCancelReq] == "1"
	return b, nil
}

// ListBatches returns up to limit batch IDs, newest first.
func (s *Store) ListBatches(ctx context.Context, limit int) ([]string, error) {
	if limit <= 0 {
		limit = 100
	}
	ids, err := s.rdb.ZRevRange(ctx, s.batchesKey(), 0, int64(limit-1)).Result()
	if err != nil {
		return nil, fmt.Errorf("store: list batches: %w", err)
	}
	return ids, nil
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// GetJob returns one job with its live state.
func (s *Store) GetJob(ctx context.Context, batchID, jobID string) (domain.Job, error) {
	h, err := s.rdb.HGetAll(ctx, s.jobKey(batchID, jobID)).Result()
	if err != nil {
		return domain.Job{}, fmt.Errorf("store: get job %s: %w", jobID, err)
	}
	if len(h) == 0 {
		return domain.Job{}, fmt.Errorf("store: get job %s: %w", jobID, domain.ErrNotFound)
	}
	j, err := decodeJob(h)
	if err != nil {
		return domain.Job{}, fmt.Errorf("store: decode job %s: %w", jobID, err)
	}
	return j, nil
}

func decodeJob(h map[string]string) (domain.Job, error) {
	var j domain.Job
	if err := json.Unmarshal([]byte(h[fJSON]), &j); err != nil {
		return j, err
	}
	j.State = domain.JobState(h[fState])
	j.Attempts = atoi(h[fAttempts])
	j.Phase2Attempts = atoi(h[fAttempts2])
	j.LastError = h[fLastError]
	j.ErrorStep = h[fErrStep]
	if v, err := strconv.ParseInt(h[fUpdated], 10, 64); err == nil {
		j.UpdatedAt = time.UnixMilli(v).UTC()
	}
	return j, nil
}

// ListJobs pages through a batch's jobs in ID order.
func (s *Store) ListJobs(ctx context.Context, batchID string, f domain.JobFilter) (domain.JobPage, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 10000)
	chunk := int64(max(limit, 100))
	cursor := f.Cursor
	var page domain.JobPage
	for {
		lo := "-"
		if cursor != "" {
			lo = "(" + cursor
		}
		ids, err := s.rdb.ZRangeByLex(ctx, s.batchJobsKey(batchID), &redis.ZRangeBy{Min: lo, Max: "+", Count: chunk}).Result()
		if err != nil {
			return domain.JobPage{}, fmt.Errorf("store: list jobs of %s: %w", batchID, err)
		}
		cmds := make([]*redis.MapStringStringCmd, len(ids))
		_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range ids {
				cmds[i] = p.HGetAll(ctx, s.jobKey(batchID, id))
			}
			return nil
		})
		if err != nil {
			return domain.JobPage{}, fmt.Errorf("store: list jobs of %s: %w", batchID, err)
		}
		for i, id := range ids {
			cursor = id
			h := cmds[i].Val()
			if len(h) == 0 {
				continue
			}
			j, err := decodeJob(h)
			if err != nil {
				return domain.JobPage{}, fmt.Errorf("store: decode job %s: %w", id, err)
			}
			if f.State != "" && j.State != f.State {
				continue
			}
			page.Jobs = append(page.Jobs, j)
			if len(page.Jobs) == limit {
				page.Next = id
				return page, nil
			}
		}
		if int64(len(ids)) < chunk {
			return page, nil
		}
	}
}

// finishJobScript moves a job to a final state and bumps the batch's
// counter for that state, exactly once: a job already final is left alone.
// Returns 1 when finished now, 0 when it was already final, -1 when the job
// does not exist.
var finishJobScript = redis.NewScript(`
local st = redis.call('HGET', KEYS[2], 'state')
if not st then return -1 end
if st == 'succeeded' or st == 'failed' or st == 'cancelled' then return 0 end
redis.call('HSET', KEYS[2], 'state', ARGV[1], 'error_step', ARGV[2], 'last_error', ARGV[3], 'updated_at', ARGV[4])
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
return 1
`)

// FinishJob moves a job to a final state (succeeded, failed or cancelled)
// and bumps the batch counter exactly once. finished is false, with a nil
// error, when the job was already final: duplicates are harmless.
func (s *Store) FinishJob(ctx context.Context, batchID, jobID string, state domain.JobState, errStep, errMsg string) (finished bool, err error) {
	if !state.Final() {
		return false, fmt.Errorf("store: finish job %s: %w", jobID, domain.InvalidField("job.state", string(state), "must be succeeded, failed or cancelled"))
	}
	n, err := finishJobScript.Run(ctx, s.rdb, []string{s.batchKey(batchID), s.jobKey(batchID, jobID)},
		string(state), errStep, errMsg, ms(s.now())).Int()
	if err != nil {
		return false, fmt.Errorf("store: finish job %s: %w", jobID, err)
	}
	switch n {
	case -1:
		return false, fmt.Errorf("store: finish job %s: %w", jobID, domain.ErrNotFound)
	case 0:
		return false, nil
	}
	return true, nil
}

// setAttempts2Script raises a job's phase-2 attempt count to ARGV[1]
// (never lowers it: reports may arrive out of order); a missing job is
// left alone.
var setAttempts2Script = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local cur = tonumber(redis.call('HGET', KEYS[1], 'attempts2') or '0')
if tonumber(ARGV[1]) > cur then redis.call('HSET', KEYS[1], 'attempts2', ARGV[1]) end
return 1
`)

// NotePhase2Attempts records that phase 2 of a job has used n leases.
func (s *Store) NotePhase2Attempts(ctx context.Context, batchID, jobID string, n int) error {
	if err := setAttempts2Script.Run(ctx, s.rdb, []string{s.jobKey(batchID, jobID)}, n).Err(); err != nil {
		return fmt.Errorf("store: note attempts of %s: %w", jobID, err)
	}
	return nil
}

// moveJobScript changes a job's state when its current state is one of
// ARGV[3..]; moving into phase1 counts an attempt. Returns {1, state} on
// success, {0, state} when refused, {-1} when missing.
var moveJobScript = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return {-1, ''} end
for i = 3, #ARGV do
  if st == ARGV[i] then
    redis.call('HSET', KEYS[1], 'state', ARGV[1], 'updated_at', ARGV[2])
    if ARGV[1] == 'phase1' then redis.call('HINCRBY', KEYS[1], 'attempts', 1) end
    return {1, st}
  end
end
return {0, st}
`)

// MoveJob makes a non-final transition allowed by domain.JobState.CanMove
// (queued → phase1 → phase2). Entering phase1 counts an attempt. A refused
// transition is domain.ErrConflict naming both states; use FinishJob for
// final states.
func (s *Store) MoveJob(ctx context.Context, batchID, jobID string, next domain.JobState) error {
	if next.Final() || !domain.JobQueued.CanMove(next) && !domain.JobPhase1.CanMove(next) {
		return fmt.Errorf("store: move job %s: %w", jobID, domain.InvalidField("job.state", string(next), "must be phase1 or phase2 (finish with FinishJob)"))
	}
	args := []any{string(next), ms(s.now())}
	for _, from := range []domain.JobState{domain.JobQueued, domain.JobPhase1, domain.JobPhase2} {
		if from.CanMove(next) {
			args = append(args, string(from))
		}
	}
	res, err := moveJobScript.Run(ctx, s.rdb, []string{s.jobKey(batchID, jobID)}, args...).Slice()
	if err != nil {
		return fmt.Errorf("store: move job %s: %w", jobID, err)
	}
	code, _ := res[0].(int64)
	cur, _ := res[1].(string)
	switch code {
	case -1:
		return fmt.Errorf("store: move job %s: %w", jobID, domain.ErrNotFound)
	case 0:
		return fmt.Errorf("store: move job %s: %s → %s: %w", jobID, cur, next, domain.ErrConflict)
	}
	return nil
}

// cancelChunkScript marks the batch cancel-requested and cancels up to
// ARGV[3] queued jobs after cursor ARGV[2], bumping the counter for each.
// Returns {cancelled, last id scanned, scanned count}, or {-1} when the
// batch is missing. Chunks keep each script short.
var cancelChunkScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, '', 0} end
redis.call('HSET', KEYS[1], 'cancel_requested', 1)
local lo = '-'
if ARGV[2] ~= '' then lo = '(' .. ARGV[2] end
local ids = redis.call('ZRANGEBYLEX', KEYS[2], lo, '+', 'LIMIT', 0, tonumber(ARGV[3]))
local n = 0
for _, id in ipairs(ids) do
  local jk = ARGV[1] .. id
  if redis.call('HGET', jk, 'state') == 'queued' then
    redis.call('HSET', jk, 'state', 'cancelled', 'updated_at', ARGV[4])
    redis.call('HINCRBY', KEYS[1], 'cancelled', 1)
    n = n + 1
  end
end
local last = ''
if #ids > 0 then last = ids[#ids] end
return {n, last, #ids}
`)

// CancelBatch marks the batch cancel-requested (running jobs see it and
// stop at the next step) and cancels every job still queued, with exact
// counters. It returns how many jobs this call cancelled.
func (s *Store) CancelBatch(ctx context.Context, batchID string) (cancelled int, err error) {
	const chunk = 500
	cursor := ""
	keys := []string{s.batchKey(batchID), s.batchJobsKey(batchID)}
	for {
		res, err := cancelChunkScript.Run(ctx, s.rdb, keys, s.jobPrefix(batchID), cursor, chunk, ms(s.now())).Slice()
		if err != nil {
			return cancelled, fmt.Errorf("store: cancel batch %s: %w", batchID, err)
		}
		n, _ := res[0].(int64)
		if n < 0 {
			return 0, fmt.Errorf("store: cancel batch %s: %w", batchID, domain.ErrNotFound)
		}
		cancelled += int(n)
		cursor, _ = res[1].(string)
		if scanned, _ := res[2].(int64); scanned < chunk {
			return cancelled, nil
		}
	}
}
