// Package batch starts and cancels bulk operations. Every operation on
// devices — an administrator's, a sweep's, a rename's — is a batch with
// one job per device, so each device's outcome is recorded (C8).
package batch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/server/jobs"
	"github.com/amtops/amtops/server/store"
)

// Enqueuer queues phase-1 tasks (jobs.Enqueuer).
type Enqueuer interface {
	Enqueue(ctx context.Context, t jobs.Task, queue string) error
}

// Request asks for one operation on a set of devices.
type Request struct {
	Kind       domain.JobKind
	DeviceIDs  []string
	Collection string // explicit members and rule matches
	Origin     string // "admin" (default), "sweep", "rename"
	Requester  string
	// ID makes Start idempotent: a second Start with the same ID returns
	// the existing batch. Empty means a new ID.
	ID string
	// Queue is the phase-1 queue; empty picks critical for a handful of
	// devices and default for bulk work.
	Queue   string
	Options map[string]string
}

// options each kind accepts, all boolean.
var kindOptions = map[domain.JobKind][]string{
	domain.KindUpdate:       {"confirm_8021x"},
	domain.KindRemoveConfig: {"suppress_auto"},
	domain.KindRemoveAll:    {"suppress_auto", "rename"},
}

// interactive is the most devices an administrator's batch may have to
// go to the critical queue.
const interactive = 10

// Service starts and cancels batches.
type Service struct {
	st      *store.Store
	enq     Enqueuer
	log     zerolog.Logger
	now     func() time.Time
	started func(domain.Batch)
	// liveFor: an agent whose last heartbeat is younger serves its
	// subnets; 0 checks nothing.
	liveFor time.Duration
}

// WarnUnserved has every batch warn, from its start, about the subnets
// of its devices that no agent with a heartbeat younger than liveFor
// serves: their jobs would wait in the phase-2 queue.
func (s *Service) WarnUnserved(liveFor time.Duration) { s.liveFor = liveFor }

// Observe has fn told about every batch created (metrics); call it before
// the service is used.
func (s *Service) Observe(fn func(domain.Batch)) { s.started = fn }

// New returns a Service.
func New(st *store.Store, enq Enqueuer, log zerolog.Logger) *Service {
	return &Service{st: st, enq: enq, log: log, now: time.Now}
}

// Start creates the batch and queues phase 1 for each device that can
// take the operation. Bad requests (unknown kind, device or collection,
// nothing selected) are errors and create nothing; a device that cannot
// take the operation gets a job failed at once with step "refused".
func (s *Service) Start(ctx context.Context, r Request) (domain.Batch, bool, error) {
	if err := s.check(&r); err != nil {
		return domain.Batch{}, false, fmt.Errorf("batch: start: %w", err)
	}
	if r.ID != "" {
		if b, err := s.st.GetBatch(ctx, r.ID); err == nil {
			return s.resume(ctx, b, r.Queue, false, nil)
		} else if !errors.Is(err, domain.ErrNotFound) {
			return domain.Batch{}, false, fmt.Errorf("batch: start: %w", err)
		}
	}
	devices, err := s.devices(ctx, r)
	if err != nil {
		return domain.Batch{}, false, fmt.Errorf("batch: start: %w", err)
	}
	if r.ID == "" {
		r.ID = newID(s.now())
	}
	now := s.now().UTC()
	b := domain.Batch{ID: r.ID, Kind: r.Kind, Origin: r.Origin, Requester: r.Requester, Total: len(devices),
		Options: r.Options, CreatedAt: now}
	unserved, err := s.unserved(ctx, devices)
	if err != nil {
		return domain.Batch{}, false, fmt.Errorf("batch: start: %w", err)
	}
	for p, n := range unserved {
		b.Warnings = append(b.Warnings, fmt.Sprintf("no live agent serves %s: its %d jobs wait in the phase-2 queue until one does "+
			"(start its agent, or authorise another with amtopsctl agents authorize)", p, n))
	}
	slices.Sort(b.Warnings)
	jobs := make([]domain.Job, len(devices))
	for i, d := range devices {
		jobs[i] = domain.Job{ID: domain.JobID(b.ID, d.ID), BatchID: b.ID, DeviceID: d.ID, Kind: r.Kind,
			State: domain.JobQueued, CreatedAt: now, UpdatedAt: now}
	}
	created, err := s.st.CreateBatch(ctx, b, jobs)
	if err != nil {
		return domain.Batch{}, false, fmt.Errorf("batch: start: %w", err)
	}
	if created && s.started != nil {
		s.started(b)
	}
	if created {
		for _, w := range b.Warnings {
			s.log.Warn().Str("batch", b.ID).Str("warning", w).Msg("batch started with a warning")
		}
		s.log.Info().Str("batch", b.ID).Str("kind", string(b.Kind)).Str("origin", b.Origin).
			Str("requester", b.Requester).Int("devices", b.Total).Msg("batch created")
	}
	known := make(map[string]domain.Device, len(devices))
	for _, d := range devices {
		known[d.ID] = d
	}
	return s.resume(ctx, b, r.Queue, created, known)
}

// StartProvision starts the provision batch id for devices, once: a
// second call with the same id changes nothing (discover.Starter, for
// the devices Hellos announce).
func (s *Service) StartProvision(ctx context.Context, id, origin string, deviceIDs []string) error {
	_, _, err := s.Start(ctx, Request{Kind: domain.KindProvision, DeviceIDs: deviceIDs, Origin: origin, Requester: origin, ID: id})
	return err
}

// check validates and completes the request.
func (s *Service) check(r *Request) error {
	switch {
	case !r.Kind.Valid():
		return domain.InvalidField("kind", string(r.Kind), "unknown operation")
	case r.Kind == domain.KindDiscover:
		return domain.InvalidField("kind", string(r.Kind), "discovery is not a device batch")
	case len(r.DeviceIDs) == 0 && r.Collection == "":
		return domain.InvalidField("devices", "", "name devices or a collection")
	case strings.Contains(r.ID, ":"):
		return domain.InvalidField("batch.id", r.ID, "must not contain ':'")
	}
	for k, v := range r.Options {
		if !slices.Contains(kindOptions[r.Kind], k) {
			return domain.InvalidField("options."+k, v, "not an option of "+string(r.Kind))
		}
		if v != "true" && v != "false" {
			return domain.InvalidField("options."+k, v, "must be true or false")
		}
	}
	if r.Origin == "" {
		r.Origin = "admin"
	}
	if _, ok := jobs.Queues[r.Queue]; r.Queue != "" && !ok {
		return domain.InvalidField("queue", r.Queue, "unknown phase-1 queue")
	}
	return nil
}

// devices resolves the request to devices, each once, in a stable order.
func (s *Service) devices(ctx context.Context, r Request) ([]domain.Device, error) {
	var out []domain.Device
	seen := map[string]bool{}
	for _, id := range r.DeviceIDs {
		if id == "" || seen[id] {
			continue
		}
		d, err := s.st.GetDevice(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("device %q: %w", id, err)
		}
		seen[id] = true
		out = append(out, d)
	}
	if r.Collection != "" {
		if _, err := s.st.ApplyCollectionRules(ctx, r.Collection); err != nil {
			return nil, err
		}
		var page domain.DevicePage
		for first := true; first || page.Next != ""; first = false {
			var err error
			if page, err = s.st.Members(ctx, r.Collection, 1000, page.Next); err != nil {
				return nil, err
			}
			for _, d := range page.Devices {
				if !seen[d.ID] {
					seen[d.ID] = true
					out = append(out, d)
				}
			}
		}
	}
	if len(out) == 0 {
		return nil, domain.InvalidField("devices", r.Collection, "the selection has no devices")
	}
	return out, nil
}

// resume queues phase 1 for every job of b still queued and returns the
// batch with its counters after. Running it again is harmless (task IDs
// are per job), so a batch a crash left half-queued is finished by the
// next Start with its ID or by Recover.
func (s *Service) resume(ctx context.Context, b domain.Batch, queue string, created bool, known map[string]domain.Device) (domain.Batch, bool, error) {
	if err := s.queueAll(ctx, b, queue, known); err != nil {
		return domain.Batch{}, created, err
	}
	b, err := s.st.GetBatch(ctx, b.ID)
	if err != nil {
		return domain.Batch{}, created, fmt.Errorf("batch: %s: %w", b.ID, err)
	}
	return b, created, nil
}

// queueFor puts a handful of an administrator's devices ahead of bulk
// work and sweeps behind it.
func queueFor(b domain.Batch) string {
	switch {
	case b.Origin == "sweep":
		return jobs.QueueSweep
	case b.Origin == "admin" && b.Total <= interactive:
		return jobs.QueueCritical
	}
	return jobs.QueueDefault
}

// queueAll queues every job still queued; known holds devices the caller
// has just read, so they are not read again.
func (s *Service) queueAll(ctx context.Context, b domain.Batch, queue string, known map[string]domain.Device) error {
	if queue == "" {
		queue = queueFor(b)
	}
	var page domain.JobPage
	for first := true; first || page.Next != ""; first = false {
		var err error
		if page, err = s.st.ListJobs(ctx, b.ID, domain.JobFilter{State: domain.JobQueued, Limit: 1000, Cursor: page.Next}); err != nil {
			return fmt.Errorf("batch: resume %s: %w", b.ID, err)
		}
		for _, j := range page.Jobs {
			if err := s.queueJob(ctx, b, j, queue, known); err != nil {
				return fmt.Errorf("batch: resume %s: %w", b.ID, err)
			}
		}
	}
	return nil
}

// queueJob claims the device and queues the job's phase 1, or refuses it.
func (s *Service) queueJob(ctx context.Context, b domain.Batch, j domain.Job, queue string, known map[string]domain.Device) error {
	d, ok := known[j.DeviceID]
	if !ok {
		var err error
		d, err = s.st.GetDevice(ctx, j.DeviceID)
		if errors.Is(err, domain.ErrNotFound) {
			return s.refuse(ctx, j, "device no longer exists")
		} else if err != nil {
			return err
		}
	}
	if reason := refusal(b, d); reason != "" {
		return s.refuse(ctx, j, reason)
	}
	holder, ok, err := s.claim(ctx, j)
	if err != nil {
		return err
	}
	if !ok {
		if b.Origin == originHello {
			// Two Hellos of one device close together: the other job acts
			// on it already, so this one is no failure of the device.
			return s.finish(ctx, j, domain.JobCancelled, domain.OutcomeSkipped, "already being provisioned by job "+holder+" (a repeated Hello)")
		}
		return s.refuse(ctx, j, "device busy with job "+holder)
	}
	err = s.enq.Enqueue(ctx, jobs.Task{JobID: j.ID, BatchID: b.ID, DeviceID: j.DeviceID, Kind: j.Kind, Options: b.Options}, queue)
	if err != nil && !errors.Is(err, jobs.ErrDuplicate) {
		return err
	}
	return nil
}

// claim takes the device for j, replacing a holder whose job has ended.
func (s *Service) claim(ctx context.Context, j domain.Job) (holder string, ok bool, err error) {
	return s.Claim(ctx, j.DeviceID, j.ID)
}

// Claim takes a device for ref (a job ID, or another operation's
// reference such as a deletion's) unless a job that has not ended holds
// it; it returns the holder after the call, and ok when that is ref.
func (s *Service) Claim(ctx context.Context, deviceID, ref string) (holder string, ok bool, err error) {
	holder, ok, err = s.st.ClaimDevice(ctx, deviceID, ref, "")
	if err != nil || ok {
		return holder, ok, err
	}
	batchID, _, _ := strings.Cut(holder, ":")
	hj, err := s.st.GetJob(ctx, batchID, holder)
	switch {
	case errors.Is(err, domain.ErrNotFound):
	case err != nil:
		return "", false, err
	case !hj.State.Final():
		return holder, false, nil
	}
	return s.st.ClaimDevice(ctx, deviceID, ref, holder)
}

// Release drops ref's claim on a device (another's is left alone).
func (s *Service) Release(ctx context.Context, deviceID, ref string) error {
	return s.st.ReleaseDevice(ctx, deviceID, ref)
}

// refusal says why d cannot take b's operation, or "".
func refusal(b domain.Batch, d domain.Device) string {
	switch b.Kind {
	case domain.KindProvision:
		if err := d.Provisionable(); err != nil {
			return err.Error()
		}
	case domain.KindUpdate, domain.KindRemoveConfig:
		if d.Status != domain.StatusProvisioned {
			return "device is " + string(d.Status) + ", not provisioned by this site"
		}
	case domain.KindRemoveAll:
		// A rename removes whatever the site set up, even after a
		// failed provisioning; a plain removal needs a provisioned device.
		if d.Status != domain.StatusProvisioned && b.Options["rename"] != "true" {
			return "device is " + string(d.Status) + ", not provisioned by this site"
		}
	}
	return ""
}

func (s *Service) refuse(ctx context.Context, j domain.Job, reason string) error {
	return s.finish(ctx, j, domain.JobFailed, domain.OutcomeFailed, reason)
}

// originHello is discover.OriginHello, the origin of the batches Hellos start.
const originHello = "hello"

// finish ends a job before its phase 1, with its reason in the device's log.
func (s *Service) finish(ctx context.Context, j domain.Job, state domain.JobState, outcome domain.Outcome, reason string) error {
	if _, err := s.st.FinishJob(ctx, j.BatchID, j.ID, state, "refused", reason); err != nil {
		return err
	}
	ev := domain.OperationEvent{DeviceID: j.DeviceID, JobID: j.ID, Step: "refused", Outcome: outcome,
		Detail: string(j.Kind) + ": " + reason, Actor: "server", Time: s.now().UTC()}
	if err := s.st.AppendEvent(ctx, ev); err != nil {
		return err
	}
	s.log.Info().Str("batch", j.BatchID).Str("device", j.DeviceID).Str("reason", reason).Msg("job refused")
	return nil
}

// Cancel stops a batch: queued jobs are cancelled now, running ones stop
// at their next step.
func (s *Service) Cancel(ctx context.Context, id string) (int, error) {
	n, err := s.st.CancelBatch(ctx, id)
	if err != nil {
		return 0, fmt.Errorf("batch: cancel: %w", err)
	}
	s.log.Info().Str("batch", id).Int("cancelled", n).Msg("batch cancel requested")
	return n, nil
}

// Recover finishes queuing the recent batches a crash may have left
// half-queued. The server runs it at start; replicas may run it together.
func (s *Service) Recover(ctx context.Context) error {
	ids, err := s.st.ListBatches(ctx, 1000)
	if err != nil {
		return fmt.Errorf("batch: recover: %w", err)
	}
	for _, id := range ids {
		b, err := s.st.GetBatch(ctx, id)
		if err != nil {
			return fmt.Errorf("batch: recover: %w", err)
		}
		if b.Done() || b.CancelRequested {
			continue
		}
		if err := s.queueAll(ctx, b, "", nil); err != nil {
			return fmt.Errorf("batch: recover: %w", err)
		}
	}
	return nil
}

// newID is sortable by time and unique without coordination.
func newID(now time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "b" + now.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// unserved counts, per subnet no live agent serves, the devices of a
// batch there (none when the check is off).
func (s *Service) unserved(ctx context.Context, devices []domain.Device) (map[netip.Prefix]int, error) {
	out := map[netip.Prefix]int{}
	if s.liveFor <= 0 || len(devices) == 0 {
		return out, nil
	}
	agents, err := s.st.ListAgents(ctx)
	if err != nil {
		return nil, err
	}
	now := s.now()
	served := map[netip.Prefix]bool{}
	for _, a := range agents {
		if !a.LastHeartbeat.IsZero() && now.Sub(a.LastHeartbeat) < s.liveFor {
			for _, p := range a.Subnets {
				served[p.Masked()] = true
			}
		}
	}
	for _, d := range devices {
		if d.Subnet.IsValid() && !served[d.Subnet.Masked()] {
			out[d.Subnet.Masked()]++
		}
	}
	return out, nil
}
