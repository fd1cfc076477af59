package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/amtops/amtops/internal/domain"
)

// lateCheck follows the leases a fault strands (a frozen or cut-off
// agent's): which expired and were reaped while the agent was away, and,
// at the end, whether a result from such a stale lease was accepted.
//
// Each lease yields at most one accepted result (Complete or Defer ends
// it), and after the agent came back every lease of a reaped job is a new
// one, counted in the job's attempts. So a reaped job with more results
// accepted after the return than leases granted after it took a stale
// lease's result.
type lateCheck struct {
	jobs     map[string]*stranded // by job ID
	returned time.Time            // the agent resumed, the link healed
	logSize  map[string]int64     // agents' log sizes at the return
}

type stranded struct {
	subnet   netip.Prefix
	attempts int // when the fault struck
	reaped   bool
	// attemptsBack is the job's attempt count just before the return.
	attemptsBack int
}

// leasedKey is the lease queue's sorted set of one subnet's leased jobs
// (server/store/leasequeue.go: <prefix>:{q:<subnet>}:leased).
func leasedKey(p netip.Prefix) string { return "amtops:{q:" + p.Masked().String() + "}:leased" }

// snapshot records the subnets' leased jobs as the fault strikes.
func (l *lateCheck) snapshot(ctx context.Context, r *runState, subnets []netip.Prefix) error {
	l.jobs = map[string]*stranded{}
	for _, p := range subnets {
		ids, err := r.f.Redis().ZRange(ctx, leasedKey(p), 0, -1).Result()
		if err != nil {
			return fmt.Errorf("leases of %s: %w", p, err)
		}
		for _, id := range ids {
			qj, err := r.q.Job(ctx, p, id)
			if err != nil {
				return err
			}
			if qj.State == "leased" {
				l.jobs[id] = &stranded{subnet: p, attempts: qj.Attempts}
			}
		}
	}
	return nil
}

// beforeReturn notes, just before the agent comes back, which stranded
// leases are gone: no agent could lease the job meanwhile, so a job not
// leased any more, or leased again, lost the stale lease.
func (l *lateCheck) beforeReturn(ctx context.Context, r *runState) error {
	for id, s := range l.jobs {
		qj, err := r.q.Job(ctx, s.subnet, id)
		if err != nil {
			return err
		}
		s.reaped = qj.State != "leased" || qj.Attempts != s.attempts
		s.attemptsBack = qj.Attempts
	}
	l.logSize = map[string]int64{}
	for i := range r.f.Subnets {
		name := "agent-" + itoa(i)
		if fi, err := os.Stat(filepath.Join(r.f.LogDir(), name+".log")); err == nil {
			l.logSize[name] = fi.Size()
		}
	}
	return nil
}

func (l *lateCheck) reaped() int {
	n := 0
	for _, s := range l.jobs {
		if s.reaped {
			n++
		}
	}
	return n
}

// lateVerdict is what became of the stranded leases.
type lateVerdict struct {
	stranded, reaped int
	// accepted are conflicts: a stale lease's result taken.
	accepted []string
	// refused counts the agents' log lines after the return that show a
	// stale attempt dropped: its lease lost, its result refused.
	refused int
}

// verdict compares each reaped job's results after the return with the
// leases granted after it. events are the jobs' operations-log events.
func (l *lateCheck) verdict(ctx context.Context, r *runState, events map[string][]domain.OperationEvent) (lateVerdict, error) {
	v := lateVerdict{stranded: len(l.jobs)}
	if l.returned.IsZero() {
		return v, nil
	}
	for id, s := range l.jobs {
		if !s.reaped {
			continue
		}
		v.reaped++
		qj, err := r.q.Job(ctx, s.subnet, id)
		if err != nil {
			return v, err
		}
		leases := qj.Attempts - s.attemptsBack
		results := 0
		for _, e := range events[id] {
			if isResult(e) && !e.Time.Before(l.returned) {
				results++
			}
		}
		if results > leases {
			v.accepted = append(v.accepted, fmt.Sprintf("job %s: %d results accepted after the agent came back, %d leases granted since: a stale lease's result was taken",
				id, results, leases))
		}
	}
	n, err := l.refusedInLogs(r)
	v.refused = n
	return v, err
}

// staleLines are the agent's messages for an attempt whose lease was
// gone: dropped, or its result refused.
var staleLines = map[string]bool{
	"lease lost, job abandoned":                                     true,
	"lease lost before the result was recorded":                     true,
	"complete failed":                                               true,
	"job leased again: stale attempt stopped":                       true,
	"lease ran out with no heartbeat extending it: attempt stopped": true,
}

func (l *lateCheck) refusedInLogs(r *runState) (int, error) {
	n := 0
	for name, off := range l.logSize {
		fh, err := os.Open(filepath.Join(r.f.LogDir(), name+".log"))
		if err != nil {
			return n, err
		}
		if _, err := fh.Seek(off, 0); err != nil {
			fh.Close()
			return n, err
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var line struct {
				Message string `json:"message"`
				Job     string `json:"job"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && staleLines[line.Message] && l.jobs[line.Job] != nil {
				n++
			}
		}
		fh.Close()
		if err := sc.Err(); err != nil {
			return n, err
		}
	}
	return n, nil
}

// isResult is an accepted phase-2 result in the operations log: the
// server's "complete" event, whatever the outcome.
func isResult(e domain.OperationEvent) bool {
	return e.Phase == 2 && e.Step == "complete" &&
		(e.Outcome == domain.OutcomeOK || e.Outcome == domain.OutcomeFailed || e.Outcome == domain.OutcomeRetrying)
}
