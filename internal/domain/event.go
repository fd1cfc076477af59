package domain

import "time"

// Outcome of one step in the operations log.
type Outcome string

const (
	OutcomeStarted  Outcome = "started"
	OutcomeOK       Outcome = "ok"
	OutcomeSkipped  Outcome = "skipped"
	OutcomeWarning  Outcome = "warning"
	OutcomeFailed   Outcome = "failed"
	OutcomeRetrying Outcome = "retrying"
)

// OperationEvent is one line of a device's operations log — what the
// source document calls Amtopmgr.log (S11). Detail never holds a secret.
type OperationEvent struct {
	DeviceID string    `json:"device_id"`
	JobID    string    `json:"job_id,omitempty"`
	Phase    int       `json:"phase"` // 1 site server, 2 agent, 0 other
	Step     string    `json:"step"`
	Outcome  Outcome   `json:"outcome"`
	Detail   string    `json:"detail,omitempty"`
	Actor    string    `json:"actor,omitempty"` // server replica or agent ID
	Time     time.Time `json:"time"`
}
