package domain

import (
	"strings"
	"time"
)

// JobKind is the operation a job performs on one device.
type JobKind string

const (
	KindProvision    JobKind = "provision"
	KindUpdate       JobKind = "update"        // S12–S15
	KindRemoveConfig JobKind = "remove-config" // S16, identity kept
	KindRemoveAll    JobKind = "remove-all"    // S16, config and identity
	KindDiscover     JobKind = "discover"      // S21
)

// JobKinds lists every kind.
var JobKinds = []JobKind{KindProvision, KindUpdate, KindRemoveConfig, KindRemoveAll, KindDiscover}

// Valid reports whether k is a known kind.
func (k JobKind) Valid() bool {
	for _, v := range JobKinds {
		if k == v {
			return true
		}
	}
	return false
}

// JobState is a job's place in its state machine:
//
//	queued → phase1 → phase2 → succeeded
//	   any non-final → failed | cancelled
//
// phase2 may go back to phase1 only through a new attempt of the whole job.
type JobState string

const (
	JobQueued    JobState = "queued"
	JobPhase1    JobState = "phase1"
	JobPhase2    JobState = "phase2"
	JobSucceeded JobState = "succeeded"
	JobFailed    JobState = "failed"
	JobCancelled JobState = "cancelled"
)

// Final reports whether the state is terminal.
func (s JobState) Final() bool {
	return s == JobSucceeded || s == JobFailed || s == JobCancelled
}

var jobTransitions = map[JobState][]JobState{
	JobQueued: {JobPhase1, JobPhase2, JobSucceeded, JobFailed, JobCancelled},
	JobPhase1: {JobPhase1, JobPhase2, JobSucceeded, JobFailed, JobCancelled},
	JobPhase2: {JobPhase2, JobSucceeded, JobFailed, JobCancelled},
}

// CanMove reports whether a job may go from s to next.
func (s JobState) CanMove(next JobState) bool {
	for _, n := range jobTransitions[s] {
		if n == next {
			return true
		}
	}
	return false
}

// Job is one operation on one device. Its ID is derived from the batch and
// the device so that retries and duplicate requests address the same job.
type Job struct {
	ID       string   `json:"id"`
	BatchID  string   `json:"batch_id"`
	DeviceID string   `json:"device_id"`
	Kind     JobKind  `json:"kind"`
	State    JobState `json:"state"`
	Attempts int      `json:"attempts"`
	// Phase2Attempts is how many leases phase 2 had used when the job
	// last reported ("attempt N" in the operations log).
	Phase2Attempts int       `json:"phase2_attempts,omitempty"`
	LastError      string    `json:"last_error,omitempty"`
	ErrorStep      string    `json:"error_step,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
}

// JobID derives the job ID from batch and device.
func JobID(batchID, deviceID string) string { return batchID + ":" + deviceID }

// SplitJobID splits a JobID into batch and device; batch IDs hold no ':'
// while device IDs may (ip-<IPv6>).
func SplitJobID(id string) (batchID, deviceID string, ok bool) {
	batchID, deviceID, ok = strings.Cut(id, ":")
	return batchID, deviceID, ok && batchID != "" && deviceID != ""
}

// JobResult is how an agent ends its lease on a phase-2 job.
type JobResult string

const (
	ResultSucceeded       JobResult = "succeeded"
	ResultFailed          JobResult = "failed"           // retryable: the job comes back after a delay
	ResultFailedPermanent JobResult = "failed-permanent" // retrying cannot help
	// ResultReleased gives the job back at once without counting the
	// attempt: an agent shutting down hands back work it could not finish.
	ResultReleased JobResult = "released"
	// ResultCancelled ends a job whose batch was cancelled while it ran.
	ResultCancelled JobResult = "cancelled"
)

// JobResults lists every result.
var JobResults = []JobResult{ResultSucceeded, ResultFailed, ResultFailedPermanent, ResultReleased, ResultCancelled}

// Batch is a bulk operation: one job per device, with exact counters.
type Batch struct {
	ID        string  `json:"id"`
	Kind      JobKind `json:"kind"`
	Origin    string  `json:"origin"` // admin, sweep, discovery
	Requester string  `json:"requester,omitempty"`
	Total     int     `json:"total"`
	Succeeded int     `json:"succeeded"`
	Failed    int     `json:"failed"`
	Cancelled int     `json:"cancelled"`
	// Options are kind-specific: suppress_auto for removals, confirm for
	// updates over 802.1X links.
	Options         map[string]string `json:"options,omitempty"`
	CreatedAt       time.Time         `json:"created_at"`
	CancelRequested bool              `json:"cancel_requested,omitempty"`
	// Warnings are what the administrator should know from the start,
	// such as subnets no live agent serves.
	Warnings []string `json:"warnings,omitempty"`
}

// Done reports whether every job in the batch has ended.
func (b Batch) Done() bool { return b.Succeeded+b.Failed+b.Cancelled >= b.Total }

// Pending is the number of jobs not yet ended.
func (b Batch) Pending() int { return b.Total - b.Succeeded - b.Failed - b.Cancelled }
