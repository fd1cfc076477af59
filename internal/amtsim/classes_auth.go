package amtsim

import (
	"crypto/sha256"
	"encoding/base64"
	"slices"
	"strconv"
	"strings"
)

// --- AMT_AuthorizationService ---

func (s *Sim) authorization() *class {
	c := &class{name: "AMT_AuthorizationService", uri: amtPrefix + "AMT_AuthorizationService"}
	c.list = func(*call, *nvram) []instance {
		return []instance{{pi("AllowHttpQopAuthOnly", 1), ps("CreationClassName", "AMT_AuthorizationService"),
			ps("ElementName", "Intel(r) AMT Authorization Service"), pi("EnabledState", 5),
			ps("Name", "Intel(r) AMT Authorization Service"), pi("RequestedState", 12),
			ps("SystemCreationClassName", "CIM_ComputerSystem"), ps("SystemName", "Intel(r) AMT")}}
	}
	entries := func(st *nvram) []aclEntry { return append(systemAccounts(), st.users...) }
	nameTaken := func(st *nvram, name string) bool {
		if strings.EqualFold(name, st.adminUser) {
			return true
		}
		for _, u := range entries(st) {
			if u.name != "" && strings.EqualFold(u.name, name) {
				return true
			}
		}
		return false
	}
	c.methods = map[string]method{
		// SetAdminAclEntryEx: user name rule (36), DigestPassword must be
		// base64 of a 16-byte MD5 (2054); the hash becomes the digest HA1.
		"SetAdminAclEntryEx": {write: true, fn: func(c *call) ([]prop, int, *fault) {
			st := c.d.st
			user, _ := c.paramText("Username")
			if checkUserName(user) != nil {
				return nil, rvInvalidParameter, nil
			}
			for _, u := range st.users {
				if u.name != "" && strings.EqualFold(u.name, user) {
					return nil, rvDuplicate, nil
				}
			}
			pw, _ := c.paramText("DigestPassword")
			h, ok := decodeDigestPassword(pw)
			if !ok {
				return nil, rvInvalidPassword, nil
			}
			st.adminUser, st.adminHA1, st.adminSet = user, h, true
			c.d.usersChanged()
			return nil, rvSuccess, nil
		}},
		"GetAdminAclEntry": {fn: func(c *call) ([]prop, int, *fault) {
			return []prop{ps("Username", c.d.state().adminUser)}, rvSuccess, nil
		}},
		// EnumerateUserAclEntries lists handles from StartIndex (1-based), 50 at most.
		"EnumerateUserAclEntries": {fn: func(c *call) ([]prop, int, *fault) {
			start, ok := c.paramInt("StartIndex")
			all := entries(c.d.state())
			if !ok || start < 1 || start > len(all)+1 {
				return nil, rvInvalidParameter, nil
			}
			var hs []int
			for _, u := range all[start-1:] {
				if len(hs) == 50 {
					break
				}
				hs = append(hs, u.handle)
			}
			out := []prop{pi("TotalCount", len(all)), pi("HandlesCount", len(hs))}
			if len(hs) > 0 {
				out = append(out, pints("Handles", hs))
			}
			return out, rvSuccess, nil
		}},
		"GetUserAclEntryEx": {fn: func(c *call) ([]prop, int, *fault) {
			h, _ := c.paramInt("Handle")
			for _, u := range entries(c.d.state()) {
				if u.handle != h {
					continue
				}
				var out []prop
				if u.name != "" {
					out = append(out, ps("DigestUsername", u.name))
				} else {
					out = append(out, ps("KerberosUserSid", u.kerberosSID))
				}
				return append(out, pi("AccessPermission", u.access), pints("Realms", u.realms)), rvSuccess, nil
			}
			return nil, rvInvalidHandle, nil
		}},
		// RemoveUserAclEntry: $$ system accounts are not removable (16).
		"RemoveUserAclEntry": {write: true, fn: func(c *call) ([]prop, int, *fault) {
			st := c.d.st
			h, _ := c.paramInt("Handle")
			for _, u := range systemAccounts() {
				if u.handle == h {
					return nil, rvNotPermitted, nil
				}
			}
			i := slices.IndexFunc(st.users, func(u aclEntry) bool { return u.handle == h })
			if i < 0 {
				return nil, rvInvalidHandle, nil
			}
			st.users = slices.Delete(st.users, i, i+1)
			c.d.usersChanged()
			return nil, rvSuccess, nil
		}},
		// AddUserAclEntryEx: either a digest user (name rule, hash as for
		// the admin) or a Kerberos SID; AccessPermission 0..2; realms 1..24;
		// duplicates 2058; at most maxUserEntries entries (23).
		"AddUserAclEntryEx": {write: true, fn: func(c *call) ([]prop, int, *fault) {
			st := c.d.st
			e := aclEntry{}
			name, hasName := c.paramText("DigestUsername")
			sid, hasSID := c.paramText("KerberosUserSid")
			if hasName == hasSID {
				return nil, rvInvalidParameter, nil
			}
			if hasName {
				if checkUserName(name) != nil {
					return nil, rvInvalidParameter, nil
				}
				if nameTaken(st, name) {
					return nil, rvDuplicate, nil
				}
				pw, _ := c.paramText("DigestPassword")
				h, ok := decodeDigestPassword(pw)
				if !ok {
					return nil, rvInvalidPassword, nil
				}
				e.name, e.ha1 = name, h
			} else {
				raw, err := base64.StdEncoding.DecodeString(sid)
				if err != nil || len(raw) < 8 || len(raw) > 68 || raw[0] != 1 {
					return nil, rvInvalidParameter, nil // not a binary Windows SID
				}
				for _, u := range st.users {
					if u.kerberosSID == sid {
						return nil, rvDuplicate, nil
					}
				}
				e.kerberosSID = sid
			}
			acc, ok := c.paramInt("AccessPermission")
			if !ok || acc < 0 || acc > 2 {
				return nil, rvInvalidParameter, nil
			}
			realms, ok := c.paramInts("Realms")
			if !ok || len(realms) == 0 {
				return nil, rvInvalidParameter, nil
			}
			for _, r := range realms {
				if r < 1 || r > 24 {
					return nil, rvInvalidParameter, nil
				}
			}
			if len(st.users) >= maxUserEntries {
				return nil, rvMaxLimit, nil
			}
			e.access, e.realms = acc, realms
			if st.nextUserHandle < 2 {
				st.nextUserHandle = 2
			}
			e.handle = st.nextUserHandle
			st.nextUserHandle++
			st.users = append(st.users, e)
			c.d.usersChanged()
			return []prop{pi("Handle", e.handle)}, rvSuccess, nil
		}},
	}
	return c
}

// --- AMT_KerberosSettingData ---

func (s *Sim) kerberos() *class {
	c := &class{name: "AMT_KerberosSettingData", uri: amtPrefix + "AMT_KerberosSettingData"}
	supported := pints("SupportedEncryptionAlgorithms", []int{0, 1, 2})
	c.list = func(_ *call, st *nvram) []instance {
		k := st.krb
		if !k.configuredB {
			return []instance{{ps("ElementName", "Intel(r) AMT: Kerberos Settings"), ps("InstanceID", krbID),
				pb("KrbEnabled", false), supported}}
		}
		in := instance{}
		if len(k.configAlgs) > 0 {
			in = append(in, pints("ConfiguredEncryptionAlgorithms", k.configAlgs))
		}
		in = append(in, ps("ElementName", "Intel(r) AMT: Kerberos Settings"), ps("InstanceID", krbID),
			pi("KeyVersion", k.keyVersion), pb("KrbEnabled", k.enabled), pi("MaximumClockTolerance", k.maxTol),
			ps("RealmName", k.realm), supported)
		return []instance{in}
	}
	// Put rules: MaximumClockTolerance 1..5 minutes; MasterKey is base64 of
	// a 16-byte RC4-HMAC key only; AES keys come from Passphrase + Salt +
	// IterationCount (AMT 8+), never with a MasterKey in the same Put, and
	// AES (1, 2) in ConfiguredEncryptionAlgorithms needs them; enabling
	// needs RealmName and a key, and TLS (Kerberos over plain HTTP would
	// expose tickets to replay on the LAN).
	c.put = func(c *call, st *nvram, _ instance) *fault {
		get := func(n string) (string, bool) {
			e := c.in.child(c.cls.uri, n)
			if e == nil {
				return "", false
			}
			return e.trimmed(), true
		}
		k := st.krb
		if v, ok := get("RealmName"); ok {
			k.realm = v
		}
		if v, ok := get("KeyVersion"); ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return errRepresentation("KeyVersion %q invalid", v)
			}
			k.keyVersion = n
		}
		if v, ok := get("MaximumClockTolerance"); ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > maxClockTol {
				return errRepresentation("MaximumClockTolerance %q not in 1..%d", v, maxClockTol)
			}
			k.maxTol = n
		}
		if v, ok := get("MasterKey"); ok && v != "" {
			b, err := base64.StdEncoding.DecodeString(v)
			if err != nil || len(b) != 16 {
				return errRepresentation("MasterKey must be base64 of a 16-byte RC4-HMAC key")
			}
			k.masterKey = b
		}
		if v, ok := get("Passphrase"); ok && v != "" {
			if c.d.major() < 8 {
				return errRepresentation("Passphrase needs AMT 8 or later")
			}
			if mk, _ := get("MasterKey"); mk != "" {
				return errRepresentation("MasterKey and Passphrase cannot be combined")
			}
			salt, _ := get("Salt")
			iter, err := strconv.Atoi(func() string { v, _ := get("IterationCount"); return v }())
			if salt == "" || err != nil || iter < 1 {
				return errRepresentation("Passphrase needs Salt and a positive IterationCount")
			}
			k.passphrase, k.passSum, k.salt, k.iterations = true, sha256.Sum256([]byte(v)), salt, iter
		}
		var algs []int
		for _, e := range c.in.all(c.cls.uri, "ConfiguredEncryptionAlgorithms") {
			n, err := strconv.Atoi(e.trimmed())
			if err != nil || n < 0 || n > 2 {
				return errRepresentation("ConfiguredEncryptionAlgorithms %q not in 0..2", e.trimmed())
			}
			algs = append(algs, n)
		}
		if len(algs) > 0 {
			k.configAlgs = algs
		}
		for _, a := range k.configAlgs {
			if a != 0 && !k.passphrase {
				return errRepresentation("AES (ConfiguredEncryptionAlgorithms %d) needs Passphrase, Salt and IterationCount", a)
			}
		}
		v, ok := get("KrbEnabled")
		en, good := parseBool(v)
		if !ok || !good {
			return errRepresentation("KrbEnabled must be a boolean")
		}
		k.enabled = en
		if en {
			if k.realm == "" || (len(k.masterKey) == 0 && !k.passphrase) {
				return errRepresentation("enabling Kerberos needs RealmName and MasterKey (or Passphrase)")
			}
			if !c.d.live.tls && !st.tls8023.enabled {
				return errRepresentation("Kerberos can only be enabled with TLS")
			}
		}
		k.configuredB = true
		st.krb = k
		return nil
	}
	return c
}

// --- IPS_IEEE8021xSettings ---

func (s *Sim) ieee8021x() *class {
	c := &class{name: "IPS_IEEE8021xSettings", uri: ipsPrefix + "IPS_IEEE8021xSettings"}
	c.list = func(_ *call, st *nvram) []instance {
		x := st.dot1x
		in := instance{}
		if x.enabled == 2 {
			in = append(in, pi("AuthenticationProtocol", x.authProto))
		}
		in = append(in, pb("AvailableInS0", x.availableS0))
		if x.enabled == 2 && x.domain != "" {
			in = append(in, ps("Domain", x.domain))
		}
		in = append(in, ps("ElementName", dot1xID), pi("Enabled", x.enabled), ps("InstanceID", dot1xID), pi("PxeTimeout", x.pxeTimeout))
		if x.enabled == 2 {
			if x.serverName != "" {
				in = append(in, ps("ServerCertificateName", x.serverName), pi("ServerCertificateNameComparison", x.serverCmp))
			}
			if x.username != "" {
				in = append(in, ps("Username", x.username))
			}
		}
		return []instance{in}
	}
	// Put: Enabled 2 (on) / 3 (off) / 6 (on, no OS); AuthenticationProtocol
	// 0..10 (0 EAP-TLS); PxeTimeout 0..86400. Over an 802.1X wired link,
	// turning 802.1X off is incompatible with the network: the link drops (S15).
	c.put = func(c *call, st *nvram, _ instance) *fault {
		x := st.dot1x
		get := func(n string) string { return c.in.child(c.cls.uri, n).trimmed() }
		en, err := strconv.Atoi(get("Enabled"))
		if err != nil || (en != 2 && en != 3 && en != 6) {
			return errRepresentation("Enabled must be 2, 3 or 6")
		}
		if en == 6 {
			en = 2
		}
		x.enabled = en
		if v := get("AuthenticationProtocol"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 10 {
				return errRepresentation("AuthenticationProtocol %q invalid", v)
			}
			x.authProto = n
		}
		if v := get("PxeTimeout"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 86400 {
				return errRepresentation("PxeTimeout %q invalid", v)
			}
			x.pxeTimeout = n
		}
		if v, ok := parseBool(get("AvailableInS0")); ok {
			x.availableS0 = v
		}
		x.username, x.domain, x.serverName = get("Username"), get("Domain"), get("ServerCertificateName")
		x.serverCmp = atoiDefault(get("ServerCertificateNameComparison"), 0)
		st.dot1x = x
		if c.d.link() == LinkWired8021X && en != 2 {
			c.d.linkDown, c.restart = true, true
		}
		return nil
	}
	// SetCertificates binds the RADIUS server's trusted root and the
	// client certificate (which must have its key on the device).
	c.methods = map[string]method{"SetCertificates": {write: true, fn: func(c *call) ([]prop, int, *fault) {
		st := c.d.st
		handle := func(n string) (int, bool) {
			e := c.param(n)
			if e == nil {
				return -1, true
			}
			_, id, ok := eprSelector(e, "InstanceID")
			h, ok2 := parseHandle(id, "Intel(r) AMT Certificate: Handle: ")
			return h, ok && ok2
		}
		root, ok1 := handle("ServerCertificateIssuer")
		client, ok2 := handle("ClientCertificate")
		if !ok1 || !ok2 {
			return nil, rvInvalidParameter, nil
		}
		if (root >= 0 && st.cert(root) == nil) || (client >= 0 && st.cert(client) == nil) {
			return nil, rvNotFound, nil
		}
		if root >= 0 && !st.cert(root).trustedRoot {
			return nil, rvInvalidHandle, nil
		}
		if client >= 0 && st.key(st.cert(client).keyHandle) == nil {
			return nil, rvCertKeyMismatch, nil // no private key on the device matches the certificate
		}
		st.dot1x.rootHandle, st.dot1x.clientHandle = root, client
		return nil, rvSuccess, nil
	}}}
	return c
}

// --- Wi-Fi ---

func (s *Sim) wifiPort() *class {
	c := &class{name: "AMT_WiFiPortConfigurationService", uri: amtPrefix + "AMT_WiFiPortConfigurationService"}
	c.list = func(c *call, _ *nvram) []instance {
		in := instance{ps("CreationClassName", "AMT_WiFiPortConfigurationService"),
			ps("ElementName", "Intel(r) AMT WiFiPort Configuration Service"), pi("EnabledState", 5), pi("HealthState", 5),
			ps("LastConnectedSsidUnderMeControl", ""), ps("Name", "Intel(r) AMT WiFi Port Configuration Service"),
			pi("NoHostCsmeSoftwarePolicy", 0), pi("RequestedState", 12), ps("SystemCreationClassName", "CIM_ComputerSystem"),
			ps("SystemName", "Intel(r) AMT")}
		if c.d.major() >= 16 {
			in = append(in, pb("UEFIWiFiProfileShareEnabled", false))
		}
		return []instance{append(in, pi("localProfileSynchronizationEnabled", 0))}
	}
	// AddWiFiSettings: ElementName 1..32 and unique (2058), SSID 1..32,
	// Priority unique (2058); AuthenticationMethod 4/6 (WPA/WPA2-PSK) need a
	// PSKPassPhrase of 8..63, 5/7 (802.1X) need a client credential; at most
	// maxWiFiProfiles (23). Over a wireless link a profile change drops the
	// link (S15: the product must not update it there).
	c.methods = map[string]method{"AddWiFiSettings": {write: true, fn: func(c *call) ([]prop, int, *fault) {
		st := c.d.st
		// The parameter is in the method's namespace, the embedded
		// instance's properties in CIM_WiFiEndpointSettings' (as Intel's
		// client sends them); anything else is an invalid parameter.
		in := c.param("WiFiEndpointSettingsInput")
		if in == nil {
			return nil, rvInvalidParameter, nil
		}
		get := func(n string) string { return in.child(cimPrefix+"CIM_WiFiEndpointSettings", n).trimmed() }
		p := wifiProfile{elementName: get("ElementName"), ssid: get("SSID"), clientCert: -1, caCert: -1}
		p.instanceID = "Intel(r) AMT:WiFi Endpoint Settings " + p.elementName
		var err1, err2, err3 error
		p.priority, err1 = strconv.Atoi(get("Priority"))
		p.authMethod, err2 = strconv.Atoi(get("AuthenticationMethod"))
		p.encMethod, err3 = strconv.Atoi(get("EncryptionMethod"))
		if err1 != nil || err2 != nil || err3 != nil || p.elementName == "" || len(p.elementName) > 32 || p.ssid == "" || len(p.ssid) > 32 {
			return nil, rvInvalidParameter, nil
		}
		switch p.authMethod {
		case 4, 6:
			psk := get("PSKPassPhrase")
			if len(psk) < 8 || len(psk) > 63 {
				return nil, rvInvalidParameter, nil
			}
			p.pskSet = true
		case 5, 7:
			cc := c.param("ClientCredential")
			eap := c.param("IEEE8021xSettingsInput")
			if cc == nil || eap == nil {
				return nil, rvInvalidParameter, nil
			}
			// EAP-TLS (0) is what a client certificate is for.
			if proto := eap.child(cimPrefix+"CIM_IEEE8021xSettings", "AuthenticationProtocol"); proto == nil || proto.trimmed() != "0" {
				return nil, rvInvalidParameter, nil
			}
			_, id, _ := eprSelector(cc, "InstanceID")
			h, ok := parseHandle(id, "Intel(r) AMT Certificate: Handle: ")
			if !ok || st.cert(h) == nil {
				return nil, rvInvalidHandle, nil
			}
			p.clientCert = h
			if ca := c.param("CACredential"); ca != nil {
				_, id, _ := eprSelector(ca, "InstanceID")
				if h, ok := parseHandle(id, "Intel(r) AMT Certificate: Handle: "); ok && st.cert(h) != nil {
					p.caCert = h
				}
			}
		default:
			return nil, rvInvalidParameter, nil
		}
		for _, w := range st.wifi {
			if w.elementName == p.elementName || w.priority == p.priority {
				return nil, rvDuplicate, nil
			}
		}
		if len(st.wifi) >= maxWiFiProfiles {
			return nil, rvMaxLimit, nil
		}
		st.wifi = append(st.wifi, p)
		if c.d.link() == LinkWireless {
			c.d.linkDown, c.restart = true, true
		}
		return nil, rvSuccess, nil
	}}}
	return c
}

func (s *Sim) wifiSettings() *class {
	c := &class{name: "CIM_WiFiEndpointSettings", uri: cimPrefix + "CIM_WiFiEndpointSettings", delRV: true}
	c.list = func(_ *call, st *nvram) []instance {
		var out []instance
		for _, w := range st.wifi {
			out = append(out, instance{pi("AuthenticationMethod", w.authMethod), pi("BSSType", 3), ps("ElementName", w.elementName),
				pi("EncryptionMethod", w.encMethod), ps("InstanceID", w.instanceID), pi("Priority", w.priority), ps("SSID", w.ssid)})
		}
		return out
	}
	c.del = func(c *call, st *nvram, target instance) *fault {
		id, _ := target.get("InstanceID")
		st.wifi = slices.DeleteFunc(st.wifi, func(w wifiProfile) bool { return w.instanceID == id })
		if c.d.link() == LinkWireless {
			c.d.linkDown, c.restart = true, true
		}
		return nil
	}
	return c
}
