package amtsim

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Kind is how a device starts (its profile, see ParseProfile). The zero
// value is the fleet default: factory in Config, Config.Kind in an Override.
type Kind int

const (
	KindFactory  Kind = iota + 1 // state 0: dark but for its Hellos and the remote-configuration session on 16993
	KindMEBx                     // state 2, ACM set up by hand in the MEBx, admin/Config.Password
	KindCCM                      // state 2, client control (host-based setup), admin/Config.Password
	KindExternal                 // state 2, admin password unknown to anyone
	KindNotAMT                   // nothing listens on the address
)

func (k Kind) String() string { return k.Profile() }

// Link is the network link the device is managed over (S15 depends on it).
type Link string

const (
	LinkWired            Link = "wired"
	LinkWired8021X       Link = "8021x-wired"
	LinkWireless         Link = "wireless"
	defaultVersion            = "11.8.50"
	defaultHTTPPort           = 16992
	defaultTLSPort            = 16993
	defaultNonceTTL           = 5 * time.Minute
	defaultKeyPool            = 16
	defaultMEBxPassword       = "admin"
	defaultHelloInterval      = time.Minute
)

// Firmware.MEBxPolicy and Firmware.KVMWithoutListener values.
const (
	MEBxDefaultOnly = "default-only"
	MEBxDuringSetup = "during-setup"
	MEBxAnytime     = "anytime"
	KVMIneffective  = "ineffective"
	KVMRefuse       = "refuse"
)

// Override changes one device's start state; zero fields keep the fleet
// default (so Kind 0 inherits Config.Kind).
type Override struct {
	Kind          Kind
	Password      string // admin password (mebx, ccm)
	Version       string // AMT version, e.g. "16.1.25"
	Link          Link
	MEBxPassword  string // factory devices: the MEBx password of the remote-configuration login
	TrustedDomain string // factory devices: the PKI DNS suffix the provisioning leaf's CN must end in
	SKU           SKU    // firmware SKU; zero inherits Config.SKU
}

// SKU is the firmware's product SKU (CIM_SoftwareIdentity "Sku").
type SKU string

const (
	// SKUAMT is full Intel AMT (vPro): "Sku" 16392, AMT Pro + Corporate,
	// as in the captured fixture.
	SKUAMT SKU = "amt"
	// SKUStandard is Intel Standard Manageability: "Sku" bit 0x10 instead
	// of AMT Pro (0x08), and no KVM: CIM_KVMRedirectionSAP has no
	// instance (a DestinationUnreachable fault). That the class is absent
	// rather than present-but-refusing is not confirmed on real firmware;
	// Intel's rpc-go never asks an ISM device about KVM.
	SKUStandard SKU = "standard"
)

// ParseSKU reads the --sku flag: "amt" or "standard".
func ParseSKU(s string) (SKU, error) {
	switch k := SKU(strings.ToLower(strings.TrimSpace(s))); k {
	case SKUAMT, SKUStandard:
		return k, nil
	}
	return "", fmt.Errorf("sku %q unknown (want %s or %s)", s, SKUAMT, SKUStandard)
}

// skuValue is the "Sku" VersionString: bit 0x08 AMT Pro or 0x10 Standard
// Manageability, plus 0x4000 (Corporate), as Intel's rpc-go decodes it.
func (k SKU) skuValue() string {
	if k == SKUStandard {
		return "16400"
	}
	return "16392"
}

// Config describes a simulated fleet. Devices get consecutive addresses
// from BaseIP.
type Config struct {
	Devices  int
	BaseIP   netip.Addr
	HTTPPort int // default 16992
	TLSPort  int // default 16993
	// Password is the admin password of every mebx and ccm device (set
	// by hand in the MEBx); it must satisfy the firmware's complexity rule.
	Password string
	// Kind is the fleet's profile (zero: factory).
	Kind    Kind
	Version string // default "11.8.50"
	Link    Link   // default wired
	SKU     SKU    // default SKUAMT
	// Latency is added to every answer; CommitDelay is how long the listener
	// stays down after CommitChanges, Unprovision or an injected reboot.
	Latency, CommitDelay time.Duration
	NonceTTL             time.Duration // digest nonce lifetime, default 5m
	Faults               FaultSpec
	Seed                 int64
	// KeyPoolSize bounds how many distinct RSA keys GenerateKeyPair hands out
	// across the fleet (RSA generation costs ~100 ms of CPU each); a device
	// never gets the same pool key twice while it has fewer keys than the pool.
	// 0 means 16; negative generates a fresh key on every call.
	KeyPoolSize int
	Now         func() time.Time
	Log         zerolog.Logger
	Overrides   map[netip.Addr]Override
	// AllowNonLoopback permits a BaseIP outside 127.0.0.0/8.
	AllowNonLoopback bool

	Firmware
}

// Firmware holds the settings of the remote-configuration (factory) path
// and the firmware rules whose exact values are not documented.
type Firmware struct {
	// MEBxPassword is the login of the remote-configuration session
	// ("admin" as user); default "admin", not checked for complexity.
	MEBxPassword string
	// TrustHashes are root-certificate hashes added to every device's
	// trusted list (20, 32 or 48 bytes: SHA-1, SHA-256, SHA-384), as in
	// the MEBx; the factory list is always there unless NoDefaultHashes.
	TrustHashes     [][]byte
	NoDefaultHashes bool
	// FactoryHashes join the factory list itself, as the root of a
	// commercial provisioning CA whose hash ships in the firmware: unlike
	// TrustHashes they survive a full unprovision.
	FactoryHashes [][]byte
	// KeepHashesOnUnprovision keeps TrustHashes after Unprovision; Intel's
	// Open AMT documentation says full unprovisioning deletes added hashes.
	KeepHashesOnUnprovision bool
	// TrustedDomain is the DNS suffix (DHCP option 15 or the MEBx PKI DNS
	// suffix) the provisioning leaf's CN must end in; empty refuses all.
	TrustedDomain string
	// HelloAddr is where factory devices send Hellos ("host:port"); empty:
	// no bare-metal Hellos, only TriggerHello (in-band) opens the window.
	HelloAddr string
	// HelloInterval is the schedule's base unit (default 1m: every minute
	// for 5, every 5 for an hour, hourly for 23 h); 1s compresses it 60×.
	HelloInterval time.Duration
	// HelloAfterUnprovision starts a new Hello cycle right after a full
	// unprovision (as a device powered on again would).
	HelloAfterUnprovision bool
	// FactoryHTTP keeps 16992 open on a state-0 device, answering Identify
	// and refusing every login; false (default): connections refused.
	FactoryHTTP bool
	// TLSRestart is how long 16993 stays silent after a commit that changed
	// TLS; zero: CommitDelay (the CLI defaults it to 20s).
	TLSRestart time.Duration
	// LockoutThreshold wrong digest passwords in a row lock an account for
	// LockoutDuration (right passwords refused too); 0 disables.
	LockoutThreshold int
	LockoutDuration  time.Duration
	// NonceReset, when set, invalidates every nonce on that period
	// (firmware may reset nonces at any time); user-list changes always do.
	NonceReset time.Duration
	// MEBxPolicy is when a provisioned device takes SetMEBxPassword:
	// MEBxDefaultOnly (default: while the factory MEBx password is
	// unchanged), MEBxDuringSetup (never once provisioned) or MEBxAnytime.
	MEBxPolicy string
	// KVMWithoutListener is what CIM_KVMRedirectionSAP.RequestStateChange(2)
	// does while the redirection listener is off: KVMIneffective (default:
	// accepted, EnabledState stays 3) or KVMRefuse (ReturnValue 16).
	KVMWithoutListener string
	// RootsWhileMutual lets AddTrustedRootCertificate work while a TLS
	// setting has MutualAuthentication on; Intel documents that firmware
	// refuses it (default: refused, ReturnValue 16).
	RootsWhileMutual bool
	// MutualTLSAnyEKU accepts a mutual-TLS client leaf whose extended key
	// usages leave out clientAuth. Default: a leaf that lists EKUs must
	// list clientAuth (as a TLS stack checking the "SSL client" purpose
	// does); whether AMT checks the EKU at all is not confirmed.
	MutualTLSAnyEKU bool
	// WebUIUntil is the last major version with a web UI (default 15).
	WebUIUntil int
	// DERKeySPKIFrom is the first major version whose DERKey is
	// SubjectPublicKeyInfo rather than PKCS#1 (0: always PKCS#1).
	DERKeySPKIFrom int
}

func (c *Config) validate() error {
	if c.Devices <= 0 {
		return fmt.Errorf("amtsim: config: Devices must be positive, got %d", c.Devices)
	}
	if !c.BaseIP.Is4() {
		return fmt.Errorf("amtsim: config: BaseIP must be an IPv4 address, got %q", c.BaseIP)
	}
	last, ok := addrAdd(c.BaseIP, c.Devices-1)
	if !ok {
		return fmt.Errorf("amtsim: config: BaseIP %s + %d devices overflows", c.BaseIP, c.Devices)
	}
	if !c.AllowNonLoopback && (!c.BaseIP.IsLoopback() || !last.IsLoopback()) {
		return fmt.Errorf("amtsim: config: BaseIP %s..%s leaves 127.0.0.0/8 (set AllowNonLoopback to permit)", c.BaseIP, last)
	}
	if c.HTTPPort == 0 {
		c.HTTPPort = defaultHTTPPort
	}
	if c.TLSPort == 0 {
		c.TLSPort = defaultTLSPort
	}
	for name, p := range map[string]int{"HTTPPort": c.HTTPPort, "TLSPort": c.TLSPort} {
		if p < 1 || p > 65535 {
			return fmt.Errorf("amtsim: config: %s %d out of range", name, p)
		}
	}
	if c.HTTPPort == c.TLSPort {
		return fmt.Errorf("amtsim: config: HTTPPort and TLSPort are both %d", c.HTTPPort)
	}
	if c.Password != "" || c.needsPassword() {
		if err := checkPassword(c.Password); err != nil {
			return fmt.Errorf("amtsim: config: Password: %w", err)
		}
	}
	if c.Version == "" {
		c.Version = defaultVersion
	}
	if err := c.Firmware.validate(); err != nil {
		return err
	}
	if c.Kind == 0 {
		c.Kind = KindFactory
	}
	if c.Kind < KindFactory || c.Kind > KindNotAMT {
		return fmt.Errorf("amtsim: config: Kind %d unknown", c.Kind)
	}
	if _, err := versionMajor(c.Version); err != nil {
		return fmt.Errorf("amtsim: config: Version: %w", err)
	}
	if c.Link == "" {
		c.Link = LinkWired
	}
	if c.SKU == "" {
		c.SKU = SKUAMT
	}
	if _, err := ParseSKU(string(c.SKU)); err != nil {
		return fmt.Errorf("amtsim: config: SKU: %w", err)
	}
	for a, ov := range c.Overrides {
		if _, err := ParseSKU(string(ov.SKU)); ov.SKU != "" && err != nil {
			return fmt.Errorf("amtsim: config: Overrides[%s].SKU: %w", a, err)
		}
	}
	if !c.Link.valid() {
		return fmt.Errorf("amtsim: config: Link %q unknown", c.Link)
	}
	if c.Latency < 0 || c.CommitDelay < 0 || c.NonceTTL < 0 {
		return fmt.Errorf("amtsim: config: Latency, CommitDelay and NonceTTL must not be negative")
	}
	if c.NonceTTL == 0 {
		c.NonceTTL = defaultNonceTTL
	}
	if c.KeyPoolSize == 0 {
		c.KeyPoolSize = defaultKeyPool
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	for a, o := range c.Overrides {
		i, ok := addrIndex(c.BaseIP, a)
		if !ok || i >= c.Devices {
			return fmt.Errorf("amtsim: config: Overrides: %s is not a fleet address", a)
		}
		if o.Kind < 0 || o.Kind > KindNotAMT {
			return fmt.Errorf("amtsim: config: Overrides[%s].Kind %d unknown", a, o.Kind)
		}
		if o.Password != "" {
			if err := checkPassword(o.Password); err != nil {
				return fmt.Errorf("amtsim: config: Overrides[%s].Password: %w", a, err)
			}
		}
		if o.Version != "" {
			if _, err := versionMajor(o.Version); err != nil {
				return fmt.Errorf("amtsim: config: Overrides[%s].Version: %w", a, err)
			}
		}
		if o.Link != "" && !o.Link.valid() {
			return fmt.Errorf("amtsim: config: Overrides[%s].Link %q unknown", a, o.Link)
		}
	}
	return nil
}

// needsPassword: some device logs in with Config.Password (mebx and ccm
// devices without their own).
func (c *Config) needsPassword() bool {
	uses := func(k Kind) bool { return k != KindFactory && k != KindExternal && k != KindNotAMT }
	if uses(c.Kind) && len(c.Overrides) < c.Devices {
		return true
	}
	for _, o := range c.Overrides {
		k := o.Kind
		if k == 0 {
			k = c.Kind
		}
		if uses(k) && o.Password == "" {
			return true
		}
	}
	return false
}

func (l Link) valid() bool { return l == LinkWired || l == LinkWired8021X || l == LinkWireless }

func versionMajor(v string) (int, error) {
	fv, err := parseVersion(v)
	return fv.major, err
}

func (f *Firmware) validate() error {
	if f.MEBxPassword == "" {
		f.MEBxPassword = defaultMEBxPassword
	}
	for name, hs := range map[string][][]byte{"TrustHashes": f.TrustHashes, "FactoryHashes": f.FactoryHashes} {
		for i, h := range hs {
			if hashType(h) == 0 {
				return fmt.Errorf("amtsim: config: %s[%d]: %d bytes is no SHA-1, SHA-256 or SHA-384 hash", name, i, len(h))
			}
		}
	}
	f.TrustedDomain = strings.Trim(strings.ToLower(f.TrustedDomain), ".")
	if f.HelloAddr != "" {
		if _, _, err := net.SplitHostPort(f.HelloAddr); err != nil {
			return fmt.Errorf("amtsim: config: HelloAddr %q: %w", f.HelloAddr, err)
		}
	}
	if f.HelloInterval < 0 || f.TLSRestart < 0 || f.LockoutDuration < 0 || f.NonceReset < 0 || f.LockoutThreshold < 0 {
		return fmt.Errorf("amtsim: config: HelloInterval, TLSRestart, LockoutThreshold, LockoutDuration and NonceReset must not be negative")
	}
	if f.HelloInterval == 0 {
		f.HelloInterval = defaultHelloInterval
	}
	if f.LockoutThreshold > 0 && f.LockoutDuration == 0 {
		f.LockoutDuration = time.Minute
	}
	switch f.MEBxPolicy {
	case "":
		f.MEBxPolicy = MEBxDefaultOnly
	case MEBxDefaultOnly, MEBxDuringSetup, MEBxAnytime:
	default:
		return fmt.Errorf("amtsim: config: MEBxPolicy %q unknown (want %s, %s or %s)", f.MEBxPolicy, MEBxDefaultOnly, MEBxDuringSetup, MEBxAnytime)
	}
	switch f.KVMWithoutListener {
	case "":
		f.KVMWithoutListener = KVMIneffective
	case KVMIneffective, KVMRefuse:
	default:
		return fmt.Errorf("amtsim: config: KVMWithoutListener %q unknown (want %s or %s)", f.KVMWithoutListener, KVMIneffective, KVMRefuse)
	}
	if f.WebUIUntil == 0 {
		f.WebUIUntil = defaultWebUIUntil
	}
	return nil
}

func addrAdd(a netip.Addr, n int) (netip.Addr, bool) {
	b := a.As4()
	v := uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])
	v += uint64(n)
	if v > 0xFFFFFFFF {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

func addrIndex(base, a netip.Addr) (int, bool) {
	if !a.Is4() {
		return 0, false
	}
	x, y := base.As4(), a.As4()
	bv := uint32(x[0])<<24 | uint32(x[1])<<16 | uint32(x[2])<<8 | uint32(x[3])
	av := uint32(y[0])<<24 | uint32(y[1])<<16 | uint32(y[2])<<8 | uint32(y[3])
	if av < bv {
		return 0, false
	}
	return int(av - bv), true
}

// FaultSpec gives per-request probabilities of injected failures.
// Draws are a pure function of (Seed, device, request number), so a run
// is reproducible at a fixed seed whatever the interleaving across devices.
type FaultSpec struct {
	Drop     float64       // connection closed without an answer
	HTTP500  float64       // HTTP 500
	Slow     float64       // answer delayed by SlowFor
	SlowFor  time.Duration // default 3s
	Reboot   float64       // device restarts: connection dropped, uncommitted changes lost
	original string
}

func (f FaultSpec) String() string { return f.original }

// Enabled reports whether any fault has a non-zero probability.
func (f FaultSpec) Enabled() bool { return f.Drop+f.HTTP500+f.Slow+f.Reboot > 0 }

// ParseFaultSpec parses "drop=0.02,http500=0.02,slow=0.01:3s,reboot=0.005".
// The empty string means no faults.
func ParseFaultSpec(s string) (FaultSpec, error) {
	f := FaultSpec{SlowFor: 3 * time.Second, original: s}
	if strings.TrimSpace(s) == "" {
		return f, nil
	}
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return FaultSpec{}, fmt.Errorf("amtsim: fault spec: %q is not field=value", part)
		}
		if seen[k] {
			return FaultSpec{}, fmt.Errorf("amtsim: fault spec: field %q given twice", k)
		}
		seen[k] = true
		if k == "slow" {
			if p, d, ok := strings.Cut(v, ":"); ok {
				dur, err := time.ParseDuration(d)
				if err != nil || dur <= 0 {
					return FaultSpec{}, fmt.Errorf("amtsim: fault spec: field slow: bad duration %q", d)
				}
				f.SlowFor = dur
				v = p
			}
		}
		p, err := strconv.ParseFloat(v, 64)
		if err != nil || p < 0 || p > 1 {
			return FaultSpec{}, fmt.Errorf("amtsim: fault spec: field %s: probability %q not in [0,1]", k, v)
		}
		switch k {
		case "drop":
			f.Drop = p
		case "http500":
			f.HTTP500 = p
		case "slow":
			f.Slow = p
		case "reboot":
			f.Reboot = p
		default:
			return FaultSpec{}, fmt.Errorf("amtsim: fault spec: unknown field %q (want drop, http500, slow, reboot)", k)
		}
	}
	if f.Drop+f.HTTP500+f.Slow+f.Reboot > 1 {
		return FaultSpec{}, fmt.Errorf("amtsim: fault spec: probabilities add up to more than 1")
	}
	return f, nil
}

type faultKind int

const (
	faultNone faultKind = iota
	faultDrop
	faultHTTP500
	faultSlow
	faultReboot
)

func (k faultKind) String() string {
	return [...]string{"none", "drop", "http500", "slow", "reboot"}[k]
}

// pick draws the fault for request n of device idx.
func (f FaultSpec) pick(seed int64, idx int, n uint64) faultKind {
	if !f.Enabled() {
		return faultNone
	}
	x := splitmix(uint64(seed) ^ splitmix(uint64(idx)+0x9E3779B97F4A7C15) ^ splitmix(n^0xD1B54A32D192ED03))
	u := float64(x>>11) / (1 << 53)
	for _, c := range []struct {
		p float64
		k faultKind
	}{{f.Drop, faultDrop}, {f.HTTP500, faultHTTP500}, {f.Slow, faultSlow}, {f.Reboot, faultReboot}} {
		if u < c.p {
			return c.k
		}
		u -= c.p
	}
	return faultNone
}

func splitmix(x uint64) uint64 {
	x += 0x9E3779B97F4A7C15
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
	x = (x ^ (x >> 27)) * 0x94D049BB133111EB
	return x ^ (x >> 31)
}
