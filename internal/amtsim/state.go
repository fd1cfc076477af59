package amtsim

import (
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/netip"
	"slices"
	"time"
)

// DeviceState is a deep-copied snapshot of one device for assertions.
// It never holds a password: only digest HA1 hashes (MD5(user:realm:pw)).
type DeviceState struct {
	Addr              netip.Addr `json:"addr"`
	Kind              string     `json:"kind"`
	Profile           string     `json:"profile"`
	UUID              string     `json:"uuid"`
	Version           string     `json:"version"`
	SKU               SKU        `json:"sku"`
	DigestRealm       string     `json:"digest_realm"`
	Link              Link       `json:"link"`
	LinkDown          bool       `json:"link_down"`
	ProvisioningState int        `json:"provisioning_state"`
	ProvisioningMode  int        `json:"provisioning_mode"`
	// ControlMode is IPS_HostBasedSetupService.CurrentControlMode: 0 none, 1 CCM, 2 ACM.
	ControlMode int `json:"control_mode"`
	// UncommittedChanges is true when a reboot would lose changes.
	UncommittedChanges bool `json:"uncommitted_changes"`

	AdminUser string `json:"admin_user"`
	// AdminHA1 is hex MD5(user:realm:password) — a hash, never the password.
	AdminHA1 string      `json:"admin_ha1_md5_hash"`
	Users    []UserState `json:"users"`

	Certificates []CertState `json:"certificates"`
	Keys         []KeyState  `json:"keys"`
	TLS          TLSState    `json:"tls"`

	HostName    string        `json:"host_name"`
	DomainName  string        `json:"domain_name"`
	ClockOffset time.Duration `json:"clock_offset_ns"`

	RedirectionState int    `json:"redirection_state"` // 32768 none … 32771 IDE-R+SOL
	IDER             bool   `json:"ider"`
	SOL              bool   `json:"sol"`
	ListenerEnabled  bool   `json:"redirection_listener"`
	KVM              bool   `json:"kvm"`
	WebUI            bool   `json:"web_ui"`
	Ping             bool   `json:"ping"`
	RMCPPing         bool   `json:"rmcp_ping"`
	PowerScheme      string `json:"power_scheme"` // e.g. "Desktop: ON in S0"
	MEBxPasswordSet  bool   `json:"mebx_password_set"`
	// MEBxHA1 is hex MD5("admin":realm:MEBx password) — a hash, never the password.
	MEBxHA1         string `json:"mebx_ha1_md5_hash"`
	MEBxDefault     bool   `json:"mebx_password_default"`
	KVMUsable       bool   `json:"kvm_usable"` // requested and the redirection listener on
	WiFiPortEnabled bool   `json:"wifi_port_enabled"`
	OptInRequired   int    `json:"opt_in_required"`

	// Remote configuration (factory path).
	TrustedHashes        []string `json:"trusted_hashes"` // hex, factory stand-ins first
	TrustedDomain        string   `json:"trusted_domain"`
	HelloWindow          bool     `json:"hello_window"` // 16993 accepts a provisioning session
	HellosSent           int      `json:"hellos_sent"`
	HelloFailures        int      `json:"hello_failures"`
	ProvisioningSessions int      `json:"provisioning_sessions"` // client chains accepted
	ProvisioningRefusals int      `json:"provisioning_refusals"` // client chains refused
	LastRefusal          string   `json:"last_refusal,omitempty"`
	Lockouts             int      `json:"lockouts"`

	Kerberos KerberosState  `json:"kerberos"`
	IEEE8021 IEEE8021xState `json:"ieee8021x"`
	WiFi     []WiFiState    `json:"wifi"`

	Listening struct{ HTTP, TLS bool } `json:"listening"`
	Requests  int                      `json:"requests"`
	Commits   int                      `json:"commits"`
	Reboots   int                      `json:"reboots"`
	Faults    int                      `json:"faults_injected"`
}

// UserState is one ACL entry; System marks firmware "$$" accounts.
type UserState struct {
	Handle           int    `json:"handle"`
	Name             string `json:"name,omitempty"`
	KerberosSID      string `json:"kerberos_sid,omitempty"`
	HA1              string `json:"ha1_md5_hash,omitempty"`
	AccessPermission int    `json:"access_permission"`
	Realms           []int  `json:"realms"`
	System           bool   `json:"system"`
}

type CertState struct {
	Handle      int    `json:"handle"`
	InstanceID  string `json:"instance_id"`
	Subject     string `json:"subject"`
	Issuer      string `json:"issuer"`
	TrustedRoot bool   `json:"trusted_root"`
	KeyHandle   int    `json:"key_handle"` // -1 when the key is not on the device
	DER         []byte `json:"der"`
}

type KeyState struct {
	Handle            int    `json:"handle"`
	InstanceID        string `json:"instance_id"`
	PublicKeyDER      []byte `json:"public_key_der"` // as DERKey: PKCS#1, or SubjectPublicKeyInfo (DERKeySPKIFrom)
	GeneratedOnDevice bool   `json:"generated_on_device"`
}

// TLSState shows pending settings and what the TLS port serves now.
type TLSState struct {
	CredentialCertHandle int  `json:"credential_cert_handle"` // -1 none
	Enabled              bool `json:"enabled"`
	MutualAuthentication bool `json:"mutual_authentication"`
	AcceptNonSecure      bool `json:"accept_non_secure"`
	// TrustedCN are the suffixes a mutual-TLS client CN must end in.
	TrustedCN []string `json:"trusted_cn,omitempty"`
	// LiveMutual: 16993 demands a client certificate now (committed).
	LiveMutual bool `json:"live_mutual"`
	// MutualRefusals counts client certificates refused on 16993.
	MutualRefusals int  `json:"mutual_refusals"`
	ServingTLS     bool `json:"serving_tls"`
	ServingHTTP    bool `json:"serving_http"`
	// ServedChain is the DER chain the TLS port presents (leaf first).
	ServedChain [][]byte `json:"served_chain"`
}

type KerberosState struct {
	Enabled               bool   `json:"enabled"`
	Realm                 string `json:"realm"`
	KeyVersion            int    `json:"key_version"`
	MaximumClockTolerance int    `json:"max_clock_tolerance"`
	EncryptionAlgorithms  []int  `json:"encryption_algorithms"`
	// MasterKeyHex is the key AMT holds (e.g. MD4 of the account password): a hash, not a password.
	MasterKeyHex  string `json:"master_key_hex"`
	PassphraseSet bool   `json:"passphrase_set"`
	// The AES inputs the device derives its keys from: salt, iteration
	// count and the SHA-256 of the passphrase (never the passphrase).
	Salt             string `json:"salt,omitempty"`
	IterationCount   int    `json:"iteration_count,omitempty"`
	PassphraseSHA256 string `json:"passphrase_sha256,omitempty"`
}

type IEEE8021xState struct {
	Enabled                bool   `json:"enabled"`
	AuthenticationProtocol int    `json:"authentication_protocol"`
	Username               string `json:"username"`
	Domain                 string `json:"domain"`
	ServerCertificateName  string `json:"server_certificate_name"`
	RootCertHandle         int    `json:"root_cert_handle"`
	ClientCertHandle       int    `json:"client_cert_handle"`
}

type WiFiState struct {
	InstanceID           string `json:"instance_id"`
	ElementName          string `json:"element_name"`
	SSID                 string `json:"ssid"`
	Priority             int    `json:"priority"`
	AuthenticationMethod int    `json:"authentication_method"`
	EncryptionMethod     int    `json:"encryption_method"`
	PSKSet               bool   `json:"psk_set"` // the passphrase itself is never exposed
	ClientCertHandle     int    `json:"client_cert_handle"`
}

// Device returns a snapshot of the device at addr.
func (s *Sim) Device(addr netip.Addr) (DeviceState, bool) {
	d := s.device(addr)
	if d == nil {
		return DeviceState{}, false
	}
	return d.snapshot(), true
}

// Devices returns snapshots of the whole fleet in address order.
func (s *Sim) Devices() []DeviceState {
	out := make([]DeviceState, len(s.devs))
	for i, d := range s.devs {
		out[i] = d.snapshot()
	}
	return out
}

func (d *device) snapshot() DeviceState {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.state()
	ds := DeviceState{
		Addr: d.addr, Kind: d.kind().String(), UUID: d.uuidString(), Version: d.version(), SKU: d.ov.SKU, DigestRealm: d.realm(),
		Link: d.link(), LinkDown: d.linkDown, ProvisioningState: st.provState, ProvisioningMode: max(st.provMode, 1),
		UncommittedChanges: d.dirty, AdminUser: st.adminUser, AdminHA1: hex.EncodeToString(st.adminHA1[:]),
		HostName: st.hostName, DomainName: st.domainName, ClockOffset: st.clockOffset,
		RedirectionState: st.redirState, IDER: st.redirState == 32769 || st.redirState == 32771,
		SOL: st.redirState == 32770 || st.redirState == 32771, ListenerEnabled: st.listenerEnabled,
		KVM: st.kvm, WebUI: st.webUI, Ping: st.ping, RMCPPing: st.rmcpPing, PowerScheme: powerDescription(st.powerScheme),
		MEBxPasswordSet: st.mebxSet, MEBxHA1: hex.EncodeToString(st.mebxHA1[:]), MEBxDefault: st.mebxDefault,
		KVMUsable: st.kvm && st.listenerEnabled, WiFiPortEnabled: st.wifiPortOn, OptInRequired: st.optInRequired,
		Profile: d.kind().Profile(), ControlMode: st.controlMode, TrustedDomain: d.trustedDomain(), HelloWindow: d.window,
		HellosSent: d.hellos, HelloFailures: d.helloFails, ProvisioningSessions: d.stats.sessions,
		ProvisioningRefusals: d.stats.refusals, LastRefusal: d.lastRefusal, Lockouts: d.stats.lockouts,
		Requests: d.stats.requests, Commits: d.stats.commits, Reboots: d.stats.reboots, Faults: d.stats.faults,
	}
	for _, h := range d.trustedHashes() {
		ds.TrustedHashes = append(ds.TrustedHashes, hex.EncodeToString(h))
	}
	for _, u := range systemAccounts() {
		ds.Users = append(ds.Users, UserState{Handle: u.handle, Name: u.name, AccessPermission: u.access, Realms: u.realms, System: true})
	}
	for _, u := range st.users {
		us := UserState{Handle: u.handle, Name: u.name, KerberosSID: u.kerberosSID, AccessPermission: u.access, Realms: slices.Clone(u.realms)}
		if u.name != "" {
			us.HA1 = hex.EncodeToString(u.ha1[:])
		}
		ds.Users = append(ds.Users, us)
	}
	for _, c := range st.certs {
		ds.Certificates = append(ds.Certificates, CertState{Handle: c.handle, InstanceID: certInstanceID(c.handle),
			Subject: dn(c.cert.RawSubject), Issuer: dn(c.cert.RawIssuer), TrustedRoot: c.trustedRoot, KeyHandle: c.keyHandle,
			DER: slices.Clone(c.der)})
	}
	for _, k := range st.keys {
		ds.Keys = append(ds.Keys, KeyState{Handle: k.handle, InstanceID: keyInstanceID(k.handle),
			PublicKeyDER: d.derKey(k), GeneratedOnDevice: k.generated})
	}
	ds.TLS = TLSState{CredentialCertHandle: st.tlsCtxCert, Enabled: st.tls8023.enabled, MutualAuthentication: st.tls8023.mutual,
		AcceptNonSecure: st.tls8023.acceptNonSecure, TrustedCN: slices.Clone(st.tls8023.trustedCN),
		LiveMutual: d.live.mutual, MutualRefusals: d.stats.mtlsRefusals, ServingTLS: d.tlsLn != nil, ServingHTTP: d.httpLn != nil}
	if d.live.cert != nil {
		for _, c := range d.live.cert.Certificate {
			ds.TLS.ServedChain = append(ds.TLS.ServedChain, slices.Clone(c))
		}
	}
	ds.Listening.HTTP, ds.Listening.TLS = d.httpLn != nil, d.tlsLn != nil
	k := st.krb
	ds.Kerberos = KerberosState{Enabled: k.enabled, Realm: k.realm, KeyVersion: k.keyVersion, MaximumClockTolerance: k.maxTol,
		EncryptionAlgorithms: slices.Clone(k.configAlgs), MasterKeyHex: hex.EncodeToString(k.masterKey), PassphraseSet: k.passphrase}
	if k.passphrase {
		ds.Kerberos.Salt, ds.Kerberos.IterationCount, ds.Kerberos.PassphraseSHA256 = k.salt, k.iterations, hex.EncodeToString(k.passSum[:])
	}
	x := st.dot1x
	ds.IEEE8021 = IEEE8021xState{Enabled: x.enabled == 2, AuthenticationProtocol: x.authProto, Username: x.username,
		Domain: x.domain, ServerCertificateName: x.serverName, RootCertHandle: x.rootHandle, ClientCertHandle: x.clientHandle}
	for _, w := range st.wifi {
		ds.WiFi = append(ds.WiFi, WiFiState{InstanceID: w.instanceID, ElementName: w.elementName, SSID: w.ssid, Priority: w.priority,
			AuthenticationMethod: w.authMethod, EncryptionMethod: w.encMethod, PSKSet: w.pskSet, ClientCertHandle: w.clientCert})
	}
	return ds
}

// StateHandler serves snapshots as JSON: GET /devices (all) and
// GET /devices/{addr}; POST /devices/{addr}/hello is the in-band Hello
// trigger (202, or 409 for a device that sends none). Passwords never
// appear; hashes are marked as such.
func (s *Sim) StateHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /devices/{addr}/hello", func(w http.ResponseWriter, r *http.Request) {
		a, err := netip.ParseAddr(r.PathValue("addr"))
		if err != nil {
			http.Error(w, "bad address", http.StatusBadRequest)
			return
		}
		if s.device(a) == nil {
			http.NotFound(w, r)
			return
		}
		if err := s.TriggerHello(a); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	mux.HandleFunc("GET /devices", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, s.Devices())
	})
	mux.HandleFunc("GET /devices/{addr}", func(w http.ResponseWriter, r *http.Request) {
		a, err := netip.ParseAddr(r.PathValue("addr"))
		if err != nil {
			http.Error(w, "bad address", http.StatusBadRequest)
			return
		}
		ds, ok := s.Device(a)
		if !ok {
			http.NotFound(w, r)
			return
		}
		writeJSON(w, ds)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
