package amtsim

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	collectionURI = amtPrefix + "AMT_TLSProtocolEndpointCollection"
	collectionEl  = "TLSProtocolEndpoint Instances Collection"
	tls8023ID     = "Intel(r) AMT 802.3 TLS Settings"
	tlsLMSID      = "Intel(r) AMT LMS TLS Settings"
	krbID         = "Intel (r) AMT: Kerberos Settings"
	dot1xID       = "Intel(r) AMT: 8021X Settings"
)

func (s *Sim) registerClasses() {
	s.addClass(s.generalSettings())
	s.addClass(s.setupService())
	s.addClass(s.softwareIdentity())
	s.addClass(s.pkiService())
	s.addClass(s.certificates())
	s.addClass(s.keyPairs())
	s.addClass(s.tlsCredentialContext())
	s.addClass(s.tlsSettings())
	s.addClass(s.timeSync())
	s.addClass(s.redirection())
	s.addClass(s.kvm())
	s.addClass(s.webUI())
	s.addClass(s.powerSchemes())
	s.addClass(s.authorization())
	s.addClass(s.kerberos())
	s.addClass(s.ieee8021x())
	s.addClass(s.wifiPort())
	s.addClass(s.wifiSettings())
	s.addClass(s.ethernetPorts())
	s.addClass(s.wifiPortState())
	s.addClass(s.hostBasedSetup())
	s.addClass(s.optIn())
}

// --- AMT_GeneralSettings ---

func (s *Sim) generalSettings() *class {
	hostNameRE := regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)?$`)
	domainRE := regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*)?$`)
	c := &class{name: "AMT_GeneralSettings", uri: amtPrefix + "AMT_GeneralSettings"}
	c.list = func(c *call, st *nvram) []instance {
		newer := c.d.major() >= 16 // newer firmware adds two properties (get.xml vs pull.xml)
		in := instance{pi("AMTNetworkEnabled", 1), pi("DDNSPeriodicUpdateInterval", 1440), pi("DDNSTTL", 900),
			pb("DDNSUpdateByDHCPServerEnabled", true), pb("DDNSUpdateEnabled", false)}
		if newer {
			in = append(in, pi("DHCPSyncRequiresHostname", 1))
		}
		fqdn := ""
		if st.hostName != "" {
			fqdn = strings.Trim(st.hostName+"."+st.domainName, ".")
		}
		in = append(in, pi("DHCPv6ConfigurationTimeout", 0), ps("DigestRealm", c.d.realm()), ps("DomainName", st.domainName),
			ps("ElementName", "Intel(r) AMT: General Settings"), ps("HostName", st.hostName), ps("HostOSFQDN", fqdn),
			pi("IdleWakeTimeout", 65535), ps("InstanceID", "Intel(r) AMT: General Settings"), pb("NetworkInterfaceEnabled", true),
			pb("PingResponseEnabled", st.ping), pi("PowerSource", 0), pi("PreferredAddressFamily", 0),
			pi("PresenceNotificationInterval", 0), pi("PrivacyLevel", 0), pb("RmcpPingResponseEnabled", st.rmcpPing),
			pb("SharedFQDN", true))
		if newer {
			in = append(in, pi("ThunderboltDockEnabled", 0))
		}
		return []instance{append(in, pb("WsmanOnlyMode", false))}
	}
	// Put takes the whole instance (get, modify, put): the writable fields
	// must all be present. HostName ≤ 63 (RFC 1123 label), DomainName ≤ 191;
	// DigestRealm is read-only and must not change.
	c.put = func(c *call, st *nvram, _ instance) *fault {
		vals := map[string]string{}
		for _, f := range []string{"HostName", "DomainName", "PingResponseEnabled", "RmcpPingResponseEnabled", "DigestRealm"} {
			e := c.in.child(c.cls.uri, f)
			if e == nil {
				return errRepresentation("%s missing: Put takes the whole instance", f)
			}
			vals[f] = e.trimmed()
		}
		if vals["DigestRealm"] != c.d.realm() {
			return errRepresentation("DigestRealm is read-only")
		}
		if len(vals["HostName"]) > maxHostName || !hostNameRE.MatchString(vals["HostName"]) {
			return errRepresentation("HostName %q invalid (≤%d characters, letters, digits, hyphen)", vals["HostName"], maxHostName)
		}
		if len(vals["DomainName"]) > maxDomainName || !domainRE.MatchString(vals["DomainName"]) {
			return errRepresentation("DomainName %q invalid (≤%d characters)", vals["DomainName"], maxDomainName)
		}
		ping, ok1 := parseBool(vals["PingResponseEnabled"])
		rmcp, ok2 := parseBool(vals["RmcpPingResponseEnabled"])
		if !ok1 || !ok2 {
			return errRepresentation("PingResponseEnabled/RmcpPingResponseEnabled must be booleans")
		}
		st.hostName, st.domainName, st.ping, st.rmcpPing = vals["HostName"], vals["DomainName"], ping, rmcp
		return nil
	}
	return c
}

// --- AMT_SetupAndConfigurationService ---

func (s *Sim) setupService() *class {
	c := &class{name: "AMT_SetupAndConfigurationService", uri: amtPrefix + "AMT_SetupAndConfigurationService"}
	c.list = func(c *call, st *nvram) []instance {
		return []instance{{ps("CreationClassName", "AMT_SetupAndConfigurationService"),
			ps("ElementName", "Intel(r) AMT Setup and Configuration Service"), pi("EnabledState", 5),
			ps("Name", "Intel(r) AMT Setup and Configuration Service"), pi("PasswordModel", 1),
			pi("ProvisioningMode", max(st.provMode, 1)), ps("ProvisioningServerOTP", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
			pi("ProvisioningState", st.provState), pi("RequestedState", 12), ps("SystemCreationClassName", "CIM_ComputerSystem"),
			ps("SystemName", "Intel(r) AMT"), pb("ZeroTouchConfigurationEnabled", true)}}
	}
	c.methods = map[string]method{
		// GetUuid: base64 of the 16 UUID bytes with the first three fields little-endian.
		"GetUuid": {bare: true, fn: func(c *call) ([]prop, int, *fault) {
			b := c.d.wireUUID()
			return []prop{ps("UUID", base64.StdEncoding.EncodeToString(b[:]))}, 0, nil
		}},
		// CommitChanges makes pending changes durable and applies the TLS
		// settings; the device then restarts its network stack for
		// CommitDelay (TLSRestart when what 16993 serves changed). TLS
		// enabled without a usable credential → 36; missing preconditions
		// → 2057 (see commitPreconditions).
		"CommitChanges": {write: true, fn: func(c *call) ([]prop, int, *fault) {
			d, st := c.d, c.d.st
			if rv := d.commitPreconditions(st); rv != rvSuccess {
				return nil, rv, nil
			}
			nl := live{tls: st.tls8023.enabled, acceptNonSecure: st.tls8023.acceptNonSecure || !st.tls8023.enabled, mutual: st.tls8023.mutual}
			tlsOnly := d.fwv().tlsOnly()
			if nl.tls && st.tlsCtxCert < 0 && tlsOnly {
				nl.acceptNonSecure = false // the firmware certificate keeps serving (plan)
			} else if nl.tls {
				if st.tlsCtxCert < 0 {
					return nil, rvInvalidParameter, nil
				}
				cred, err := tlsCredential(st, st.tlsCtxCert)
				if err != nil {
					return nil, rvInvalidParameter, nil
				}
				nl.cert = cred
				if nl.mutual {
					nl.clientCAs = x509.NewCertPool()
					for _, ce := range st.certs {
						if ce.trustedRoot {
							nl.clientCAs.AddCert(ce.cert)
						}
					}
				}
			}
			c.tlsChanged = d.remoteConfig() || nl.tls != d.live.tls || nl.mutual != d.live.mutual || !sameCredential(nl.cert, d.live.cert)
			if st.provState < 2 {
				st.provState, st.provMode = 2, max(st.provMode, 1)
				if st.controlMode == 0 {
					st.controlMode = 2 // remote configuration (PKI) ends in admin control
				}
			}
			st.remoteSession = false
			d.live = nl
			d.commit()
			d.stats.commits++
			c.restart = true
			return nil, rvSuccess, nil
		}},
		// PartialUnprovision keeps the identity (host name, domain, admin
		// account and password) and clears all configuration; the device
		// goes back to "in provisioning" (1) with TLS off, HTTP only.
		"PartialUnprovision": {write: true, fn: func(c *call) ([]prop, int, *fault) {
			d, old := c.d, c.d.st
			n := d.factory()
			n.hostName, n.domainName, n.adminUser, n.adminHA1 = old.hostName, old.domainName, old.adminUser, old.adminHA1
			n.mebxHA1, n.mebxDefault, n.mebxSet = old.mebxHA1, old.mebxDefault, old.mebxSet
			n.provState, n.provMode, n.controlMode = 1, max(old.provMode, 1), 0
			d.st, d.live = n, live{}
			d.commit()
			c.restart = true
			return nil, rvSuccess, nil
		}},
		// Unprovision clears everything: provisioning state 0, TLS off. The
		// device is dark again (only a new Hello cycle reopens 16993), keeps its MEBx
		// password as the next remote-configuration login and loses the
		// root hashes added to its list (unless KeepHashesOnUnprovision).
		"Unprovision": {write: true, fn: func(c *call) ([]prop, int, *fault) {
			if v, ok := c.paramInt("ProvisioningMode"); ok && v != 1 && v != 4 {
				return nil, rvInvalidParameter, nil
			}
			d, old := c.d, c.d.st
			n := d.factory()
			n.provState, n.provMode, n.controlMode = 0, 0, 0
			n.hostName, n.domainName, n.webUI, n.redirState, n.listenerEnabled = "", "", false, 32768, false
			n.mebxHA1, n.mebxDefault, n.adminSet, n.optInRequired = old.mebxHA1, old.mebxDefault, false, 0
			n.adminHA1 = old.mebxHA1
			d.unprovisioned()
			d.st, d.live = n, live{}
			d.commit()
			c.restart, c.tlsChanged = true, true
			return nil, rvSuccess, nil
		}},
		// SetMEBxPassword carries the password in clear, so here the firmware
		// enforces the complexity rule (2054). Refused (16) in client
		// control and, once provisioned, as Firmware.MEBxPolicy says (the
		// MEBx setting; by default allowed while the MEBx password is still
		// the factory one: Intel's RPS sets it right after ACM activation).
		"SetMEBxPassword": {write: true, fn: func(c *call) ([]prop, int, *fault) {
			st := c.d.st
			p, _ := c.paramText("Password")
			if checkPassword(p) != nil {
				return nil, rvInvalidPassword, nil
			}
			if st.controlMode == 1 || (st.provState == 2 && !c.d.mebxChangeAllowed()) {
				return nil, rvNotPermitted, nil
			}
			st.mebxSet, st.mebxDefault, st.mebxHA1 = true, false, ha1("admin", c.d.realm(), p)
			return nil, rvSuccess, nil
		}},
	}
	return c
}

// --- CIM_SoftwareIdentity ---

func (s *Sim) softwareIdentity() *class {
	c := &class{name: "CIM_SoftwareIdentity", uri: cimPrefix + "CIM_SoftwareIdentity"}
	c.list = func(c *call, _ *nvram) []instance {
		v := c.d.version()
		build := strconv.Itoa(1000 + int(c.d.ident("build")[0])*10)
		var out []instance
		for _, kv := range [][2]string{{"Flash", v}, {"Netstack", v}, {"AMTApps", v}, {"AMT", v}, {"Sku", c.d.ov.SKU.skuValue()},
			{"VendorID", "8086"}, {"Build Number", build}, {"Recovery Version", v}, {"Recovery Build Num", build},
			{"Legacy Mode", "False"}, {"AMT FW Core Version", v}} {
			out = append(out, instance{ps("InstanceID", kv[0]), pb("IsEntity", true), ps("VersionString", kv[1])})
		}
		return out
	}
	return c
}

// --- AMT_PublicKeyManagementService ---

func (s *Sim) pkiService() *class {
	c := &class{name: "AMT_PublicKeyManagementService", uri: amtPrefix + "AMT_PublicKeyManagementService"}
	c.list = func(*call, *nvram) []instance {
		return []instance{{ps("CreationClassName", "AMT_PublicKeyManagementService"),
			ps("ElementName", "Intel(r) AMT Certificate Store Service"), pi("EnabledDefault", 5), pi("EnabledState", 5),
			ps("Name", "Intel(r) AMT Public Key Management Service"), pi("RequestedState", 12),
			ps("SystemCreationClassName", "CIM_ComputerSystem"), ps("SystemName", "Intel(r) AMT")}}
	}
	certRef := func(h int) *epr {
		return &epr{uri: amtPrefix + "AMT_PublicKeyCertificate", sel: []selector{{name: "InstanceID", value: certInstanceID(h)}}}
	}
	keyRef := func(h int) *epr {
		return &epr{uri: amtPrefix + "AMT_PublicPrivateKeyPair", sel: []selector{{name: "InstanceID", value: keyInstanceID(h)}}}
	}
	addCert := func(c *call, trusted bool, outName string) ([]prop, int, *fault) {
		st := c.d.st
		blob, _ := c.paramText("CertificateBlob")
		der, err := base64.StdEncoding.DecodeString(blob)
		if err != nil {
			return nil, rvInvalidCert, nil
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, rvInvalidCert, nil
		}
		for _, ce := range st.certs {
			if slices.Equal(ce.der, der) {
				return nil, rvDuplicate, nil // the same certificate is already stored
			}
		}
		if len(st.certs) >= maxCertificates {
			return nil, rvMaxLimit, nil
		}
		// Older firmware (≤ 11) refuses CA certificates with RSA keys over 2048 bits.
		if pub, ok := cert.PublicKey.(interface{ Size() int }); ok && cert.IsCA && c.d.major() <= 11 && pub.Size()*8 > maxCAKeyBitsOld {
			return nil, rvInvalidParameter, nil
		}
		// Intel: a trusted root cannot be added while the network or local
		// TLS settings are set to mutual authentication (the ReturnValue is
		// not documented; 16 here).
		if trusted && !c.s.cfg.RootsWhileMutual && (st.tls8023.mutual || st.tlsLMS.mutual) {
			return nil, rvNotPermitted, nil
		}
		if trusted && !cert.IsCA {
			return nil, rvInvalidParameter, nil // a trusted root must be a CA certificate
		}
		ce := &certEntry{handle: st.nextCertHandle, der: der, cert: cert, trustedRoot: trusted, keyHandle: -1}
		for _, k := range st.keys {
			if pk, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); ok && pk.Equal(&k.priv.PublicKey) {
				ce.keyHandle = k.handle
			}
		}
		st.nextCertHandle++
		st.certs = append(st.certs, ce)
		return []prop{pref(outName, certRef(ce.handle))}, rvSuccess, nil
	}
	c.methods = map[string]method{
		"AddTrustedRootCertificate": {write: true, fn: func(c *call) ([]prop, int, *fault) { return addCert(c, true, "CreatedCertificate") }},
		"AddCertificate":            {write: true, fn: func(c *call) ([]prop, int, *fault) { return addCert(c, false, "CreatedCertificate") }},
		"AddKey": {write: true, fn: func(c *call) ([]prop, int, *fault) {
			st := c.d.st
			blob, _ := c.paramText("KeyBlob")
			der, err := base64.StdEncoding.DecodeString(blob)
			if err != nil {
				return nil, rvInvalidKey, nil
			}
			k, err := parsePrivateKey(der)
			if err != nil {
				return nil, rvInvalidKey, nil
			}
			for _, e := range st.keys {
				if e.priv.Equal(k) {
					return nil, rvDuplicate, nil
				}
			}
			if len(st.keys) >= maxKeys {
				return nil, rvMaxLimit, nil
			}
			h := st.addKey(k, false)
			return []prop{pref("CreatedKey", keyRef(h))}, rvSuccess, nil
		}},
		// GenerateKeyPair: RSA only (KeyAlgorithm 0), 2048 bits.
		"GenerateKeyPair": {write: true, fn: func(c *call) ([]prop, int, *fault) {
			st := c.d.st
			alg, ok1 := c.paramInt("KeyAlgorithm")
			bits, ok2 := c.paramInt("KeyLength")
			if !ok1 || !ok2 || alg != 0 || bits != 2048 {
				return nil, rvInvalidParameter, nil
			}
			if len(st.keys) >= maxKeys {
				return nil, rvMaxLimit, nil
			}
			gen := 0
			for _, k := range st.keys {
				if k.generated {
					gen++
				}
			}
			k, err := c.s.keys.get(c.d.idx, gen, bits)
			if err != nil {
				return nil, rvInternalError, nil
			}
			for _, e := range st.keys {
				if e.priv.Equal(k) { // pool wrapped around for this device: make a fresh one
					if k, err = rsa.GenerateKey(rand.Reader, bits); err != nil {
						return nil, rvInternalError, nil
					}
					break
				}
			}
			h := st.addKey(k, true)
			return []prop{pref("KeyPair", keyRef(h))}, rvSuccess, nil
		}},
		// GeneratePKCS10RequestEx signs the client's null-signed request with
		// the on-device key; SigningAlgorithm 0 SHA1-RSA, 1 SHA256-RSA.
		"GeneratePKCS10RequestEx": {fn: func(c *call) ([]prop, int, *fault) {
			st := c.d.state()
			kp := c.param("KeyPair")
			if kp == nil {
				return nil, rvInvalidParameter, nil
			}
			_, id, ok := eprSelector(kp, "InstanceID")
			h, ok2 := parseHandle(id, "Intel(r) AMT Key: Handle: ")
			if !ok || !ok2 || st.key(h) == nil {
				return nil, rvInvalidHandle, nil
			}
			alg, ok := c.paramInt("SigningAlgorithm")
			if !ok || (alg != 0 && alg != 1) {
				return nil, rvInvalidParameter, nil
			}
			blob, _ := c.paramText("NullSignedCertificateRequest")
			der, err := base64.StdEncoding.DecodeString(blob)
			if err != nil {
				return nil, rvInvalidParameter, nil
			}
			out, err := signCSR(der, st.key(h).priv, alg == 0)
			if err != nil {
				return nil, rvInvalidParameter, nil
			}
			return []prop{ps("SignedCertificateRequest", base64.StdEncoding.EncodeToString(out))}, rvSuccess, nil
		}},
	}
	return c
}

func (n *nvram) addKey(k *rsa.PrivateKey, generated bool) int {
	h := n.nextKeyHandle
	n.nextKeyHandle++
	n.keys = append(n.keys, &keyEntry{handle: h, priv: k, generated: generated})
	// Certificates already stored for this key become usable for TLS.
	for i, ce := range n.certs {
		if ce.keyHandle < 0 {
			if pk, ok := ce.cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); ok && pk.Equal(&k.PublicKey) {
				cp := *ce
				cp.keyHandle = h
				n.certs[i] = &cp
			}
		}
	}
	return h
}

// --- AMT_PublicKeyCertificate, AMT_PublicPrivateKeyPair ---

// dn renders a name in DER order ("C=…,O=…,CN=…") as the firmware does.
func dn(raw []byte) string {
	var seq pkix.RDNSequence
	if _, err := asn1.Unmarshal(raw, &seq); err != nil {
		return ""
	}
	names := map[string]string{"2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O", "2.5.4.11": "OU", "0.9.2342.19200300.100.1.25": "DC"}
	var parts []string
	for _, rdn := range seq {
		for _, a := range rdn {
			k, ok := names[a.Type.String()]
			if !ok {
				k = a.Type.String()
			}
			parts = append(parts, fmt.Sprintf("%s=%v", k, a.Value))
		}
	}
	return strings.Join(parts, ",")
}

func (s *Sim) certificates() *class {
	c := &class{name: "AMT_PublicKeyCertificate", uri: amtPrefix + "AMT_PublicKeyCertificate"}
	c.list = func(_ *call, st *nvram) []instance {
		var out []instance
		for _, ce := range st.certs {
			out = append(out, instance{ps("ElementName", "Intel(r) AMT Certificate"), ps("InstanceID", certInstanceID(ce.handle)),
				ps("Issuer", dn(ce.cert.RawIssuer)), ps("Subject", dn(ce.cert.RawSubject)),
				pb("TrustedRootCertficate", ce.trustedRoot), ps("X509Certificate", base64.StdEncoding.EncodeToString(ce.der))})
		}
		return out
	}
	// A certificate bound by the TLS credential context or the 802.1X
	// settings cannot be deleted.
	c.del = func(_ *call, st *nvram, target instance) *fault {
		id, _ := target.get("InstanceID")
		h, _ := parseHandle(id, "Intel(r) AMT Certificate: Handle: ")
		if st.tlsCtxCert == h || st.dot1x.rootHandle == h || st.dot1x.clientHandle == h {
			return faultf(nsWSMan, "AccessDenied", "certificate handle %d is in use", h)
		}
		st.certs = slices.DeleteFunc(slices.Clone(st.certs), func(ce *certEntry) bool { return ce.handle == h })
		return nil
	}
	return c
}

func (s *Sim) keyPairs() *class {
	c := &class{name: "AMT_PublicPrivateKeyPair", uri: amtPrefix + "AMT_PublicPrivateKeyPair"}
	c.list = func(c *call, st *nvram) []instance {
		var out []instance
		for _, k := range st.keys {
			out = append(out, instance{ps("DERKey", base64.StdEncoding.EncodeToString(c.d.derKey(k))),
				ps("ElementName", "Intel(r) AMT Key"), ps("InstanceID", keyInstanceID(k.handle))})
		}
		return out
	}
	c.del = func(_ *call, st *nvram, target instance) *fault {
		id, _ := target.get("InstanceID")
		h, _ := parseHandle(id, "Intel(r) AMT Key: Handle: ")
		if ce := st.cert(st.tlsCtxCert); ce != nil && ce.keyHandle == h {
			return faultf(nsWSMan, "AccessDenied", "key handle %d backs the TLS certificate", h)
		}
		st.keys = slices.DeleteFunc(slices.Clone(st.keys), func(k *keyEntry) bool { return k.handle == h })
		for i, ce := range st.certs {
			if ce.keyHandle == h {
				cp := *ce
				cp.keyHandle = -1
				st.certs[i] = &cp
			}
		}
		return nil
	}
	return c
}

// --- TLS ---

func (s *Sim) tlsCredentialContext() *class {
	c := &class{name: "AMT_TLSCredentialContext", uri: amtPrefix + "AMT_TLSCredentialContext", eprKeys: true}
	certEPR := func(h int) *epr {
		return &epr{uri: amtPrefix + "AMT_PublicKeyCertificate", sel: []selector{{name: "InstanceID", value: certInstanceID(h)}}}
	}
	collEPR := &epr{uri: collectionURI, sel: []selector{{name: "ElementName", value: collectionEl}}}
	c.list = func(_ *call, st *nvram) []instance {
		if st.tlsCtxCert < 0 {
			return nil
		}
		return []instance{{pref("ElementInContext", certEPR(st.tlsCtxCert)), pref("ElementProvidingContext", collEPR)}}
	}
	// bind reads the certificate the context names; it must be installed and
	// have its private key on the device.
	bind := func(c *call, st *nvram) *fault {
		eic := c.in.child(c.cls.uri, "ElementInContext")
		epc := c.in.child(c.cls.uri, "ElementProvidingContext")
		if eic == nil || epc == nil {
			return errRepresentation("ElementInContext and ElementProvidingContext are required")
		}
		uri, id, ok := eprSelector(eic, "InstanceID")
		h, ok2 := parseHandle(id, "Intel(r) AMT Certificate: Handle: ")
		if !ok || !ok2 || uri != amtPrefix+"AMT_PublicKeyCertificate" {
			return errRepresentation("ElementInContext must reference an AMT_PublicKeyCertificate by InstanceID")
		}
		if puri, _, _ := eprSelector(epc, "ElementName"); puri != collectionURI {
			return errRepresentation("ElementProvidingContext must reference %s", collectionURI)
		}
		ce := st.cert(h)
		if ce == nil || ce.trustedRoot {
			return errParam("certificate handle %d is not an installed leaf certificate", h)
		}
		if st.key(ce.keyHandle) == nil {
			return errParam("certificate handle %d has no private key on the device", h)
		}
		st.tlsCtxCert = h
		return nil
	}
	c.create = func(c *call, st *nvram) (*epr, *fault) {
		if st.tlsCtxCert >= 0 {
			return nil, faultf(nsWSMan, "AlreadyExists", "a TLS credential context exists; use Put")
		}
		if f := bind(c, st); f != nil {
			return nil, f
		}
		return &epr{uri: c.cls.uri, sel: []selector{{name: "ElementInContext", ref: certEPR(st.tlsCtxCert)},
			{name: "ElementProvidingContext", ref: collEPR}}}, nil
	}
	c.put = func(c *call, st *nvram, _ instance) *fault { return bind(c, st) }
	c.del = func(_ *call, st *nvram, _ instance) *fault {
		if st.tls8023.enabled {
			return faultf(nsWSMan, "AccessDenied", "TLS is enabled; disable it before removing its credential")
		}
		st.tlsCtxCert = -1
		return nil
	}
	return c
}

func (s *Sim) tlsSettings() *class {
	c := &class{name: "AMT_TLSSettingData", uri: amtPrefix + "AMT_TLSSettingData"}
	// CSME 16.1+ (real-firmware profiles) adds the read-only
	// NonSecureConnectionsSupported (false: the device is TLS-only).
	render := func(id string, t tlsSetting, tlsOnly bool) instance {
		in := instance{pb("AcceptNonSecureConnections", t.acceptNonSecure), ps("ElementName", id), pb("Enabled", t.enabled),
			ps("InstanceID", id), pb("MutualAuthentication", t.mutual)}
		if len(t.trustedCN) > 0 {
			in = append(in, prop{name: "TrustedCN", vals: slices.Clone(t.trustedCN)})
		}
		if tlsOnly {
			in = append(in, pb("NonSecureConnectionsSupported", false))
		}
		return in
	}
	c.list = func(c *call, st *nvram) []instance {
		only := c.d.fwv().tlsOnly()
		return []instance{render(tls8023ID, st.tls8023, only), render(tlsLMSID, st.tlsLMS, only)}
	}
	// Enabling remote (802.3) TLS needs a TLS credential context; the change
	// takes effect at CommitChanges.
	c.put = func(c *call, st *nvram, target instance) *fault {
		var t tlsSetting
		for _, f := range []struct {
			name string
			dst  *bool
		}{{"Enabled", &t.enabled}, {"MutualAuthentication", &t.mutual}, {"AcceptNonSecureConnections", &t.acceptNonSecure}} {
			v, ok := parseBool(c.in.child(c.cls.uri, f.name).trimmed())
			if !ok {
				return errRepresentation("%s must be a boolean", f.name)
			}
			*f.dst = v
		}
		// A Put replaces the instance: TrustedCN left out is cleared.
		for _, e := range c.in.all(c.cls.uri, "TrustedCN") {
			if cn := strings.ToLower(strings.Trim(e.trimmed(), ".")); cn != "" {
				t.trustedCN = append(t.trustedCN, cn)
			}
		}
		id, _ := target.get("InstanceID")
		if c.d.fwv().tlsOnly() {
			if c.in.child(c.cls.uri, "NonSecureConnectionsSupported") != nil {
				return errRepresentation("NonSecureConnectionsSupported is read-only")
			}
			if id == tls8023ID && (t.acceptNonSecure || !t.enabled) {
				return faultf(nsWSMan, "AccessDenied", "ReturnValue 16: this firmware is TLS-only on the network")
			}
		}
		if id == tlsLMSID {
			st.tlsLMS = t
			return nil
		}
		if t.enabled && st.tlsCtxCert < 0 && !c.d.fwv().tlsOnly() {
			return errRepresentation("TLS cannot be enabled without an AMT_TLSCredentialContext")
		}
		st.tls8023 = t
		return nil
	}
	return c
}

// --- AMT_TimeSynchronizationService ---

func (s *Sim) timeSync() *class {
	c := &class{name: "AMT_TimeSynchronizationService", uri: amtPrefix + "AMT_TimeSynchronizationService"}
	c.list = func(*call, *nvram) []instance {
		return []instance{{ps("CreationClassName", "AMT_TimeSynchronizationService"),
			ps("ElementName", "Intel(r) AMT Time Synchronization Service"), pi("EnabledState", 5), pi("LocalTimeSyncEnabled", 0),
			ps("Name", "Intel(r) AMT Time Synchronization Service"), pi("RequestedState", 12),
			ps("SystemCreationClassName", "CIM_ComputerSystem"), ps("SystemName", "Intel(r) AMT"), pi("TimeSource", 0)}}
	}
	c.methods = map[string]method{
		"GetLowAccuracyTimeSynch": {fn: func(c *call) ([]prop, int, *fault) {
			ta0 := c.s.cfg.Now().Add(c.d.state().clockOffset).Unix()
			c.d.lastTa0 = ta0
			return []prop{{name: "Ta0", vals: []string{strconv.FormatInt(ta0, 10)}}}, rvSuccess, nil
		}},
		// SetHighAccuracyTimeSynch: Ta0 must be the value the device last
		// gave out (36 otherwise); the clock is set to Tm1.
		"SetHighAccuracyTimeSynch": {write: true, fn: func(c *call) ([]prop, int, *fault) {
			var v [3]int64
			for i, n := range []string{"Ta0", "Tm1", "Tm2"} {
				t, _ := c.paramText(n)
				x, err := strconv.ParseInt(t, 10, 64)
				if err != nil || x <= 0 {
					return nil, rvInvalidParameter, nil
				}
				v[i] = x
			}
			if v[0] != c.d.lastTa0 || v[2] < v[1] {
				return nil, rvInvalidParameter, nil
			}
			c.d.st.clockOffset = time.Unix(v[1], 0).Sub(c.s.cfg.Now()).Round(time.Second)
			c.d.st.clockSet = true
			return nil, rvSuccess, nil
		}},
	}
	return c
}

// --- redirection, KVM, web UI, power ---

func (s *Sim) redirection() *class {
	c := &class{name: "AMT_RedirectionService", uri: amtPrefix + "AMT_RedirectionService"}
	c.list = func(_ *call, st *nvram) []instance {
		return []instance{{ps("CreationClassName", "AMT_RedirectionService"), ps("ElementName", "Intel(r) AMT Redirection Service"),
			pi("EnabledState", st.redirState), pb("ListenerEnabled", st.listenerEnabled), ps("Name", "Intel(r) AMT Redirection Service"),
			ps("SystemCreationClassName", "CIM_ComputerSystem"), ps("SystemName", "Intel(r) AMT")}}
	}
	c.put = func(c *call, st *nvram, _ instance) *fault {
		v, ok := parseBool(c.in.child(c.cls.uri, "ListenerEnabled").trimmed())
		if !ok {
			return errRepresentation("ListenerEnabled must be a boolean")
		}
		st.listenerEnabled = v
		return nil
	}
	// RequestStateChange: 32768 none, 32769 IDE-R, 32770 SOL, 32771 both; else 5.
	c.methods = map[string]method{"RequestStateChange": {write: true, fn: func(c *call) ([]prop, int, *fault) {
		v, ok := c.paramInt("RequestedState")
		if !ok || v < 32768 || v > 32771 {
			return nil, rvInvalidState, nil
		}
		c.d.st.redirState = v
		return nil, rvSuccess, nil
	}}}
	return c
}

func (s *Sim) kvm() *class {
	c := &class{name: "CIM_KVMRedirectionSAP", uri: cimPrefix + "CIM_KVMRedirectionSAP"}
	c.list = func(c *call, st *nvram) []instance {
		if !c.d.hasKVM() {
			return nil // Standard Manageability: no KVM to get or change
		}
		// KVM is usable only with the redirection listener on: a request
		// without it is accepted but stays ineffective (EnabledState 3).
		enabled, requested := 3, 3
		if st.kvm {
			requested = 2
			if st.listenerEnabled {
				enabled = 6 // enabled but offline: no session open
			}
		}
		return []instance{{ps("CreationClassName", "CIM_KVMRedirectionSAP"), ps("ElementName", "KVM Redirection Service Access Point"),
			pi("EnabledState", enabled), pi("KVMProtocol", 4), ps("Name", "KVM Redirection Service Access Point"),
			pi("RequestedState", requested), ps("SystemCreationClassName", "CIM_ComputerSystem"), ps("SystemName", "ManagedSystem")}}
	}
	c.methods = map[string]method{"RequestStateChange": {write: true, fn: func(c *call) ([]prop, int, *fault) {
		v, ok := c.paramInt("RequestedState")
		if !ok || (v != 2 && v != 3) {
			return nil, rvInvalidState, nil
		}
		if !c.d.hasKVM() {
			return nil, 0, faultf(nsAddressing, "DestinationUnreachable", "No instance of CIM_KVMRedirectionSAP exists.")
		}
		if v == 2 && c.s.cfg.KVMWithoutListener == KVMRefuse && !c.d.st.listenerEnabled {
			return nil, rvNotPermitted, nil
		}
		c.d.st.kvm = v == 2
		return nil, rvSuccess, nil
	}}}
	return c
}

func (s *Sim) webUI() *class {
	c := &class{name: "AMT_WebUIService", uri: amtPrefix + "AMT_WebUIService"}
	c.list = func(c *call, st *nvram) []instance {
		if c.d.major() > c.s.cfg.WebUIUntil {
			return nil // no web UI on this firmware: no instance to get or change
		}
		state := 3
		if st.webUI {
			state = 2
		}
		return []instance{{ps("CreationClassName", "AMT_WebUIService"), ps("ElementName", "Intel(r) AMT Web UI Service"),
			pi("EnabledState", state), ps("Name", "Intel(r) AMT Web UI Service"), pi("RequestedState", state),
			ps("SystemCreationClassName", "CIM_ComputerSystem"), ps("SystemName", "Intel(r) AMT")}}
	}
	c.methods = map[string]method{"RequestStateChange": {write: true, fn: func(c *call) ([]prop, int, *fault) {
		v, ok := c.paramInt("RequestedState")
		if !ok || (v != 2 && v != 3) {
			return nil, rvInvalidState, nil
		}
		if c.d.major() > c.s.cfg.WebUIUntil {
			return nil, 0, faultf(nsAddressing, "DestinationUnreachable", "No instance of AMT_WebUIService exists.")
		}
		c.d.st.webUI = v == 2
		return nil, rvSuccess, nil
	}}}
	return c
}

type powerScheme struct{ id, desc, guid string }

func powerSchemes() []powerScheme {
	return []powerScheme{
		{"SCHEME 0", "Desktop: ON in S0", "djmXEQtWUEOIcJgS85G1YA=="},
		{"SCHEME 1", "Desktop: ON in S0, ME Wake in S3, S4-5", "MIAN7gnAeEOvKHhootu+Og=="},
		{"SCHEME 2", "Desktop: ON in S0, S3, S4-5", "yH0SdP1rVUqHWkq1Lqj0cw=="},
	}
}

func (s *Sim) powerSchemes() *class {
	c := &class{name: "AMT_SystemPowerScheme", uri: amtPrefix + "AMT_SystemPowerScheme"}
	c.list = func(*call, *nvram) []instance {
		var out []instance
		for _, p := range powerSchemes() {
			out = append(out, instance{ps("Description", p.desc), ps("ElementName", "Intel(r) AMT Power Scheme"),
				ps("InstanceID", p.id), ps("SchemeGUID", p.guid)})
		}
		return out
	}
	// SetPowerScheme is invoked on the instance named by the InstanceID selector.
	c.methods = map[string]method{"SetPowerScheme": {write: true, fn: func(c *call) ([]prop, int, *fault) {
		in, f := selectOne(c.cls, c.cls.list(c, nil), c.req.selectors)
		if f != nil || len(c.req.selectors) == 0 {
			return nil, 0, errSelectors("SetPowerScheme needs the InstanceID selector of a scheme")
		}
		c.d.st.powerScheme, _ = in.get("InstanceID")
		return nil, rvSuccess, nil
	}}}
	return c
}

func powerDescription(id string) string {
	for _, p := range powerSchemes() {
		if p.id == id {
			return p.desc
		}
	}
	return ""
}
