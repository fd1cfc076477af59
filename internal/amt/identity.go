package amt

import (
	"context"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"github.com/amtops/amtops/internal/wsman"
)

// Field limits AMT enforces on AMT_GeneralSettings.
const (
	MaxHostNameLen   = 63
	MaxDomainNameLen = 191
)

// GeneralSettings is AMT_GeneralSettings. Change the exported fields and
// pass it back to PutGeneralSettings; the other properties of the instance
// are sent back unchanged.
type GeneralSettings struct {
	InstanceID              string
	HostName                string
	DomainName              string
	DigestRealm             string
	PingResponseEnabled     bool
	RmcpPingResponseEnabled bool
	SharedFQDN              bool
	NetworkInterfaceEnabled bool

	raw wsman.Instance
}

func parseGeneralSettings(n *wsman.Node) (*GeneralSettings, error) {
	f := read(n, "AMT_GeneralSettings")
	gs := &GeneralSettings{
		InstanceID:              f.str("InstanceID"),
		HostName:                f.str("HostName"),
		DomainName:              f.str("DomainName"),
		DigestRealm:             f.str("DigestRealm"),
		PingResponseEnabled:     f.bool("PingResponseEnabled"),
		RmcpPingResponseEnabled: f.bool("RmcpPingResponseEnabled"),
		SharedFQDN:              f.bool("SharedFQDN"),
		NetworkInterfaceEnabled: f.bool("NetworkInterfaceEnabled"),
		raw:                     wsman.InstanceFromNode(URIGeneralSettings, n),
	}
	return gs, f.err
}

// GeneralSettings reads AMT_GeneralSettings.
func (c *Client) GeneralSettings(ctx context.Context) (*GeneralSettings, error) {
	n, err := c.get(ctx, "get general settings", URIGeneralSettings)
	if err != nil {
		return nil, err
	}
	return parseGeneralSettings(n)
}

// validateFQDNPart checks a host or domain name AMT will accept.
func validateFQDNPart(field, v string, max int, allowDots bool) error {
	if len(v) > max {
		return fmt.Errorf("amt: %s is %d characters, AMT allows %d", field, len(v), max)
	}
	for i := 0; i < len(v); i++ {
		ch := v[i]
		ok := ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || (allowDots && ch == '.')
		if !ok {
			return fmt.Errorf("amt: %s %q: character %q not allowed", field, v, ch)
		}
	}
	return nil
}

// PutGeneralSettings writes gs back as a whole instance (AMT rejects partial
// Puts). gs must come from GeneralSettings.
func (c *Client) PutGeneralSettings(ctx context.Context, gs *GeneralSettings) (*GeneralSettings, error) {
	if gs == nil || gs.raw.Class == "" {
		return nil, fmt.Errorf("amt: put general settings: settings were not read from the device")
	}
	// Only values we change are checked: a device may hold names we would
	// not write, and putting them back unchanged is fine.
	if gs.HostName != gs.raw.Get("HostName") {
		if err := validateFQDNPart("HostName", gs.HostName, MaxHostNameLen, false); err != nil {
			return nil, err
		}
	}
	if gs.DomainName != gs.raw.Get("DomainName") {
		if err := validateFQDNPart("DomainName", gs.DomainName, MaxDomainNameLen, true); err != nil {
			return nil, err
		}
	}
	in := gs.raw
	in.Fields = append([]wsman.Field(nil), gs.raw.Fields...)
	in.Set("HostName", gs.HostName)
	in.Set("DomainName", gs.DomainName)
	in.Set("PingResponseEnabled", fmtBool(gs.PingResponseEnabled))
	if in.Get("RmcpPingResponseEnabled") != "" || gs.RmcpPingResponseEnabled {
		in.Set("RmcpPingResponseEnabled", fmtBool(gs.RmcpPingResponseEnabled))
	}
	in.SortFields()
	n, err := c.put(ctx, "put general settings", in)
	if err != nil {
		return nil, err
	}
	if n == nil || n.Local != "AMT_GeneralSettings" {
		out := *gs
		out.raw = in
		return &out, nil
	}
	return parseGeneralSettings(n)
}

// SetFQDN sets HostName and DomainName (S8): get, modify, put.
func (c *Client) SetFQDN(ctx context.Context, host, domain string) error {
	gs, err := c.GeneralSettings(ctx)
	if err != nil {
		return err
	}
	gs.HostName, gs.DomainName = host, domain
	_, err = c.PutGeneralSettings(ctx, gs)
	return err
}

// SetPing sets ICMP and RMCP ping response (S9).
func (c *Client) SetPing(ctx context.Context, icmp, rmcp bool) error {
	gs, err := c.GeneralSettings(ctx)
	if err != nil {
		return err
	}
	gs.PingResponseEnabled, gs.RmcpPingResponseEnabled = icmp, rmcp
	_, err = c.PutGeneralSettings(ctx, gs)
	return err
}

// Provisioning states and modes of AMT_SetupAndConfigurationService.
const (
	ProvisioningStatePre  = 0
	ProvisioningStateIn   = 1
	ProvisioningStatePost = 2

	ProvisioningModeAdmin  = 1 // admin control mode
	ProvisioningModeClient = 4 // client control mode
)

// SetupAndConfiguration is AMT_SetupAndConfigurationService.
type SetupAndConfiguration struct {
	ProvisioningState             int
	ProvisioningMode              int
	PasswordModel                 int
	EnabledState                  int
	ZeroTouchConfigurationEnabled bool
}

func parseSetupAndConfiguration(n *wsman.Node) (*SetupAndConfiguration, error) {
	f := read(n, "AMT_SetupAndConfigurationService")
	s := &SetupAndConfiguration{
		ProvisioningState:             f.int("ProvisioningState"),
		ProvisioningMode:              f.int("ProvisioningMode"),
		PasswordModel:                 f.int("PasswordModel"),
		EnabledState:                  f.int("EnabledState"),
		ZeroTouchConfigurationEnabled: f.bool("ZeroTouchConfigurationEnabled"),
	}
	return s, f.err
}

// SetupAndConfiguration reads the provisioning state and mode.
func (c *Client) SetupAndConfiguration(ctx context.Context) (*SetupAndConfiguration, error) {
	n, err := c.get(ctx, "get setup and configuration", URISetupAndConfiguration)
	if err != nil {
		return nil, err
	}
	return parseSetupAndConfiguration(n)
}

// UUID calls GetUuid and returns the canonical UUID string.
func (c *Client) UUID(ctx context.Context) (string, error) {
	out, err := c.invokeRead(ctx, "get uuid", URISetupAndConfiguration, "GetUuid", nil)
	if err != nil {
		return "", err
	}
	return parseUUID(out.Get("UUID"))
}

// parseUUID decodes GetUuid's base64 of 16 bytes whose first three fields
// (4, 2, 2 bytes) are little-endian, SMBIOS style.
func parseUUID(b64 string) (string, error) {
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(b) != 16 {
		return "", fmt.Errorf("amt: GetUuid.UUID %q is not base64 of 16 bytes", b64)
	}
	return fmt.Sprintf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%x-%x",
		b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8:10], b[10:16]), nil
}

// FirmwareVersions enumerates CIM_SoftwareIdentity: InstanceID → VersionString
// ("AMT" is the firmware version, "Sku", "Build Number", …).
func (c *Client) FirmwareVersions(ctx context.Context) (map[string]string, error) {
	items, err := c.enumerate(ctx, "enumerate software identity", URISoftwareIdentity)
	if err != nil {
		return nil, err
	}
	return parseVersions(items), nil
}

func parseVersions(items []*wsman.Node) map[string]string {
	m := map[string]string{}
	for _, it := range items {
		if id := it.Get("InstanceID"); id != "" {
			m[id] = it.Get("VersionString")
		}
	}
	return m
}

// Identity is what the agent reports about a device it can log in to.
type Identity struct {
	UUID              string
	Version           string // CIM_SoftwareIdentity "AMT"
	HostName          string
	DomainName        string
	DigestRealm       string
	ProvisioningState int
	ProvisioningMode  int
	// SKU is CIM_SoftwareIdentity "Sku" (a bit mask; 0 when the firmware
	// reports none or no number).
	SKU int64
}

// SKU bits of CIM_SoftwareIdentity "Sku" (AMT 5 and later), as Intel's
// rpc-go decodes them (amtinfo): 0x08 AMT Pro, 0x10 Intel Standard
// Manageability, which has no KVM.
const (
	SKUAMTPro                = 0x08
	SKUStandardManageability = 0x10
)

// StandardManageability reports an Intel Standard Manageability device:
// no KVM redirection.
func (id *Identity) StandardManageability() bool { return id.SKU&SKUStandardManageability != 0 }

// FQDN joins host and domain names.
func (id *Identity) FQDN() string {
	if id.DomainName == "" {
		return id.HostName
	}
	return strings.TrimSuffix(id.HostName+"."+id.DomainName, ".")
}

// Identity reads UUID, firmware version, names and provisioning state.
func (c *Client) Identity(ctx context.Context) (*Identity, error) {
	gs, err := c.GeneralSettings(ctx)
	if err != nil {
		return nil, err
	}
	sc, err := c.SetupAndConfiguration(ctx)
	if err != nil {
		return nil, err
	}
	uuid, err := c.UUID(ctx)
	if err != nil {
		return nil, err
	}
	vers, err := c.FirmwareVersions(ctx)
	if err != nil {
		return nil, err
	}
	// Sku is read in the same Pull as the version: no extra call.
	sku, _ := strconv.ParseInt(strings.TrimSpace(vers["Sku"]), 0, 64)
	return &Identity{
		UUID: uuid, Version: vers["AMT"], SKU: sku,
		HostName: gs.HostName, DomainName: gs.DomainName, DigestRealm: gs.DigestRealm,
		ProvisioningState: sc.ProvisioningState, ProvisioningMode: sc.ProvisioningMode,
	}, nil
}

// CommitChanges makes pending configuration effective. The firmware then
// restarts its network stack: wait a few seconds before the next call (and
// switch to TLS if TLS was just enabled).
func (c *Client) CommitChanges(ctx context.Context) error {
	_, err := c.invoke(ctx, "commit changes", URISetupAndConfiguration, "CommitChanges", nil)
	return err
}

// PartialUnprovision removes configuration but keeps identity (S16).
func (c *Client) PartialUnprovision(ctx context.Context) error {
	_, err := c.invoke(ctx, "partial unprovision", URISetupAndConfiguration, "PartialUnprovision", nil)
	return err
}

// Unprovision removes configuration and identity (S16); mode is the
// ProvisioningMode to return to, normally ProvisioningModeAdmin (1).
func (c *Client) Unprovision(ctx context.Context, mode int) error {
	_, err := c.invoke(ctx, "unprovision", URISetupAndConfiguration, "Unprovision", nil, intField("ProvisioningMode", mode))
	return err
}

// Control modes of IPS_HostBasedSetupService.CurrentControlMode.
const (
	ControlModeNone   = 0
	ControlModeClient = 1 // CCM: user consent forced for KVM, SOL, IDE-R; no SetMEBxPassword
	ControlModeAdmin  = 2 // ACM
)

// ControlModeName is "none", "ccm", "acm" or "mode-<n>".
func ControlModeName(mode int) string {
	switch mode {
	case ControlModeNone:
		return "none"
	case ControlModeClient:
		return "ccm"
	case ControlModeAdmin:
		return "acm"
	}
	return "mode-" + strconv.Itoa(mode)
}

// ControlMode reads IPS_HostBasedSetupService.CurrentControlMode.
func (c *Client) ControlMode(ctx context.Context) (int, error) {
	n, err := c.get(ctx, "get host based setup service", URIHostBasedSetup)
	if err != nil {
		return 0, err
	}
	if !n.Has("CurrentControlMode") {
		return 0, fmt.Errorf("amt: get host based setup service: %w: no CurrentControlMode", wsman.ErrMalformed)
	}
	f := read(n, "IPS_HostBasedSetupService")
	mode := f.int("CurrentControlMode")
	return mode, f.err
}

// SetMEBxPassword sets the MEBx password (the one typed at the machine,
// and the remote-configuration login of a factory device). The firmware
// takes it in ACM, during provisioning, and refuses it in CCM (16).
func (c *Client) SetMEBxPassword(ctx context.Context, password string) error {
	if err := ValidatePassword(password); err != nil {
		return fmt.Errorf("amt: set mebx password: %w", err)
	}
	_, err := c.invoke(ctx, "set mebx password", URISetupAndConfiguration, "SetMEBxPassword", nil, field("Password", password))
	return err
}
