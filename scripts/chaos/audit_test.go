package main

import (
	"strings"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/fleet"
)

// TestConflicts: each kind of double processing is found, and a result
// repeated with the same outcome is not one.
func TestConflicts(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	ev := func(job string, phase int, step string, out domain.Outcome, s int) domain.OperationEvent {
		return domain.OperationEvent{DeviceID: "d1", JobID: job, Phase: phase, Step: step, Outcome: out, Actor: "agent", Time: at(s)}
	}
	ok := func(job string, s int) domain.OperationEvent { return ev(job, 2, "complete", domain.OutcomeOK, s) }
	failed := func(job string, s int) domain.OperationEvent { return ev(job, 2, "complete", domain.OutcomeFailed, s) }
	step := func(job string, s int) domain.OperationEvent { return ev(job, 2, "activate", domain.OutcomeOK, s) }
	for _, tc := range []struct {
		name   string
		events []domain.OperationEvent
		state  domain.JobState
		want   string // in the one conflict expected; "" for none
	}{
		{"clean", []domain.OperationEvent{step("b:d1", 1), ok("b:d1", 2)}, domain.JobSucceeded, ""},
		{"success repeated (Complete retried)", []domain.OperationEvent{step("b:d1", 1), ok("b:d1", 2), ok("b:d1", 3)}, domain.JobSucceeded, ""},
		{"retried then succeeded", []domain.OperationEvent{step("b:d1", 1), ev("b:d1", 2, "complete", domain.OutcomeRetrying, 2),
			step("b:d1", 3), ok("b:d1", 4)}, domain.JobSucceeded, ""},
		{"succeeded and failed", []domain.OperationEvent{step("b:d1", 1), ok("b:d1", 2), failed("b:d1", 2)}, domain.JobSucceeded, "both succeeded and failed"},
		{"worked after success", []domain.OperationEvent{step("b:d1", 1), ok("b:d1", 2), step("b:d1", 3)}, domain.JobSucceeded, "after its success"},
		{"state failed, log success", []domain.OperationEvent{step("b:d1", 1), ok("b:d1", 2)}, domain.JobFailed, "the log has its success"},
		{"state succeeded, log failure", []domain.OperationEvent{step("b:d1", 1), failed("b:d1", 2)}, domain.JobSucceeded, "only its failure"},
		{"two jobs at once", []domain.OperationEvent{step("b:d1", 1), ok("b:d1", 5), step("c:d1", 3), ok("c:d1", 7)}, domain.JobSucceeded, "in phase 2 at once"},
		{"two jobs one after the other", []domain.OperationEvent{step("b:d1", 1), failed("b:d1", 2), step("c:d1", 3), ok("c:d1", 4)}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			events := map[string][]domain.OperationEvent{}
			jobs := map[string]domain.Job{}
			for _, e := range tc.events {
				events[e.JobID] = append(events[e.JobID], e)
				if tc.state != "" {
					jobs[e.JobID] = domain.Job{ID: e.JobID, DeviceID: "d1", State: tc.state}
				}
			}
			got := conflicts(events, jobs)
			switch {
			case tc.want == "" && len(got) != 0:
				t.Errorf("conflicts %q, want none", got)
			case tc.want != "" && (len(got) != 1 || !strings.Contains(got[0], tc.want)):
				t.Errorf("conflicts %q, want one saying %q", got, tc.want)
			}
		})
	}
}

// TestSearcher: every encoding of a secret is found once per place, a
// near miss is not, and values shorter than minNeedle are not searched.
func TestSearcher(t *testing.T) {
	s := fleet.NewNeedles()
	s.AddText("admin", `P@ss<w0rd>"x`)
	s.AddText("short", "abc")
	key := make([]byte, 128)
	for i := range key {
		key[i] = byte(i*7 + 3)
	}
	s.AddKey("key", key)
	x := newSearcher(s)
	for _, tc := range []struct {
		hay  string
		want []string
	}{
		{`{"message":"login","password":"P@ss<w0rd>\"x"}`, []string{"admin (JSON)"}},
		{`"P@ss\u003cw0rd\u003e\"x"`, []string{"admin (JSON, HTML-escaped)"}},
		{`P@ss<w0rd>"x and again P@ss<w0rd>"x`, []string{"admin"}},
		{"UEBzczx3MHJkPiJ4", []string{"admin (base64)"}},
		{"P@ss<w0rd!", nil},
		{"abc abc", nil},
		{"xx" + string(key[48:72]) + "yy", []string{"key[48:]"}},
		{"xx" + string(key[50:74]) + "yy", nil},
	} {
		var got []string
		for _, h := range x.find([]byte(tc.hay), "here", map[string]bool{}) {
			got = append(got, h.secret)
		}
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("find in %q = %v, want %v", tc.hay, got, tc.want)
		}
	}
}

// TestAddSealed: a sealed JSON record gives its private fields only,
// a PEM its private keys, text itself.
func TestAddSealed(t *testing.T) {
	s := fleet.NewNeedles()
	s.AddSealed("rec", []byte(`{"serial":"123456789012","leaf":"bGVhZiBjZXJ0aWZpY2F0ZQ==","key_pem":"c2VjcmV0IGtleSBtYXRlcmlhbCBoZXJl"}`))
	s.AddSealed("pw", []byte("correct horse battery"))
	x := newSearcher(s)
	found := func(hay string) bool { return len(x.find([]byte(hay), "t", map[string]bool{})) > 0 }
	if !found("secret key material here") || !found("correct horse battery") {
		t.Error("a private field or a password is not searched for")
	}
	if found("leaf certificate") || found("123456789012") {
		t.Error("a public field is searched for")
	}
}
