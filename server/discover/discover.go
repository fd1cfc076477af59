// Package discover asks an agent for an on-demand sweep of a subnet (S21):
// it puts a discover job into the subnet's phase-2 lease queue, where the
// agent serving the subnet leases it like any other job, sweeps, reports
// what it found (ReportDiscovery) and completes the job.
//
// Discover jobs belong to no batch. Their IDs keep the queue's
// "batch:device" shape so that leases, heartbeats and Complete work
// unchanged: "discover-<slot>:<subnet>", where slot is the Unix second of
// the time slot the request falls in. The same subnet and slot always
// give the same ID, and the queue ignores a known ID, so any number of
// callers (server replicas, a scheduler and an administrator) asking in
// the same slot start one sweep.
package discover

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// batchPrefix starts the batch part of every discover job ID; batch IDs
// proper must not start with it.
const batchPrefix = "discover-"

// maxHostBits matches the agent's limit: at most 65536 addresses a sweep.
const maxHostBits = 16

// Queue is the part of the lease queue Request uses (store.LeaseQueue).
type Queue interface {
	Enqueue(ctx context.Context, subnet netip.Prefix, jobID string, payload []byte) (created bool, err error)
}

// Slot is the start of the width-long time slot t falls in, for Request.
func Slot(t time.Time, width time.Duration) time.Time { return t.UTC().Truncate(width) }

// JobID is the discover job ID for subnet and slot (to the second).
func JobID(subnet netip.Prefix, slot time.Time) string {
	return batchPrefix + strconv.FormatInt(slot.Unix(), 10) + ":" + subnet.Masked().String()
}

// IsJobID reports whether id names a discover job rather than a batch's.
func IsJobID(id string) bool {
	b, _, ok := strings.Cut(id, ":")
	return ok && strings.HasPrefix(b, batchPrefix)
}

// Request enqueues a sweep of subnet for slot and returns the job ID; a
// second Request for the same subnet and slot changes nothing and returns
// the same ID.
func Request(ctx context.Context, q Queue, subnet netip.Prefix, slot time.Time) (string, error) {
	if !subnet.IsValid() {
		return "", fmt.Errorf("discover: request: %w", domain.InvalidField("subnet", subnet.String(), "not a valid prefix"))
	}
	subnet = subnet.Masked()
	if subnet.Addr().BitLen()-subnet.Bits() > maxHostBits {
		return "", fmt.Errorf("discover: request: %w", domain.InvalidField("subnet", subnet.String(),
			"larger than "+strconv.Itoa(1<<maxHostBits)+" addresses"))
	}
	if slot.IsZero() {
		return "", fmt.Errorf("discover: request: %w", domain.InvalidField("slot", "", "required"))
	}
	id := JobID(subnet, slot)
	payload, err := proto.Marshal(&pb.Phase2Job{Kind: pb.JobKind_JOB_KIND_DISCOVER,
		Discover: &pb.DiscoverOptions{Subnets: []string{subnet.String()}}})
	if err != nil {
		return "", fmt.Errorf("discover: request %s: encode: %w", id, err)
	}
	if _, err := q.Enqueue(ctx, subnet, id, payload); err != nil {
		return "", fmt.Errorf("discover: request %s: %w", id, err)
	}
	return id, nil
}
