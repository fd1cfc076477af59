package amtsim

import (
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// nvram is what the firmware keeps in flash. A device allocates it only on
// its first change, so an idle device costs a few hundred bytes.
type nvram struct {
	provState, provMode int
	adminUser           string
	adminHA1            [16]byte
	users               []aclEntry // $$ system accounts are implicit (see systemAccounts)
	nextUserHandle      int

	certs          []*certEntry
	keys           []*keyEntry
	nextCertHandle int
	nextKeyHandle  int
	tlsCtxCert     int // handle of the certificate bound by AMT_TLSCredentialContext, -1 none
	tls8023        tlsSetting
	tlsLMS         tlsSetting

	hostName, domainName string
	clockOffset          time.Duration
	redirState           int // 32768 none, 32769 IDE-R, 32770 SOL, 32771 both
	listenerEnabled      bool
	kvm, webUI           bool
	ping, rmcpPing       bool
	powerScheme          string // InstanceID of the active AMT_SystemPowerScheme
	krb                  kerberos
	dot1x                dot1x
	wifi                 []wifiProfile
	mebxSet              bool
	// controlMode is IPS_HostBasedSetupService.CurrentControlMode: 0 none,
	// 1 client control (CCM), 2 admin control (ACM).
	controlMode int
	// mebxHA1 is MD5("admin":realm:MEBx password); mebxDefault while the
	// factory MEBx password is unchanged.
	mebxHA1     [16]byte
	mebxDefault bool
	// adminSet and clockSet record SetAdminAclEntryEx and
	// SetHighAccuracyTimeSynch during provisioning: CommitChanges of a
	// remote configuration needs both (2057 otherwise).
	adminSet, clockSet bool
	remoteSession      bool // state 1 was entered by a remote configuration
	wifiPortOn         bool // CIM_WiFiPort 32769 (enabled, local profile sync)
	optInRequired      int  // IPS_OptInService.OptInRequired: 0 none, 1 KVM, 4294967295 all
}

type aclEntry struct {
	handle      int
	name        string // digest user; empty for a Kerberos entry
	ha1         [16]byte
	kerberosSID string // base64 SID for a Kerberos entry
	access      int
	realms      []int
}

type certEntry struct {
	handle      int
	der         []byte
	cert        *x509.Certificate
	trustedRoot bool
	keyHandle   int // matching key pair on the device, -1 none
}

type keyEntry struct {
	handle    int
	priv      *rsa.PrivateKey
	generated bool // GenerateKeyPair (key never left the device)
}

type tlsSetting struct {
	enabled, mutual, acceptNonSecure bool
	// trustedCN are the FQDN suffixes a mutual-TLS client leaf's CN must
	// match (empty: any CN); replaced whole, never changed in place.
	trustedCN []string
}

type kerberos struct {
	enabled     bool
	realm       string
	keyVersion  int
	masterKey   []byte
	maxTol      int
	configAlgs  []int
	passphrase  bool
	passSum     [32]byte // SHA-256 of the passphrase, for the state API; never the passphrase
	salt        string
	iterations  int
	configuredB bool // any Put seen, so the full instance is shown
}

type dot1x struct {
	enabled      int // 2 enabled, 3 disabled
	authProto    int
	username     string
	domain       string
	serverName   string
	serverCmp    int
	availableS0  bool
	pxeTimeout   int
	rootHandle   int // -1 none
	clientHandle int // -1 none
}

type wifiProfile struct {
	instanceID, elementName, ssid   string
	priority, authMethod, encMethod int
	pskSet                          bool
	clientCert, caCert              int
}

// systemAccounts are firmware accounts: enumerated, readable, never removable.
func systemAccounts() []aclEntry {
	return []aclEntry{{handle: 1, name: "$$uns", access: 0, realms: []int{16}}}
}

func (n *nvram) clone() *nvram {
	c := *n
	c.users = slices.Clone(n.users)
	for i := range c.users {
		c.users[i].realms = slices.Clone(c.users[i].realms)
	}
	c.certs = slices.Clone(n.certs) // entries are immutable after creation
	c.keys = slices.Clone(n.keys)
	c.krb.masterKey = slices.Clone(n.krb.masterKey)
	c.krb.configAlgs = slices.Clone(n.krb.configAlgs)
	c.wifi = slices.Clone(n.wifi)
	return &c
}

// live is what the listeners serve: it changes only on commit/unprovision.
type live struct {
	tls             bool
	acceptNonSecure bool
	mutual          bool
	cert            *tls.Certificate
	clientCAs       *x509.CertPool
}

type device struct {
	sim  *Sim
	idx  int
	addr netip.Addr
	ov   Override

	mu       sync.Mutex
	st       *nvram // nil: factory state, computed on demand
	saved    *nvram // state at the last commit when there are uncommitted changes
	dirty    bool
	live     live
	httpLn   net.Listener
	tlsLn    net.Listener
	conns    map[net.Conn]struct{}
	down     bool // listener closed for a restart
	linkDown bool // S15: the link dropped after an incompatible change
	reqs     uint64
	drops    map[string]int // DropCall: method → calls to let through before the dropped one
	// rebootsAfter is RebootAfter's: method → calls to let through
	// before the one the device restarts after.
	rebootsAfter map[string]int
	lastTa0      int64
	stats        counters

	// Remote configuration: window is open while a Hello cycle runs (the
	// 16993 provisioning session is accepted only then).
	window         bool
	helloStop      func() // stops the running Hello cycle, nil when none
	helloGen       int    // bumped by every new cycle and by unprovisioning
	helloOnRestart bool   // start a cycle once back up (HelloAfterUnprovision)
	hellos         int    // Hellos sent successfully
	helloFails     int    // Hellos that could not be delivered
	addedHashes    [][]byte
	fwCert         *tls.Certificate
	lastRefusal    string
	// Digest: wrong passwords in a row per user, lockout end; nonces
	// issued before nonceFloor are stale (user-list change, reset).
	failures   map[string]int
	lockedTill map[string]time.Time
	nonceFloor time.Time
}

type counters struct{ requests, commits, reboots, faults, refusals, sessions, lockouts, mtlsRefusals int }

func (d *device) kind() Kind       { return d.ov.Kind }
func (d *device) link() Link       { return d.ov.Link }
func (d *device) version() string  { return d.ov.Version }
func (d *device) password() string { return d.ov.Password }
func (d *device) major() int       { return d.fwv().major }
func (d *device) fwv() fwVersion   { v, _ := parseVersion(d.ov.Version); return v }

// remoteConfig: a real-firmware device in state 0, or in state 1 because a
// remote configuration began, offers only the remote-configuration session
// (a partial unprovision's state 1 keeps the admin login).
func (d *device) remoteConfig() bool {
	st := d.state()
	return st.provState == 0 || (st.provState == 1 && st.remoteSession)
}

func (d *device) trustedHashes() [][]byte {
	var out [][]byte
	if !d.sim.cfg.NoDefaultHashes {
		out = append(out, d.sim.defaultHashes...)
	}
	out = append(out, d.sim.cfg.FactoryHashes...)
	return append(out, d.addedHashes...)
}

// hasKVM: Standard Manageability firmware has no KVM redirection.
func (d *device) hasKVM() bool { return d.ov.SKU != SKUStandard }

func (d *device) trustedDomain() string {
	if d.ov.TrustedDomain != "" {
		return strings.Trim(strings.ToLower(d.ov.TrustedDomain), ".")
	}
	return d.sim.cfg.TrustedDomain
}

func (d *device) mebxPassword() string {
	if d.ov.MEBxPassword != "" {
		return d.ov.MEBxPassword
	}
	return d.sim.cfg.MEBxPassword
}

// mebxChangeAllowed: SetMEBxPassword on a provisioned device (mu held).
func (d *device) mebxChangeAllowed() bool {
	switch d.sim.cfg.MEBxPolicy {
	case MEBxAnytime:
		return true
	case MEBxDuringSetup:
		return false
	}
	return d.state().mebxDefault
}

// clock is the device's time (caller holds mu).
func (d *device) clock() time.Time { return d.sim.cfg.Now().Add(d.state().clockOffset) }
func (d *device) ident(tag string) []byte {
	h := sha256.New()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(d.sim.cfg.Seed))
	h.Write(b[:])
	binary.BigEndian.PutUint64(b[:], uint64(d.idx))
	h.Write(b[:])
	h.Write([]byte(tag))
	return h.Sum(nil)
}

// uuid is the SMBIOS UUID (RFC 4122 byte order).
func (d *device) uuid() [16]byte {
	var u [16]byte
	copy(u[:], d.ident("uuid"))
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

// wireUUID is the UUID as GetUuid and the Hello carry it: the first three
// fields little-endian.
func (d *device) wireUUID() [16]byte {
	b := d.uuid()
	slices.Reverse(b[0:4])
	slices.Reverse(b[4:6])
	slices.Reverse(b[6:8])
	return b
}

// usersChanged resets the digest session cache: nonces issued before now
// are stale (mu held).
func (d *device) usersChanged() { d.nonceFloor = d.sim.cfg.Now() }

func (d *device) uuidString() string {
	u := d.uuid()
	h := hex.EncodeToString(u[:])
	return fmt.Sprintf("%s-%s-%s-%s-%s", h[0:8], h[8:12], h[12:16], h[16:20], h[20:])
}

func (d *device) realm() string {
	return "Digest:" + strings.ToUpper(hex.EncodeToString(d.ident("realm")[:16]))
}

// factory is the state a device ships with (or returns to on full unprovision).
func (d *device) factory() *nvram {
	n := &nvram{
		adminUser:      "admin",
		nextUserHandle: 2,
		nextCertHandle: 0,
		nextKeyHandle:  0,
		tlsCtxCert:     -1,
		tlsLMS:         tlsSetting{acceptNonSecure: true},
		redirState:     32768,
		ping:           true,
		rmcpPing:       true,
		webUI:          false,
		powerScheme:    "SCHEME 1",
		krb:            kerberos{maxTol: 5},
		dot1x:          dot1x{enabled: 3, pxeTimeout: 120, rootHandle: -1, clientHandle: -1},
	}
	pw := d.password()
	n.mebxHA1, n.mebxDefault = ha1("admin", d.realm(), d.mebxPassword()), true
	switch d.kind() {
	case KindMEBx:
		n.provState, n.provMode, n.controlMode = 2, 1, 2
		n.mebxHA1, n.mebxDefault, n.adminSet = ha1("admin", d.realm(), "M"+hex.EncodeToString(d.ident("mebx"))), false, true
	case KindCCM:
		n.provState, n.provMode, n.controlMode = 2, 4, 1
		n.optInRequired, n.adminSet = optInAll, true
	case KindExternal:
		n.provState, n.provMode, n.controlMode = 2, 1, 2
		n.hostName, n.domainName = fmt.Sprintf("ext%d", d.idx), "external.example"
		n.webUI, n.redirState, n.listenerEnabled = d.major() <= d.sim.cfg.WebUIUntil, 32771, true
		pw = "X" + hex.EncodeToString(d.ident("external")) // never known to a client
		n.mebxHA1, n.mebxDefault, n.adminSet = ha1("admin", d.realm(), pw), false, true
	case KindFactory:
		pw = d.mebxPassword() // the remote-configuration login is admin + MEBx password
	}
	n.adminHA1 = ha1("admin", d.realm(), pw)
	if d.fwv().tlsOnly() {
		n.tls8023 = tlsSetting{enabled: true} // CSME 16.1+: TLS-only, on from activation
	}
	switch d.link() {
	case LinkWired8021X:
		n.dot1x = dot1x{enabled: 2, authProto: 0, availableS0: true, pxeTimeout: 120, rootHandle: -1, clientHandle: -1,
			username: fmt.Sprintf("amt%d", d.idx)}
	case LinkWireless:
		n.wifi = []wifiProfile{{instanceID: "Intel(r) AMT:WiFi Endpoint Settings site", elementName: "site", ssid: "site-wlan",
			priority: 1, authMethod: 6, encMethod: 4, pskSet: true, clientCert: -1, caCert: -1}}
	}
	return n
}

// state returns the current NVRAM for reading (caller holds mu).
func (d *device) state() *nvram {
	if d.st == nil {
		return d.factory()
	}
	return d.st
}

// write returns the NVRAM for a change, keeping the committed copy so a
// reboot can drop uncommitted changes (caller holds mu).
func (d *device) write() *nvram {
	if d.st == nil {
		d.st = d.factory()
	}
	if !d.dirty {
		d.saved = d.st.clone()
		d.dirty = true
	}
	return d.st
}

// touched records a successful configuration change: the first one of a
// remote configuration moves a device in state 0 into provisioning (caller
// holds mu).
func (d *device) touched() {
	if d.st != nil && d.st.provState == 0 {
		d.st.provState = 1
		d.st.remoteSession = true
	}
}

// commit makes current state durable (caller holds mu).
func (d *device) commit() { d.saved, d.dirty = nil, false }

// revert drops uncommitted changes, as a firmware reset does (caller
// holds mu). On real firmware user ACL and password changes took effect
// at once and survive.
func (d *device) revert() {
	if d.dirty {
		cur := d.st
		d.st = d.saved
		d.st.adminUser, d.st.adminHA1, d.st.adminSet = cur.adminUser, cur.adminHA1, cur.adminSet
		d.st.users, d.st.nextUserHandle = cur.users, cur.nextUserHandle
		d.st.mebxHA1, d.st.mebxDefault, d.st.mebxSet = cur.mebxHA1, cur.mebxDefault, cur.mebxSet
	}
	d.saved, d.dirty = nil, false
}

func (n *nvram) cert(handle int) *certEntry {
	for _, c := range n.certs {
		if c.handle == handle {
			return c
		}
	}
	return nil
}

func (n *nvram) key(handle int) *keyEntry {
	for _, k := range n.keys {
		if k.handle == handle {
			return k
		}
	}
	return nil
}

func certInstanceID(h int) string { return fmt.Sprintf("Intel(r) AMT Certificate: Handle: %d", h) }
func keyInstanceID(h int) string  { return fmt.Sprintf("Intel(r) AMT Key: Handle: %d", h) }

func parseHandle(instanceID, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(instanceID, prefix)
	if !ok {
		return 0, false
	}
	var h int
	if _, err := fmt.Sscanf(rest, "%d", &h); err != nil || fmt.Sprint(h) != rest {
		return 0, false
	}
	return h, true
}
