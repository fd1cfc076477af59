package domain

import (
	"errors"
	"net/netip"
	"time"
)

// The phase-2 lease queue's model: what a lease hands out and what the
// queue knows of a job.

// ErrAlreadyCompleted reports a Complete repeated with the token that
// completed the job: the first call won, nothing changed.
var ErrAlreadyCompleted = errors.New("lease already completed")

// Leased is one job handed to an agent.
type Leased struct {
	Subnet   netip.Prefix
	JobID    string
	Token    string // proves the lease in Extend, Complete and Release
	Payload  []byte // opened; holds secrets, never log it
	Attempt  int    // 1 on the first lease
	Deadline time.Time
}

// QueueJob is what the queue knows about one job (no payload).
type QueueJob struct {
	Subnet   netip.Prefix
	JobID    string
	State    string // pending, leased, completed, dead
	Attempts int
	Agent    string
	Deadline time.Time // zero unless leased
}

// QueueStats counts one subnet's jobs.
type QueueStats struct {
	Pending, Leased, Dead int64
}

// ReapResult is what one Reap did.
type ReapResult struct {
	Requeued int
	Dead     []string // job IDs dead-lettered by this call
}

// LeaseRef names one lease for ExtendMany.
type LeaseRef struct {
	Subnet netip.Prefix
	JobID  string
	Token  string
}
