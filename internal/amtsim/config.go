package amtsim

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Kind is how a device starts. The zero value is a pre-provisioned AMT
// device that accepts the fleet's provisioning password.
type Kind int

const (
	KindPreProvisioned Kind = iota // state 0, admin/Config.Password, HTTP only
	KindInProvisioning             // state 1, admin/Config.Password, HTTP only
	KindProvisioned                // state 2 (admin control), admin/Config.Password, HTTP only
	KindExternal                   // state 2, admin password unknown to anyone
	KindNotAMT                     // nothing listens on the address
)

func (k Kind) String() string {
	switch k {
	case KindPreProvisioned:
		return "pre-provisioned"
	case KindInProvisioning:
		return "in-provisioning"
	case KindProvisioned:
		return "provisioned"
	case KindExternal:
		return "external"
	case KindNotAMT:
		return "not-amt"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Link is the network link the device is managed over (S15 depends on it).
type Link string

const (
	LinkWired       Link = "wired"
	LinkWired8021X  Link = "8021x-wired"
	LinkWireless    Link = "wireless"
	defaultVersion       = "11.8.50"
	defaultHTTPPort      = 16992
	defaultTLSPort       = 16993
	defaultNonceTTL      = 5 * time.Minute
	defaultKeyPool       = 16
)

// Override changes one device's start state; zero fields keep the fleet default.
type Override struct {
	Kind     Kind
	Password string // provisioning password of this device
	Version  string // AMT version, e.g. "16.1.25"
	Link     Link
}

// Config describes a simulated fleet. Devices get consecutive addresses
// from BaseIP.
type Config struct {
	Devices  int
	BaseIP   netip.Addr
	HTTPPort int // default 16992
	TLSPort  int // default 16993
	// Password is the provisioning password (admin account) of every
	// pre-provisioned device; it must satisfy the firmware's complexity rule.
	Password string
	Version  string // default "11.8.50"
	Link     Link   // default wired
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
	if err := checkPassword(c.Password); err != nil {
		return fmt.Errorf("amtsim: config: Password: %w", err)
	}
	if c.Version == "" {
		c.Version = defaultVersion
	}
	if _, err := versionMajor(c.Version); err != nil {
		return fmt.Errorf("amtsim: config: Version: %w", err)
	}
	if c.Link == "" {
		c.Link = LinkWired
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
		if o.Kind < KindPreProvisioned || o.Kind > KindNotAMT {
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

func (l Link) valid() bool { return l == LinkWired || l == LinkWired8021X || l == LinkWireless }

func versionMajor(v string) (int, error) {
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return 0, fmt.Errorf("version %q is not major.minor.patch", v)
	}
	var major int
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("version %q is not major.minor.patch", v)
		}
		if i == 0 {
			major = n
		}
	}
	return major, nil
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
