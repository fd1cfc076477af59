// Package wire maps the domain model's enumerations to the wire
// contract's and back. Agents and the server share it, so each table
// exists once; a value a table lacks maps to the zero value (UNSPECIFIED
// on the wire, "" in the domain), which callers treat as absent.
package wire

import (
	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
)

var (
	statuses = map[domain.Status]pb.DeviceStatus{
		domain.StatusUnknown:               pb.DeviceStatus_DEVICE_STATUS_UNKNOWN,
		domain.StatusNotSupported:          pb.DeviceStatus_DEVICE_STATUS_NOT_SUPPORTED,
		domain.StatusDetected:              pb.DeviceStatus_DEVICE_STATUS_DETECTED,
		domain.StatusNotProvisioned:        pb.DeviceStatus_DEVICE_STATUS_NOT_PROVISIONED,
		domain.StatusProvisioned:           pb.DeviceStatus_DEVICE_STATUS_PROVISIONED,
		domain.StatusExternallyProvisioned: pb.DeviceStatus_DEVICE_STATUS_EXTERNALLY_PROVISIONED,
	}
	kinds = map[domain.JobKind]pb.JobKind{
		domain.KindProvision:    pb.JobKind_JOB_KIND_PROVISION,
		domain.KindUpdate:       pb.JobKind_JOB_KIND_UPDATE,
		domain.KindRemoveConfig: pb.JobKind_JOB_KIND_REMOVE_CONFIG,
		domain.KindRemoveAll:    pb.JobKind_JOB_KIND_REMOVE_ALL,
		domain.KindDiscover:     pb.JobKind_JOB_KIND_DISCOVER,
	}
	links = map[domain.Link]pb.Link{
		domain.LinkWired:      pb.Link_LINK_WIRED,
		domain.LinkWired8021X: pb.Link_LINK_WIRED_8021X,
		domain.LinkWireless:   pb.Link_LINK_WIRELESS,
	}
	outcomes = map[domain.Outcome]pb.Outcome{
		domain.OutcomeStarted:  pb.Outcome_OUTCOME_STARTED,
		domain.OutcomeOK:       pb.Outcome_OUTCOME_OK,
		domain.OutcomeSkipped:  pb.Outcome_OUTCOME_SKIPPED,
		domain.OutcomeWarning:  pb.Outcome_OUTCOME_WARNING,
		domain.OutcomeFailed:   pb.Outcome_OUTCOME_FAILED,
		domain.OutcomeRetrying: pb.Outcome_OUTCOME_RETRYING,
	}
	results = map[domain.JobResult]pb.CompleteResult{
		domain.ResultSucceeded:       pb.CompleteResult_COMPLETE_RESULT_SUCCEEDED,
		domain.ResultFailed:          pb.CompleteResult_COMPLETE_RESULT_FAILED,
		domain.ResultFailedPermanent: pb.CompleteResult_COMPLETE_RESULT_FAILED_PERMANENT,
		domain.ResultReleased:        pb.CompleteResult_COMPLETE_RESULT_RELEASED,
		domain.ResultCancelled:       pb.CompleteResult_COMPLETE_RESULT_CANCELLED,
	}

	statusesFrom = invert(statuses)
	kindsFrom    = invert(kinds)
	linksFrom    = invert(links)
	outcomesFrom = invert(outcomes)
	resultsFrom  = invert(results)
)

func invert[K, V comparable](m map[K]V) map[V]K {
	out := make(map[V]K, len(m))
	for k, v := range m {
		out[v] = k
	}
	return out
}

// Status is the wire form of a device status.
func Status(s domain.Status) pb.DeviceStatus { return statuses[s] }

// StatusFrom is the domain form of a wire status, "" for UNSPECIFIED.
func StatusFrom(s pb.DeviceStatus) domain.Status { return statusesFrom[s] }

// Kind is the wire form of a job kind.
func Kind(k domain.JobKind) pb.JobKind { return kinds[k] }

// KindFrom is the domain form of a wire job kind, "" for UNSPECIFIED.
func KindFrom(k pb.JobKind) domain.JobKind { return kindsFrom[k] }

// Link is the wire form of a network link.
func Link(l domain.Link) pb.Link { return links[l] }

// LinkFrom is the domain form of a wire link, "" when not known.
func LinkFrom(l pb.Link) domain.Link { return linksFrom[l] }

// Outcome is the wire form of a step outcome.
func Outcome(o domain.Outcome) pb.Outcome { return outcomes[o] }

// OutcomeFrom is the domain form of a wire outcome, "" for UNSPECIFIED.
func OutcomeFrom(o pb.Outcome) domain.Outcome { return outcomesFrom[o] }

// Result is the wire form of how an agent ends a lease.
func Result(r domain.JobResult) pb.CompleteResult { return results[r] }

// ResultFrom is the domain form of a wire result, "" for UNSPECIFIED.
func ResultFrom(r pb.CompleteResult) domain.JobResult { return resultsFrom[r] }

// FactsFrom is the domain form of what an agent learned from a
// controller, nil when it sent none.
func FactsFrom(f *pb.DeviceFacts) *domain.DeviceFacts {
	if f == nil {
		return nil
	}
	return &domain.DeviceFacts{UUID: f.GetUuid(), AMTVersion: f.GetAmtVersion(), Link: LinkFrom(f.GetLink()),
		ProvisioningState: domain.ProvisioningState(f.GetProvisioningState()), ControlMode: domain.ControlMode(f.GetControlMode())}
}
