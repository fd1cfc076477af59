package main

import (
	"fmt"
	"sort"
	"time"

	"github.com/amtops/amtops/internal/domain"
)

// conflicts finds, in the operations log and the batches' job states,
// jobs processed twice with results that disagree:
//   - one job recorded both succeeded and failed;
//   - a job's recorded state contradicting its results in the log;
//   - a job worked on (phase-2 steps) after its success was recorded;
//   - one device worked by two jobs at once (their phase-2 spans overlap).
//
// A result repeated with the same outcome (a Complete retried through a
// server restart) is not a conflict.
func conflicts(events map[string][]domain.OperationEvent, jobs map[string]domain.Job) []string {
	var out []string
	ids := make([]string, 0, len(events))
	for id := range events {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	spans := map[string][]span{} // by device
	for _, id := range ids {
		evs := events[id]
		sort.SliceStable(evs, func(i, j int) bool { return evs[i].Time.Before(evs[j].Time) })
		out = append(out, jobConflicts(id, evs, jobs[id])...)
		if s, ok := phase2Span(id, evs); ok {
			spans[evs[0].DeviceID] = append(spans[evs[0].DeviceID], s)
		}
	}
	devs := make([]string, 0, len(spans))
	for d := range spans {
		devs = append(devs, d)
	}
	sort.Strings(devs)
	for _, d := range devs {
		out = append(out, overlaps(d, spans[d])...)
	}
	return out
}

// jobConflicts checks one job's events, oldest first.
func jobConflicts(id string, evs []domain.OperationEvent, job domain.Job) []string {
	var out []string
	var okAt time.Time
	succeeded, failed := false, false
	for _, e := range evs {
		switch {
		case e.Phase == 2 && e.Step == "complete" && e.Outcome == domain.OutcomeOK:
			succeeded = true
			if okAt.IsZero() {
				okAt = e.Time
			}
		case e.Phase == 2 && e.Step == "complete" && e.Outcome == domain.OutcomeFailed:
			failed = true
		case e.Phase == 2 && !okAt.IsZero() && e.Time.After(okAt):
			out = append(out, fmt.Sprintf("job %s: step %s (%s) by %s at %s, after its success was recorded at %s",
				id, e.Step, e.Outcome, e.Actor, e.Time.Format(time.RFC3339Nano), okAt.Format(time.RFC3339Nano)))
		}
	}
	if succeeded && failed {
		out = append(out, fmt.Sprintf("job %s: recorded both succeeded and failed", id))
	}
	switch {
	case job.ID == "":
	case job.State == domain.JobSucceeded && failed && !succeeded:
		out = append(out, fmt.Sprintf("job %s: state succeeded, the log has only its failure", id))
	case job.State == domain.JobFailed && succeeded:
		out = append(out, fmt.Sprintf("job %s: state failed (%s: %s), the log has its success", id, job.ErrorStep, clip(job.LastError, 120)))
	}
	return out
}

// span is a job's phase-2 activity on its device.
type span struct {
	job        string
	start, end time.Time
}

func phase2Span(id string, evs []domain.OperationEvent) (span, bool) {
	s := span{job: id}
	for _, e := range evs {
		if e.Phase != 2 {
			continue
		}
		if s.start.IsZero() || e.Time.Before(s.start) {
			s.start = e.Time
		}
		if e.Time.After(s.end) {
			s.end = e.Time
		}
	}
	return s, !s.start.IsZero()
}

// overlaps reports pairs of one device's jobs worked at the same time.
func overlaps(dev string, ss []span) []string {
	sort.Slice(ss, func(i, j int) bool { return ss[i].start.Before(ss[j].start) })
	var out []string
	for i := 1; i < len(ss); i++ {
		for j := 0; j < i; j++ {
			if ss[i].start.Before(ss[j].end) && ss[j].start.Before(ss[i].end) {
				out = append(out, fmt.Sprintf("device %s: jobs %s and %s in phase 2 at once (%s–%s and %s–%s)", dev,
					ss[j].job, ss[i].job, ss[j].start.Format("15:04:05.000"), ss[j].end.Format("15:04:05.000"),
					ss[i].start.Format("15:04:05.000"), ss[i].end.Format("15:04:05.000")))
			}
		}
	}
	return out
}
