package discover

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/amtops/amtops/internal/domain"
)

// Hellos: a factory device (state 0) announces itself to the agent of
// its subnet (TCP 9971), and the agent reports what it heard. The server
// matches the Hello to the inventory, records it, and starts phase 1 at
// once for a device an auto-provisioning collection holds.

// UnknownHelloReason is recorded on a device whose Hello matched nothing
// in the inventory: without a host name it has no FQDN to provision.
const UnknownHelloReason = "Hello from a device not in the inventory: import it with its host name to provision"

// StepHello names Hello events in the operations log.
const StepHello = "hello"

// stepCheckActivation is jobs.StepCheckActivation, where a device that
// cannot be activated has its reason recorded.
const stepCheckActivation = "check-activation"

// OriginHello is the origin of the batches Hellos start.
const OriginHello = "hello"

// startTimeout bounds queueing one report's batch after its caller left.
const startTimeout = 2 * time.Minute

// Hello is one Hello as the agent received it, checked by the API.
type Hello struct {
	IP         netip.Addr
	UUID       string // lower case
	RetryCount uint32
	// AdminCredentialsSet is the Hello's flag.
	AdminCredentialsSet bool
	TrustedRoots        []domain.RootHash
	At                  time.Time
}

// HelloCounts is what one report did.
type HelloCounts struct {
	Matched int // a device of the inventory with a host name
	Unknown int // recorded as Detected, not provisioned
	Queued  int // phase 1 started
	Refused int // a device of another subnet, left alone
}

// HelloStore is the part of the site database recording Hellos uses.
type HelloStore interface {
	Store
	GetJob(ctx context.Context, batchID, jobID string) (domain.Job, error)
	ListCollections(ctx context.Context) ([]domain.Collection, error)
}

// Starter starts one provision batch for devices (batch.Service).
type Starter interface {
	StartProvision(ctx context.Context, id, origin string, deviceIDs []string) error
}

// Checker tells whether a device can be activated now (jobs.Service).
type Checker interface {
	ActivationReady(d domain.Device) error
}

// HelloRecorder records agents' Hello reports.
type HelloRecorder struct {
	st      HelloStore
	start   Starter // nil: nothing is started
	checker Checker // nil: every device counts as ready
	log     zerolog.Logger
	now     func() time.Time
}

// NewHelloRecorder builds a HelloRecorder; now defaults to time.Now.
func NewHelloRecorder(st HelloStore, start Starter, checker Checker, log zerolog.Logger, now func() time.Time) *HelloRecorder {
	if now == nil {
		now = time.Now
	}
	return &HelloRecorder{st: st, start: start, checker: checker, log: log, now: now}
}

// helloRun is one report's view of the auto-provisioning collections.
type helloRun struct {
	agentID string
	subnet  netip.Prefix
	auto    []domain.Collection
	batchID string
	mu      sync.Mutex
	toStart []string
}

// helloWorkers is how many of a report's devices are recorded at once:
// each is a few Redis round trips of its own, and one at a time a report
// of 256 Hellos took seconds on a busy server, which throttled a fleet
// powering on at once to about 50 Hellos a second.
const helloWorkers = 16

// Record applies an agent's Hellos from subnet, which the agent serves;
// every address must be inside it. A device is found by UUID, then by
// address; one recorded on another subnet is left alone (see record).
// Of several Hellos from one device in a report only the last counts.
func (r *HelloRecorder) Record(ctx context.Context, agentID string, subnet netip.Prefix, hellos []Hello) (HelloCounts, error) {
	var n HelloCounts
	for _, h := range hellos {
		if !subnet.Contains(h.IP) {
			return n, domain.InvalidField("hellos.ip", h.IP.String(), "outside subnet "+subnet.String())
		}
	}
	colls, err := r.st.ListCollections(ctx)
	if err != nil {
		return n, err
	}
	run := &helloRun{agentID: agentID, subnet: subnet, batchID: helloBatchID(r.now())}
	for _, c := range colls {
		if c.AutoProvision {
			run.auto = append(run.auto, c)
		}
	}
	// Each device's record is its own transaction: a report's devices
	// are independent (lastPerDevice keeps one Hello each).
	list := lastPerDevice(hellos)
	results := make([]helloResult, len(list))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(helloWorkers)
	for i, h := range list {
		g.Go(func() (err error) {
			results[i], err = r.one(gctx, run, h)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return n, err
	}
	for _, res := range results {
		switch res {
		case helloKnown:
			n.Matched++
		case helloQueued:
			n.Matched++
			n.Queued++
		case helloUnknown:
			n.Unknown++
		case helloForeign:
			n.Refused++
		}
	}
	slices.Sort(run.toStart)
	if len(run.toStart) > 0 && r.start != nil {
		// The devices are marked with the batch now, so it is queued whole
		// even if the agent gives up on a slow call: a job left queued
		// without its phase-1 task would wait forever, and the devices'
		// next Hellos would find it open and start nothing.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), startTimeout)
		defer cancel()
		if err := r.start.StartProvision(sctx, run.batchID, OriginHello, run.toStart); err != nil {
			return n, fmt.Errorf("discover: hello: start %s: %w", run.batchID, err)
		}
		r.log.Info().Str("agent", agentID).Str("batch", run.batchID).Int("devices", len(run.toStart)).Msg("hellos started provisioning")
	}
	return n, nil
}

// lastPerDevice keeps, per UUID (or address without one), the last Hello
// of a report, in the order of first appearance.
func lastPerDevice(hs []Hello) []Hello {
	idx := make(map[string]int, len(hs))
	out := make([]Hello, 0, len(hs))
	for _, h := range hs {
		k := h.UUID
		if k == "" {
			k = h.IP.String()
		}
		if i, ok := idx[k]; ok {
			out[i] = h
			continue
		}
		idx[k] = len(out)
		out = append(out, h)
	}
	return out
}

// helloBatchID names the batch one report starts; the random part keeps
// two reports in the same millisecond apart.
func helloBatchID(t time.Time) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return "hello-" + t.UTC().Format("20060102T150405.000Z") + "-" + hex.EncodeToString(b)
}

type helloResult int

const (
	helloKnown   helloResult = iota // recorded on a device of the inventory
	helloQueued                     // and phase 1 started
	helloUnknown                    // recorded as a Detected device without a name
	helloForeign                    // a device of another subnet: left alone
)

// one records h. The same-subnet rule of discovery holds: a Hello
// naming a device recorded on another subnet changes nothing.
func (r *HelloRecorder) one(ctx context.Context, run *helloRun, h Hello) (helloResult, error) {
	match, err := r.match(ctx, h)
	if err != nil {
		return 0, err
	}
	if match == nil {
		return helloUnknown, r.unknown(ctx, run, h)
	}
	if match.Subnet.IsValid() && match.Subnet.Masked() != run.subnet {
		r.log.Warn().Str("agent", run.agentID).Str("subnet", run.subnet.String()).Str("device", match.ID).
			Str("device_subnet", match.Subnet.String()).Str("ip", h.IP.String()).Msg("hello for a device of another subnet refused")
		_ = r.st.AppendEvent(ctx, domain.OperationEvent{DeviceID: match.ID, Step: StepHello, Outcome: domain.OutcomeFailed,
			Detail: "agent " + run.agentID + " reported a Hello from this device at " + h.IP.String() + " on subnet " + run.subnet.String() +
				"; it is recorded on " + match.Subnet.String() + " and was not moved (an administrator moves devices between subnets)",
			Actor: run.agentID, Time: r.now().UTC()})
		return helloForeign, nil
	}
	if staleHello(*match, h) {
		return helloKnown, nil
	}
	running, err := r.running(ctx, *match)
	if err != nil {
		return 0, err
	}
	prevBatch := ""
	if match.Hello != nil {
		prevBatch = match.Hello.Batch
	}
	var start bool
	var notReady error
	d, err := r.st.UpdateDevice(ctx, match.ID, func(d *domain.Device) error {
		var err error
		start, notReady, err = r.record(d, run, h, running, prevBatch)
		return err
	})
	switch {
	case errors.Is(err, errStaleHello):
		return helloKnown, nil
	case errors.Is(err, errForeignDevice):
		return helloForeign, nil
	case err != nil:
		return 0, err
	case d.HostName == "":
		return helloUnknown, nil
	}
	if notReady != nil && (match.Hello == nil || match.LastError != d.LastError) {
		_ = r.st.AppendEvent(ctx, domain.OperationEvent{DeviceID: d.ID, Step: StepHello, Outcome: domain.OutcomeSkipped,
			Detail: "Hello at " + h.IP.String() + "; cannot be activated: " + notReady.Error(), Actor: run.agentID, Time: r.now().UTC()})
	}
	if !start {
		return helloKnown, nil
	}
	run.mu.Lock()
	run.toStart = append(run.toStart, d.ID)
	run.mu.Unlock()
	return helloQueued, nil
}

// record applies h to d inside its transaction and decides whether the
// report starts provisioning it; notReady is why it cannot be activated.
func (r *HelloRecorder) record(d *domain.Device, run *helloRun, h Hello, running bool, prevBatch string) (start bool, notReady error, err error) {
	if d.Subnet.IsValid() && d.Subnet.Masked() != run.subnet {
		return false, nil, fmt.Errorf("discover: hello %s: %w", d.ID, errForeignDevice)
	}
	if staleHello(*d, h) {
		return false, nil, errStaleHello
	}
	old := ""
	if d.Hello != nil {
		old = d.Hello.Batch
	}
	h.apply(d, run.subnet)
	d.Hello.Batch = old
	if d.HostName == "" {
		d.Status, d.LastError, d.LastErrorStep = domain.StatusDetected, UnknownHelloReason, StepHello
		return false, nil, nil
	}
	if notReady = r.ready(*d); notReady != nil {
		d.LastError, d.LastErrorStep = notReady.Error(), stepCheckActivation
	} else if d.LastErrorStep == stepCheckActivation {
		d.LastError, d.LastErrorStep = "", ""
	}
	// old != prevBatch: another report started a batch meanwhile.
	start = notReady == nil && !running && old == prevBatch && d.AutoProvisionable() && inAuto(*d, run.auto)
	if start {
		d.Hello.Batch = run.batchID
	}
	return start, notReady, nil
}

var errStaleHello = errors.New("hello sent before the device was provisioned")

// staleHello: the agent received h before the site recorded the device
// provisioned, so the device sent it before its activation and it came
// late (reports queue up when a fleet powers on at once). It says nothing
// about the device now; taken as news, it reset a just-provisioned device
// to state 0 and started provisioning it again, against a device that no
// longer offers remote configuration (2,268 failed jobs in a 10,000-device
// bench). Agent and server clocks are compared: NTP keeps them within far
// less than a provisioning takes.
func staleHello(d domain.Device, h Hello) bool {
	return d.Status == domain.StatusProvisioned && !h.At.IsZero() && h.At.Before(d.ProvisionedAt)
}

// ready checks the device can be activated; the reason is recorded on it
// as a check-activation error, so an administrator sees why a device that
// says hello is not provisioned.
func (r *HelloRecorder) ready(d domain.Device) error {
	if r.checker == nil {
		return nil
	}
	return r.checker.ActivationReady(d)
}

// match finds the device a Hello names: by UUID, else by the one device
// at its address.
func (r *HelloRecorder) match(ctx context.Context, h Hello) (*domain.Device, error) {
	if h.UUID != "" {
		d, err := r.st.GetDevice(ctx, h.UUID)
		if err == nil {
			return &d, nil
		}
		if !errors.Is(err, domain.ErrNotFound) {
			return nil, err
		}
	}
	devs, err := r.st.DevicesByIP(ctx, h.IP)
	if err != nil || len(devs) != 1 {
		return nil, err
	}
	// A device with another known UUID at that address is another machine.
	if h.UUID != "" && devs[0].UUID != "" && !strings.EqualFold(devs[0].UUID, h.UUID) {
		return nil, nil
	}
	return &devs[0], nil
}

// running reports whether the batch an earlier Hello started for d still
// has its job open: a repeated Hello then starts nothing new.
func (r *HelloRecorder) running(ctx context.Context, d domain.Device) (bool, error) {
	if d.Hello == nil || d.Hello.Batch == "" {
		return false, nil
	}
	j, err := r.st.GetJob(ctx, d.Hello.Batch, domain.JobID(d.Hello.Batch, d.ID))
	if errors.Is(err, domain.ErrNotFound) {
		return false, nil // the batch was never made (a crash before Start)
	}
	if err != nil {
		return false, err
	}
	return !j.State.Final(), nil
}

// unknown records a Hello no device of the inventory matched: a Detected
// device with the Hello's UUID (or address) and no name, never provisioned.
func (r *HelloRecorder) unknown(ctx context.Context, run *helloRun, h Hello) error {
	d := domain.Device{ID: "ip-" + h.IP.String(), UUID: h.UUID, Status: domain.StatusDetected}
	if h.UUID != "" {
		d.ID = h.UUID
	}
	h.apply(&d, run.subnet)
	d.Status = domain.StatusDetected
	d.LastError, d.LastErrorStep = UnknownHelloReason, StepHello
	if err := r.st.PutDevice(ctx, d); err != nil {
		return err
	}
	return r.st.AppendEvent(ctx, domain.OperationEvent{DeviceID: d.ID, Step: StepHello, Outcome: domain.OutcomeSkipped,
		Detail: "Hello at " + h.IP.String() + ": " + UnknownHelloReason, Actor: run.agentID, Time: r.now().UTC()})
}

// apply records the Hello on d: the device is in state 0, not activated,
// at the Hello's address on subnet.
func (h Hello) apply(d *domain.Device, subnet netip.Prefix) {
	d.IP, d.Subnet = h.IP, subnet
	if d.UUID == "" {
		d.UUID = h.UUID
	}
	d.State, d.ControlMode = domain.ProvisioningPre, domain.ControlModeNone
	if d.Status != domain.StatusNotSupported {
		d.Status = domain.StatusNotProvisioned
	}
	d.Hello = &domain.HelloSeen{At: h.At, IP: h.IP, RetryCount: h.RetryCount, AdminCredentialsSet: h.AdminCredentialsSet,
		TrustedRoots: slices.Clone(h.TrustedRoots)}
}

// inAuto reports whether an auto-provisioning collection holds d, as a
// member or by one of its rules.
func inAuto(d domain.Device, auto []domain.Collection) bool {
	for _, c := range auto {
		if slices.Contains(d.Collections, c.Name) || slices.ContainsFunc(c.Rules, func(rule domain.CollectionRule) bool { return rule.Matches(d) }) {
			return true
		}
	}
	return false
}
