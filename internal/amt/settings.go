package amt

import (
	"context"
	"strconv"
	"time"

	"github.com/amtops/amtops/internal/wsman"
)

// LowAccuracyTime returns the device clock (Ta0, Unix seconds).
func (c *Client) LowAccuracyTime(ctx context.Context) (int64, error) {
	out, err := c.invokeRead(ctx, "get low accuracy time", URITimeSynchronization, "GetLowAccuracyTimeSynch", nil)
	if err != nil {
		return 0, err
	}
	f := read(out, "GetLowAccuracyTimeSynch_OUTPUT")
	ta0 := f.int64("Ta0")
	return ta0, f.err
}

// SetHighAccuracyTime sets the device clock: ta0 as read from the device,
// tm1 and tm2 our clock (Unix seconds) around the call.
func (c *Client) SetHighAccuracyTime(ctx context.Context, ta0, tm1, tm2 int64) error {
	_, err := c.invoke(ctx, "set high accuracy time", URITimeSynchronization, "SetHighAccuracyTimeSynch", nil,
		field("Ta0", strconv.FormatInt(ta0, 10)),
		field("Tm1", strconv.FormatInt(tm1, 10)),
		field("Tm2", strconv.FormatInt(tm2, 10)))
	return err
}

// SyncClock sets the device clock from now (S8; Kerberos needs skew ≤ 5 min).
func (c *Client) SyncClock(ctx context.Context, now func() time.Time) error {
	ta0, err := c.LowAccuracyTime(ctx)
	if err != nil {
		return err
	}
	tm := now().Unix()
	return c.SetHighAccuracyTime(ctx, ta0, tm, tm)
}

// RedirectionState is AMT_RedirectionService's EnabledState / RequestedState.
type RedirectionState int

// Redirection states: which of IDE-R and SOL are enabled.
const (
	RedirectionNone    RedirectionState = 32768
	RedirectionIDER    RedirectionState = 32769
	RedirectionSOL     RedirectionState = 32770
	RedirectionIDERSOL RedirectionState = 32771
)

// RedirectionFor maps the two site settings to a state.
func RedirectionFor(ider, sol bool) RedirectionState {
	s := RedirectionNone
	if ider {
		s++
	}
	if sol {
		s += 2
	}
	return s
}

// RedirectionService is AMT_RedirectionService.
type RedirectionService struct {
	EnabledState    RedirectionState
	ListenerEnabled bool

	raw wsman.Instance
}

func parseRedirectionService(n *wsman.Node) (*RedirectionService, error) {
	f := read(n, "AMT_RedirectionService")
	r := &RedirectionService{
		EnabledState:    RedirectionState(f.int("EnabledState")),
		ListenerEnabled: f.bool("ListenerEnabled"),
		raw:             wsman.InstanceFromNode(URIRedirectionService, n),
	}
	return r, f.err
}

// RedirectionService reads AMT_RedirectionService.
func (c *Client) RedirectionService(ctx context.Context) (*RedirectionService, error) {
	n, err := c.get(ctx, "get redirection service", URIRedirectionService)
	if err != nil {
		return nil, err
	}
	return parseRedirectionService(n)
}

// Redirection is which redirection features a device should have on.
type Redirection struct {
	IDER, SOL bool
	// KVM nil leaves KVM alone and out of the listener decision: for a
	// device without KVM (Standard Manageability), or a caller that sets
	// it separately with SetKVM.
	KVM *bool
}

// ApplyRedirection sets IDE-R/SOL (RequestStateChange), KVM, and the
// redirection listener, which must be on for any of them to be usable
// (S9). The listener goes on before the features and off after them.
func (c *Client) ApplyRedirection(ctx context.Context, r Redirection) error {
	listener := r.IDER || r.SOL || (r.KVM != nil && *r.KVM)
	if listener {
		if err := c.SetRedirectionListener(ctx, true); err != nil {
			return err
		}
	}
	if err := c.requestStateChange(ctx, "redirection state change", URIRedirectionService, int(RedirectionFor(r.IDER, r.SOL))); err != nil {
		return err
	}
	if r.KVM != nil {
		if err := c.requestStateChange(ctx, "kvm state change", URIKVMRedirectionSAP, enabledState(*r.KVM)); err != nil {
			return err
		}
	}
	if !listener {
		return c.SetRedirectionListener(ctx, false)
	}
	return nil
}

// SetRedirection applies IDE-R and SOL with the listener following them;
// a later SetKVM(true) turns the listener back on for KVM.
func (c *Client) SetRedirection(ctx context.Context, ider, sol bool) error {
	return c.ApplyRedirection(ctx, Redirection{IDER: ider, SOL: sol})
}

// SetRedirectionListener puts AMT_RedirectionService.ListenerEnabled (the
// redirection port KVM, SOL and IDE-R all go through); no write when it
// already is as wanted (flash writes are limited).
func (c *Client) SetRedirectionListener(ctx context.Context, on bool) error {
	rs, err := c.RedirectionService(ctx)
	if err != nil {
		return err
	}
	if rs.ListenerEnabled == on {
		return nil
	}
	in := rs.raw
	in.Fields = append([]wsman.Field(nil), rs.raw.Fields...)
	in.Set("ListenerEnabled", fmtBool(on))
	_, err = c.put(ctx, "put redirection service", in)
	return err
}

// CIM RequestStateChange values for KVM and the web UI.
const (
	StateEnabled        = 2
	StateDisabled       = 3
	stateEnabledOffline = 6
)

func enabledState(on bool) int {
	if on {
		return StateEnabled
	}
	return StateDisabled
}

// SetKVM enables or disables KVM redirection (CIM_KVMRedirectionSAP);
// enabling it turns the redirection listener on first, without which KVM
// is unusable.
func (c *Client) SetKVM(ctx context.Context, enabled bool) error {
	if enabled {
		if err := c.SetRedirectionListener(ctx, true); err != nil {
			return err
		}
	}
	return c.requestStateChange(ctx, "kvm state change", URIKVMRedirectionSAP, enabledState(enabled))
}

// SetWebUI enables or disables the built-in web interface (S9).
func (c *Client) SetWebUI(ctx context.Context, enabled bool) error {
	return c.requestStateChange(ctx, "web ui state change", URIWebUIService, enabledState(enabled))
}

// PowerScheme is one AMT_SystemPowerScheme: the power states in which AMT is on.
type PowerScheme struct {
	InstanceID  string // "SCHEME 0"
	Description string // "Mobile: ON in S0"
	SchemeGUID  string
}

// PowerSchemes lists the schemes the platform offers.
func (c *Client) PowerSchemes(ctx context.Context) ([]PowerScheme, error) {
	items, err := c.enumerate(ctx, "enumerate power schemes", URISystemPowerScheme)
	if err != nil {
		return nil, err
	}
	return parsePowerSchemes(items), nil
}

func parsePowerSchemes(items []*wsman.Node) []PowerScheme {
	out := make([]PowerScheme, 0, len(items))
	for _, it := range items {
		out = append(out, PowerScheme{InstanceID: it.Get("InstanceID"), Description: it.Get("Description"), SchemeGUID: it.Get("SchemeGUID")})
	}
	return out
}

// SetPowerScheme activates the scheme with the given InstanceID (S9).
func (c *Client) SetPowerScheme(ctx context.Context, instanceID string) error {
	_, err := c.invoke(ctx, "set power scheme", URISystemPowerScheme, "SetPowerScheme", sel("InstanceID", instanceID))
	return err
}

// KVMEnabled reads whether KVM redirection is on (CIM_KVMRedirectionSAP).
func (c *Client) KVMEnabled(ctx context.Context) (bool, error) {
	return c.enabled(ctx, "get kvm", URIKVMRedirectionSAP, "CIM_KVMRedirectionSAP")
}

// WebUIEnabled reads whether the built-in web interface is on.
func (c *Client) WebUIEnabled(ctx context.Context) (bool, error) {
	return c.enabled(ctx, "get web ui service", URIWebUIService, "AMT_WebUIService")
}

func (c *Client) enabled(ctx context.Context, op, uri, class string) (bool, error) {
	n, err := c.get(ctx, op, uri)
	if err != nil {
		return false, err
	}
	f := read(n, class)
	// KVM reports 6, "enabled but offline", while no session is open.
	st := f.int("EnabledState")
	return st == StateEnabled || st == stateEnabledOffline, f.err
}
