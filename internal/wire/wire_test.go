package wire

import (
	"testing"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// Every domain value has a distinct wire value and every named wire
// value comes back: a status, kind, link or outcome added on one side
// only fails here.
func TestTablesAreComplete(t *testing.T) {
	check := func(t *testing.T, domainN, mapped, wireNamed int) {
		t.Helper()
		if mapped != domainN || mapped != wireNamed {
			t.Fatalf("%d domain values, %d mapped, %d named on the wire (besides UNSPECIFIED)", domainN, mapped, wireNamed)
		}
	}
	t.Run("status", func(t *testing.T) {
		for _, s := range domain.Statuses {
			if StatusFrom(Status(s)) != s {
				t.Errorf("%s does not round-trip", s)
			}
		}
		check(t, len(domain.Statuses), len(statusesFrom), len(pb.DeviceStatus_name)-1)
	})
	t.Run("kind", func(t *testing.T) {
		for k := range kinds {
			if KindFrom(Kind(k)) != k || !k.Valid() {
				t.Errorf("%s does not round-trip", k)
			}
		}
		check(t, len(kinds), len(kindsFrom), len(pb.JobKind_name)-1)
	})
	t.Run("link", func(t *testing.T) {
		check(t, len(links), len(linksFrom), len(pb.Link_name)-1)
	})
	t.Run("outcome", func(t *testing.T) {
		check(t, len(outcomes), len(outcomesFrom), len(pb.Outcome_name)-1)
	})
	t.Run("result", func(t *testing.T) {
		for _, r := range domain.JobResults {
			if ResultFrom(Result(r)) != r {
				t.Errorf("%s does not round-trip", r)
			}
		}
		check(t, len(domain.JobResults), len(resultsFrom), len(pb.CompleteResult_name)-1)
		if ResultFrom(pb.CompleteResult_COMPLETE_RESULT_UNSPECIFIED) != "" {
			t.Error("UNSPECIFIED must map to no result, which the server refuses")
		}
	})
	if StatusFrom(pb.DeviceStatus_DEVICE_STATUS_UNSPECIFIED) != "" || Kind("reboot") != pb.JobKind_JOB_KIND_UNSPECIFIED {
		t.Error("an unknown value must map to the zero value")
	}
}
