package discover

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/domain"
)

// Store is the part of the site database recording a sweep uses
// (store.Store).
type Store interface {
	GetDevice(ctx context.Context, id string) (domain.Device, error)
	DevicesByIP(ctx context.Context, ip netip.Addr) ([]domain.Device, error)
	PutDevice(ctx context.Context, d domain.Device) error
	UpdateDevice(ctx context.Context, id string, fn func(*domain.Device) error) (domain.Device, error)
	AppendEvent(ctx context.Context, e domain.OperationEvent) error
}

// Found is what an agent's sweep saw at one address.
type Found struct {
	IP netip.Addr
	// Answered: AMT answered on 16992 or 16993.
	Answered bool
	// Facts the agent read from the controller; nil when it read none.
	Facts *domain.DeviceFacts
	// CredentialsKnown: the facts were read with the site's credentials,
	// so the provisioning state is the site's own view.
	CredentialsKnown bool
	// ProductVersion as Identify says it ("AMT 11.8"); HostName and
	// Domain as the controller reports them.
	ProductVersion, HostName, Domain string
}

// Counts is what one report did to the inventory.
type Counts struct {
	Created, Updated int
	// Refused counts devices recorded on another subnet, left alone.
	Refused int
}

// Recorder records what agents' sweeps found (S20, S21).
type Recorder struct {
	st  Store
	log zerolog.Logger
	now func() time.Time
}

// NewRecorder builds a Recorder; now defaults to time.Now.
func NewRecorder(st Store, log zerolog.Logger, now func() time.Time) *Recorder {
	if now == nil {
		now = time.Now
	}
	return &Recorder{st: st, log: log, now: now}
}

// Record applies an agent's report for subnet, which the agent serves. A
// device is found by its AMT UUID when known, else by IP; a new one gets
// the ID of its UUID, or "ip-<addr>". Addresses nothing answered on are
// skipped.
func (r *Recorder) Record(ctx context.Context, agentID string, subnet netip.Prefix, found []Found) (Counts, error) {
	var n Counts
	for i, f := range found {
		if !subnet.Contains(f.IP) {
			return n, domain.InvalidField(fmt.Sprintf("devices[%d].ip", i), f.IP.String(), "outside subnet "+subnet.String())
		}
	}
	for _, f := range found {
		if !f.Answered && f.Facts == nil {
			continue // nothing answered: no AMT seen there
		}
		res, err := r.record(ctx, agentID, subnet, f)
		if err != nil {
			return n, err
		}
		switch res {
		case discoveredNew:
			n.Created++
		case discoveredKnown:
			n.Updated++
		case discoveredForeign:
			n.Refused++
		}
	}
	return n, nil
}

// discoveredStatus decides S20's status from what the probe saw. Without
// facts the agent only knows AMT answers; it keeps a status learned
// earlier with credentials.
func discoveredStatus(prev domain.Status, f Found) domain.Status {
	if f.Facts == nil || !f.CredentialsKnown {
		if f.Facts != nil && f.Facts.ProvisioningState == domain.ProvisioningPost && prev != domain.StatusProvisioned {
			return domain.StatusExternallyProvisioned
		}
		switch prev {
		case domain.StatusNotProvisioned, domain.StatusProvisioned, domain.StatusExternallyProvisioned:
			return prev
		}
		return domain.StatusDetected
	}
	if f.Facts.ProvisioningState == domain.ProvisioningPost {
		return domain.StatusProvisioned
	}
	return domain.StatusNotProvisioned
}

// discovered is what record did with one report.
type discovered int

const (
	discoveredNew     discovered = iota // a device record was created
	discoveredKnown                     // an existing record of this subnet was updated
	discoveredForeign                   // the report named a device of another subnet: left alone
)

// record matches a report to the inventory and updates it. An
// agent speaks only for its own subnet: a report whose UUID (or address)
// names a device recorded on another subnet changes nothing, because
// moving the device would hand this agent that device's admin password on
// the next job. An administrator moves devices between subnets.
func (r *Recorder) record(ctx context.Context, agentID string, subnet netip.Prefix, f Found) (discovered, error) {
	ip := f.IP
	var match *domain.Device
	uuidID := ""
	if f.Facts != nil {
		uuidID = strings.ToLower(f.Facts.UUID)
	}
	if uuidID != "" {
		d, err := r.st.GetDevice(ctx, uuidID)
		if err == nil {
			match = &d
		} else if !errors.Is(err, domain.ErrNotFound) {
			return 0, err
		}
	}
	if match == nil {
		devs, err := r.st.DevicesByIP(ctx, ip)
		if err != nil {
			return 0, err
		}
		if len(devs) == 1 {
			match = &devs[0]
		}
	}
	if match != nil && match.Subnet.IsValid() && match.Subnet.Masked() != subnet {
		r.log.Warn().Str("agent", agentID).Str("subnet", subnet.String()).Str("device", match.ID).
			Str("device_subnet", match.Subnet.String()).Str("ip", ip.String()).Msg("discovery report for a device of another subnet refused")
		_ = r.st.AppendEvent(ctx, domain.OperationEvent{DeviceID: match.ID, Phase: 0, Step: "discover", Outcome: domain.OutcomeFailed,
			Detail: "agent " + agentID + " reported this device at " + ip.String() + " on subnet " + subnet.String() +
				"; it is recorded on " + match.Subnet.String() + " and was not moved (an administrator moves devices between subnets)",
			Actor: agentID, Time: r.now().UTC()})
		return discoveredForeign, nil
	}
	update := func(d *domain.Device) error {
		if d.Subnet.IsValid() && d.Subnet.Masked() != subnet {
			// Moved by someone else since we read it: still not ours to move.
			return fmt.Errorf("discover: record %s: %w", d.ID, errForeignDevice)
		}
		f.apply(d, subnet)
		return nil
	}
	if match != nil {
		_, err := r.st.UpdateDevice(ctx, match.ID, update)
		if errors.Is(err, errForeignDevice) {
			return discoveredForeign, nil
		}
		return discoveredKnown, err
	}
	d := domain.Device{ID: "ip-" + ip.String(), Status: domain.StatusUnknown}
	if uuidID != "" {
		d.ID = uuidID
	}
	if err := update(&d); err != nil {
		return 0, err
	}
	if err := r.st.PutDevice(ctx, d); err != nil {
		return 0, err
	}
	_ = r.st.AppendEvent(ctx, domain.OperationEvent{DeviceID: d.ID, Phase: 0, Step: "discover", Outcome: domain.OutcomeOK,
		Detail: "discovered at " + ip.String() + " as " + string(d.Status), Actor: agentID, Time: r.now().UTC()})
	return discoveredNew, nil
}

var errForeignDevice = errors.New("device is recorded on another subnet")

// apply records what the sweep saw on the device, now on subnet.
func (f Found) apply(d *domain.Device, subnet netip.Prefix) {
	d.Status = discoveredStatus(d.Status, f)
	d.IP, d.Subnet = f.IP, subnet
	f.Facts.Apply(d)
	// Identify says "AMT 11.8"; the device record holds bare versions.
	if v := strings.TrimSpace(strings.TrimPrefix(f.ProductVersion, "AMT")); d.AMTVersion == "" && v != "" {
		d.AMTVersion = v
	}
	if d.HostName == "" && f.HostName != "" && domain.ValidateHostName(f.HostName) == nil {
		d.HostName, d.Domain = f.HostName, f.Domain
	}
	if f.Facts != nil {
		d.State = f.Facts.ProvisioningState
	}
}
