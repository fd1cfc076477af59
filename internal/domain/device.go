package domain

import (
	"fmt"
	"net/netip"
	"path"
	"strings"
	"time"
)

// Status is a device's AMT status as an administrator sees it (S20).
type Status string

const (
	StatusUnknown               Status = "unknown"
	StatusNotSupported          Status = "not-supported"
	StatusDetected              Status = "detected" // AMT present, credentials unknown
	StatusNotProvisioned        Status = "not-provisioned"
	StatusProvisioned           Status = "provisioned"
	StatusExternallyProvisioned Status = "externally-provisioned"
)

// Statuses lists every status in display order.
var Statuses = []Status{StatusUnknown, StatusNotSupported, StatusDetected,
	StatusNotProvisioned, StatusProvisioned, StatusExternallyProvisioned}

// Valid reports whether s is one of the known statuses.
func (s Status) Valid() bool {
	for _, v := range Statuses {
		if s == v {
			return true
		}
	}
	return false
}

// ProvisioningState mirrors AMT_SetupAndConfigurationService.ProvisioningState.
type ProvisioningState int

const (
	ProvisioningPre  ProvisioningState = 0
	ProvisioningIn   ProvisioningState = 1
	ProvisioningPost ProvisioningState = 2
)

// Link is how the controller is attached to the network; S15 depends on it.
type Link string

const (
	LinkWired      Link = "wired"
	LinkWired8021X Link = "8021x-wired"
	LinkWireless   Link = "wireless"
)

// Device is one AMT-capable computer. ID is the AMT UUID when known,
// otherwise an ID derived from the address until discovery learns the UUID.
type Device struct {
	ID         string       `json:"id"`
	UUID       string       `json:"uuid,omitempty"`
	HostName   string       `json:"host_name"`
	Domain     string       `json:"domain"`
	IP         netip.Addr   `json:"ip"`
	Subnet     netip.Prefix `json:"subnet"`
	ComputerDN string       `json:"computer_dn,omitempty"` // Windows computer object in AD
	// ADAccountDN is the AMT account phase 1 published in AD (S4) and
	// SPNs the service principal names it registered there (S5); both
	// empty once a removal deleted the account.
	ADAccountDN string            `json:"ad_account_dn,omitempty"`
	SPNs        []string          `json:"spns,omitempty"`
	AMTVersion  string            `json:"amt_version,omitempty"`
	Status      Status            `json:"status"`
	State       ProvisioningState `json:"provisioning_state"`
	Link        Link              `json:"link,omitempty"`
	Collections []string          `json:"collections,omitempty"`
	// SuppressAutoProvision keeps sweeps away from a removed device (S18).
	SuppressAutoProvision bool `json:"suppress_auto_provision,omitempty"`
	// RenamePending blocks provisioning until the rename or domain move
	// completes (S19).
	RenamePending bool      `json:"rename_pending,omitempty"`
	LastError     string    `json:"last_error,omitempty"`
	LastErrorStep string    `json:"last_error_step,omitempty"`
	Warnings      []string  `json:"warnings,omitempty"`
	UpdatedAt     time.Time `json:"updated_at"`
	ProvisionedAt time.Time `json:"provisioned_at,omitzero"`
	// Hello is the device's last Hello (remote configuration); nil when
	// it never sent one.
	Hello *HelloSeen `json:"hello,omitempty"`
	// ControlMode is what the agent last read: 0 not known or not
	// activated, 1 client control (CCM), 2 admin control (ACM).
	ControlMode ControlMode `json:"control_mode,omitempty"`
}

// ControlMode mirrors IPS_HostBasedSetupService / GetControlMode.
type ControlMode int

// Control modes as firmware numbers them.
const (
	ControlModeNone   ControlMode = 0
	ControlModeClient ControlMode = 1 // CCM
	ControlModeAdmin  ControlMode = 2 // ACM
)

// String is the name administrators read.
func (m ControlMode) String() string {
	switch m {
	case ControlModeClient:
		return "ccm"
	case ControlModeAdmin:
		return "acm"
	}
	return ""
}

// HelloSeen is what a device's Hello said: it is in state 0 and trusts
// these provisioning roots.
type HelloSeen struct {
	At         time.Time  `json:"at"`
	IP         netip.Addr `json:"ip"`
	RetryCount uint32     `json:"retry_count"`
	// AdminCredentialsSet is the Hello's flag: an admin password was set
	// in the MEBx before remote configuration.
	AdminCredentialsSet bool       `json:"admin_credentials_set,omitempty"`
	TrustedRoots        []RootHash `json:"trusted_roots,omitempty"`
	// Batch is the provision batch a Hello started, so that the Hellos
	// a device repeats while it runs start nothing new.
	Batch string `json:"batch,omitempty"`
}

// RootHash is one trusted-root hash of a Hello: algorithm as firmware
// numbers it (1 SHA-1, 2 SHA-256, 3 SHA-384) and digest.
type RootHash struct {
	Alg int    `json:"alg"`
	Sum []byte `json:"sum"`
}

// FQDN is the fully qualified name the controller gets (S8) and the
// certificate carries (S2).
func (d Device) FQDN() string {
	if d.Domain == "" {
		return d.HostName
	}
	return d.HostName + "." + d.Domain
}

// Validate checks the fields every operation relies on.
func (d Device) Validate() error {
	if d.ID == "" {
		return fieldErr("device.id", d.ID, "must not be empty")
	}
	if !d.Status.Valid() {
		return fieldErr("device.status", string(d.Status), "unknown status")
	}
	if d.HostName != "" {
		if err := ValidateHostName(d.HostName); err != nil {
			return err
		}
	}
	if len(d.Domain) > 191 {
		return fieldErr("device.domain", d.Domain, "longer than 191 characters")
	}
	if d.IP.IsValid() && d.Subnet.IsValid() && !d.Subnet.Contains(d.IP) {
		return fieldErr("device.subnet", d.Subnet.String(), "does not contain device.ip "+d.IP.String())
	}
	return nil
}

// ValidateHostName applies AMT's host name limit (63) and DNS label rules.
func ValidateHostName(h string) error {
	if h == "" || len(h) > 63 {
		return fieldErr("device.host_name", h, "must be 1 to 63 characters")
	}
	for _, r := range h {
		if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return fieldErr("device.host_name", h, "only letters, digits and '-' are allowed")
		}
	}
	if strings.HasPrefix(h, "-") || strings.HasSuffix(h, "-") {
		return fieldErr("device.host_name", h, "must not start or end with '-'")
	}
	return nil
}

// Provisionable reports whether a provisioning job may start now, and why not.
func (d Device) Provisionable() error {
	switch {
	case d.RenamePending:
		return fmt.Errorf("device %s: %w", d.ID, ErrRenamePending)
	case d.Status == StatusNotSupported:
		return fmt.Errorf("device %s: %w", d.ID, ErrNotSupported)
	case d.HostName == "":
		return fieldErr("device.host_name", "", "required to provision "+d.ID)
	}
	return nil
}

// AutoProvisionable reports whether a sweep should pick the device up (S18, S19, S22).
func (d Device) AutoProvisionable() bool {
	return d.Status == StatusNotProvisioned && !d.SuppressAutoProvision && !d.RenamePending && d.HostName != ""
}

// Collection groups devices; AutoProvision makes sweeps provision its
// members (S22).
type Collection struct {
	Name          string `json:"name"`
	Description   string `json:"description,omitempty"`
	AutoProvision bool   `json:"auto_provision"`
	// Rules add every device they match, now and at each sweep (C8).
	Rules     []CollectionRule `json:"rules,omitempty"`
	CreatedAt time.Time        `json:"created_at"`
}

// CollectionRule matches devices by subnet and/or host-name pattern; a
// device matches when every criterion set holds.
type CollectionRule struct {
	Subnet netip.Prefix `json:"subnet,omitzero"`
	// NamePattern is a shell glob (path.Match) on the host name,
	// compared case-insensitively as Windows names are.
	NamePattern string `json:"name_pattern,omitempty"`
}

// Validate refuses an empty rule (it would match the whole fleet) and a
// malformed pattern.
func (r CollectionRule) Validate() error {
	if !r.Subnet.IsValid() && r.NamePattern == "" {
		return fieldErr("rule", "", "needs a subnet, a name pattern or both")
	}
	if _, err := path.Match(r.NamePattern, ""); err != nil {
		return fieldErr("rule.name_pattern", r.NamePattern, "not a valid glob")
	}
	return nil
}

// Matches reports whether d satisfies every criterion of the rule.
func (r CollectionRule) Matches(d Device) bool {
	if r.Subnet.IsValid() && (!d.IP.IsValid() || !r.Subnet.Contains(d.IP)) {
		return false
	}
	if r.NamePattern != "" {
		ok, _ := path.Match(strings.ToLower(r.NamePattern), strings.ToLower(d.HostName))
		return ok
	}
	return true
}

// Validate checks a collection name: it is used in keys and command lines.
func (c Collection) Validate() error {
	if c.Name == "" || len(c.Name) > 64 {
		return fieldErr("collection.name", c.Name, "must be 1 to 64 characters")
	}
	for _, r := range c.Name {
		if !(r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return fieldErr("collection.name", c.Name, "only letters, digits, '-', '_' and '.' are allowed")
		}
	}
	for _, r := range c.Rules {
		if err := r.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// Agent is an enrolled per-subnet agent.
type Agent struct {
	ID            string         `json:"id"`
	Name          string         `json:"name,omitempty"` // the agent's own, from its configuration
	Subnets       []netip.Prefix `json:"subnets"`
	CertSerial    string         `json:"cert_serial,omitempty"`
	LastHeartbeat time.Time      `json:"last_heartbeat,omitzero"`
	EnrolledAt    time.Time      `json:"enrolled_at"`
	// Version is the agent's build: from enrollment, then from each
	// heartbeat.
	Version string `json:"version,omitempty"`
	// InFlight and Capacity are what the agent reported in its last
	// heartbeat: jobs running and the most it runs at once; Address is
	// where that heartbeat came from. Kept beside the record
	// (store.RecordLoad), not in it.
	InFlight int    `json:"-"`
	Capacity int    `json:"-"`
	Address  string `json:"-"`
	// Hellos counts the Hellos the agent reported (store.CountHellos).
	Hellos int64 `json:"-"`
}

// AgentLoad is what one heartbeat tells of its agent.
type AgentLoad struct {
	InFlight int    `json:"in"`
	Capacity int    `json:"cap"`
	Version  string `json:"v,omitempty"`
	Address  string `json:"addr,omitempty"`
}

// Authorized reports whether the agent may act for subnet.
func (a Agent) Authorized(subnet netip.Prefix) bool {
	for _, s := range a.Subnets {
		if s == subnet.Masked() {
			return true
		}
	}
	return false
}

// DeviceFacts is what an agent learned from a controller.
type DeviceFacts struct {
	UUID              string
	AMTVersion        string
	Link              Link // "" when not known
	ProvisioningState ProvisioningState
	ControlMode       ControlMode // 0 when the agent did not read it
}

// Apply records the facts on d: a UUID only where none is known yet, the
// version, link and control mode where the agent saw them.
func (f *DeviceFacts) Apply(d *Device) {
	if f == nil {
		return
	}
	if f.UUID != "" && d.UUID == "" {
		d.UUID = f.UUID
	}
	if f.AMTVersion != "" {
		d.AMTVersion = f.AMTVersion
	}
	if f.Link != "" {
		d.Link = f.Link
	}
	if f.ControlMode != ControlModeNone {
		d.ControlMode = f.ControlMode
	}
}
