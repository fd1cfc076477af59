package amtsim

import (
	"crypto/x509"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestControlModes: ACM by hand (mebx), host-based CCM and a fresh
// activation report their control mode; CCM forces user consent and
// refuses SetMEBxPassword.
func TestControlModes(t *testing.T) {
	base := base83(t)
	mebx, _ := addrAdd(base, 1)
	ccm, _ := addrAdd(base, 2)
	s := startSim(t, Config{Devices: 3, BaseIP: base, Kind: KindMEBx, Overrides: map[netip.Addr]Override{mebx: {Kind: KindMEBx}, ccm: {Kind: KindCCM}}})
	hbs := ipsPrefix + "IPS_HostBasedSetupService"
	opt := ipsPrefix + "IPS_OptInService"
	scs := amtPrefix + "AMT_SetupAndConfigurationService"
	tests := []struct {
		name                          string
		addr                          netip.Addr
		mode, provMode, optIn, modify string
		mebx                          string // SetMEBxPassword ReturnValue
		lowerConsent                  int    // HTTP status of a Put of OptInRequired 0
	}{
		{"mebx is ACM", mebx, "2", "1", "0", "1", "16", http.StatusOK},
		{"ccm forces consent", ccm, "1", "4", "4294967295", "0", "16", http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, s, tc.addr, "admin", testPassword)
			if v := textOf(t, c.get(hbs, nil), "CurrentControlMode"); v != tc.mode {
				t.Errorf("CurrentControlMode %s, want %s", v, tc.mode)
			}
			if v := textOf(t, c.get(scs, nil), "ProvisioningMode"); v != tc.provMode {
				t.Errorf("ProvisioningMode %s, want %s", v, tc.provMode)
			}
			b := c.get(opt, nil)
			if v, m := textOf(t, b, "OptInRequired"), textOf(t, b, "CanModifyOptInPolicy"); v != tc.optIn || m != tc.modify {
				t.Errorf("OptInRequired %s CanModifyOptInPolicy %s, want %s %s", v, m, tc.optIn, tc.modify)
			}
			if rv := c.rv(scs, "SetMEBxPassword", `<h:Password>Passw0rd!</h:Password>`); rv != tc.mebx {
				t.Errorf("SetMEBxPassword %s, want %s", rv, tc.mebx)
			}
			code, _ := c.do(actionPut, opt, nil, `<h:IPS_OptInService xmlns:h="`+opt+`"><h:OptInRequired>0</h:OptInRequired></h:IPS_OptInService>`)
			if code != tc.lowerConsent {
				t.Errorf("Put OptInRequired 0: HTTP %d, want %d", code, tc.lowerConsent)
			}
		})
	}
}

// TestRedirectionAndWireless: KVM needs the redirection listener; the
// Wi-Fi port is off until RequestStateChange(32769); no web UI past
// WebUIUntil; DERKey's encoding follows DERKeySPKIFrom.
func TestRedirectionAndWireless(t *testing.T) {
	base := base83(t)
	newer, _ := addrAdd(base, 1)
	s := startSim(t, Config{Devices: 2, BaseIP: base, Kind: KindMEBx, Firmware: Firmware{DERKeySPKIFrom: 16},
		Overrides: map[netip.Addr]Override{newer: {Version: "16.0.15"}}})
	c := newClient(t, s, base, "admin", testPassword)
	kvm := cimPrefix + "CIM_KVMRedirectionSAP"
	rs := amtPrefix + "AMT_RedirectionService"
	if rv := c.rv(kvm, "RequestStateChange", `<h:RequestedState>2</h:RequestedState>`); rv != "0" {
		t.Fatalf("KVM RequestStateChange: %s", rv)
	}
	if v := textOf(t, c.get(kvm, nil), "EnabledState"); v != "3" {
		t.Errorf("KVM without the listener: EnabledState %s, want 3 (not usable)", v)
	}
	if st, _ := s.Device(base); !st.KVM || st.KVMUsable {
		t.Errorf("KVM requested %v usable %v, want true false", st.KVM, st.KVMUsable)
	}
	c.put(rs, nil, "AMT_RedirectionService", `<h:ListenerEnabled>true</h:ListenerEnabled>`)
	if v := textOf(t, c.get(kvm, nil), "EnabledState"); v != "6" {
		t.Errorf("KVM with the listener: EnabledState %s, want 6", v)
	}

	wp := cimPrefix + "CIM_WiFiPort"
	if v := textOf(t, c.get(wp, nil), "EnabledState"); v != "3" {
		t.Errorf("Wi-Fi port from the factory: EnabledState %s, want 3", v)
	}
	for _, tc := range []struct{ state, rv, enabled string }{{"2", "5", "3"}, {"32769", "0", "32769"}, {"3", "0", "3"}} {
		if rv := c.rv(wp, "RequestStateChange", `<h:RequestedState>`+tc.state+`</h:RequestedState>`); rv != tc.rv {
			t.Errorf("Wi-Fi RequestStateChange(%s) = %s, want %s", tc.state, rv, tc.rv)
		}
		if v := textOf(t, c.get(wp, nil), "EnabledState"); v != tc.enabled {
			t.Errorf("after %s: EnabledState %s, want %s", tc.state, v, tc.enabled)
		}
	}

	n := newClient(t, s, newer, "admin", testPassword)
	if code, _ := n.do(actionGet, amtPrefix+"AMT_WebUIService", nil, ""); code != 400 {
		t.Errorf("web UI on 16.0: HTTP %d, want 400 (no such instance)", code)
	}
	c.get(amtPrefix+"AMT_WebUIService", nil) // 11.8 still has one
	pkm := amtPrefix + "AMT_PublicKeyManagementService"
	for _, cl := range []*wsman{c, n} {
		if rv := textOf(t, cl.invoke(pkm, "GenerateKeyPair", nil, `<h:KeyAlgorithm>0</h:KeyAlgorithm><h:KeyLength>2048</h:KeyLength>`), "ReturnValue"); rv != "0" {
			t.Fatalf("GenerateKeyPair: %s", rv)
		}
	}
	if _, err := x509.ParsePKCS1PublicKey(mustB64(t, textOf(t, c.pull(amtPrefix+"AMT_PublicPrivateKeyPair"), "DERKey"))); err != nil {
		t.Errorf("11.8 DERKey is not PKCS#1: %v", err)
	}
	if _, err := x509.ParsePKIXPublicKey(mustB64(t, textOf(t, n.pull(amtPrefix+"AMT_PublicPrivateKeyPair"), "DERKey"))); err != nil {
		t.Errorf("16.0 DERKey is not SubjectPublicKeyInfo: %v", err)
	}
}

// TestKerberosAndStores: MasterKey is a 16-byte RC4 key only, AES comes
// from Passphrase + Salt + IterationCount; ReturnValues 2058, 2064, 2068;
// mutual TLS without a trusted root cannot be committed (2057).
func TestKerberosAndStores(t *testing.T) {
	s := startSim(t, Config{Devices: 1, BaseIP: base83(t), Kind: KindMEBx})
	a := s.Addrs()[0]
	c := newClient(t, s, a, "admin", testPassword)
	krb := amtPrefix + "AMT_KerberosSettingData"
	key16, key32 := b64(make([]byte, 16)), b64(make([]byte, 32))
	props := func(extra string) string {
		return `<h:AMT_KerberosSettingData xmlns:h="` + krb + `"><h:InstanceID>` + krbID + `</h:InstanceID><h:RealmName>AMT.TEST</h:RealmName>` +
			`<h:KeyVersion>1</h:KeyVersion><h:MaximumClockTolerance>5</h:MaximumClockTolerance>` + extra +
			`<h:KrbEnabled>false</h:KrbEnabled></h:AMT_KerberosSettingData>`
	}
	for _, tc := range []struct {
		name, extra string
		ok          bool
	}{
		{"RC4 master key", `<h:MasterKey>` + key16 + `</h:MasterKey><h:ConfiguredEncryptionAlgorithms>0</h:ConfiguredEncryptionAlgorithms>`, true},
		{"AES key as MasterKey", `<h:MasterKey>` + key32 + `</h:MasterKey>`, false},
		{"AES without passphrase", `<h:MasterKey>` + key16 + `</h:MasterKey><h:ConfiguredEncryptionAlgorithms>2</h:ConfiguredEncryptionAlgorithms>`, false},
		{"passphrase without salt", `<h:Passphrase>s3cret</h:Passphrase><h:IterationCount>4096</h:IterationCount>`, false},
		{"passphrase and master key", `<h:MasterKey>` + key16 + `</h:MasterKey><h:Passphrase>s3cret</h:Passphrase><h:Salt>AMT.TESTamt1</h:Salt><h:IterationCount>4096</h:IterationCount>`, false},
		{"AES from passphrase", `<h:Passphrase>s3cret</h:Passphrase><h:Salt>AMT.TESTamt1</h:Salt><h:IterationCount>4096</h:IterationCount>` +
			`<h:ConfiguredEncryptionAlgorithms>1</h:ConfiguredEncryptionAlgorithms><h:ConfiguredEncryptionAlgorithms>2</h:ConfiguredEncryptionAlgorithms>`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, b := c.do(actionPut, krb, nil, props(tc.extra))
			if (code == http.StatusOK) != tc.ok {
				t.Errorf("HTTP %d, want ok=%v: %s", code, tc.ok, b)
			}
		})
	}

	pkm := amtPrefix + "AMT_PublicKeyManagementService"
	key := b64(x509PKCS1(t))
	if rv := c.rv(pkm, "AddKey", `<h:KeyBlob>`+key+`</h:KeyBlob>`); rv != "0" {
		t.Fatalf("AddKey: %s", rv)
	}
	ca := newTestCA(t, "radius root", 2048)
	leafID := textOf(t, c.invoke(pkm, "AddCertificate", nil, `<h:CertificateBlob>`+b64(ca.der)+`</h:CertificateBlob>`), "Selector")
	x := ipsPrefix + "IPS_IEEE8021xSettings"
	certRef := func(name, handle string) string {
		return eprXML(name, amtPrefix+"AMT_PublicKeyCertificate", "InstanceID", "Intel(r) AMT Certificate: Handle: "+handle)
	}
	for _, tc := range []struct{ name, method, uri, params, want string }{
		{"duplicate key is 2058", "AddKey", pkm, `<h:KeyBlob>` + key + `</h:KeyBlob>`, "2058"},
		{"unknown certificate is 2068", "SetCertificates", x, certRef("ClientCertificate", "42"), "2068"},
		{"certificate without its key is 2064", "SetCertificates", x, certRef("ClientCertificate", strings.TrimPrefix(leafID, "Intel(r) AMT Certificate: Handle: ")), "2064"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if rv := c.rv(tc.uri, tc.method, tc.params); rv != tc.want {
				t.Errorf("ReturnValue %s, want %s", rv, tc.want)
			}
		})
	}

	t.Run("mutual TLS without a trusted root is 2057", func(t *testing.T) {
		s := startSim(t, Config{Devices: 1, Kind: KindMEBx})
		c := newClient(t, s, s.Addrs()[0], "admin", testPassword)
		provisionTLS(t, c, "pc1.amt.test", true)
		certs := c.pull(amtPrefix + "AMT_PublicKeyCertificate")
		for i, trusted := range allTexts(certs, "TrustedRootCertficate") {
			if trusted == "true" {
				c.ok(actionDelete, amtPrefix+"AMT_PublicKeyCertificate", map[string]string{"InstanceID": allTexts(certs, "InstanceID")[i]}, "")
			}
		}
		tsd := amtPrefix + "AMT_TLSSettingData"
		c.put(tsd, map[string]string{"InstanceID": tls8023ID}, "AMT_TLSSettingData", `<h:AcceptNonSecureConnections>true</h:AcceptNonSecureConnections><h:ElementName>`+tls8023ID+
			`</h:ElementName><h:Enabled>true</h:Enabled><h:InstanceID>`+tls8023ID+`</h:InstanceID><h:MutualAuthentication>true</h:MutualAuthentication>`)
		if rv := c.rv(amtPrefix+"AMT_SetupAndConfigurationService", "CommitChanges", ""); rv != "2057" {
			t.Errorf("CommitChanges: %s, want 2057", rv)
		}
	})

	// Intel: no trusted root can be added while a TLS setting has mutual
	// authentication on (RootsWhileMutual relaxes it).
	for _, tc := range []struct {
		name    string
		relaxed bool
		want    string
	}{{"trusted root refused while mutual TLS is set", false, "16"}, {"RootsWhileMutual accepts it", true, "0"}} {
		t.Run(tc.name, func(t *testing.T) {
			s := startSim(t, Config{Devices: 1, Kind: KindMEBx, BaseIP: netip.MustParseAddr("127.21.4.1"), Firmware: Firmware{RootsWhileMutual: tc.relaxed}})
			c := newClient(t, s, s.Addrs()[0], "admin", testPassword)
			provisionTLS(t, c, "pc1.amt.test", true)
			tsd := amtPrefix + "AMT_TLSSettingData"
			c.put(tsd, map[string]string{"InstanceID": tls8023ID}, "AMT_TLSSettingData", `<h:AcceptNonSecureConnections>true</h:AcceptNonSecureConnections><h:ElementName>`+tls8023ID+
				`</h:ElementName><h:Enabled>true</h:Enabled><h:InstanceID>`+tls8023ID+`</h:InstanceID><h:MutualAuthentication>true</h:MutualAuthentication>`)
			root := newTestCA(t, "another root", 2048)
			if rv := c.rv(pkm, "AddTrustedRootCertificate", `<h:CertificateBlob>`+b64(root.der)+`</h:CertificateBlob>`); rv != tc.want {
				t.Errorf("AddTrustedRootCertificate: %s, want %s", rv, tc.want)
			}
		})
	}
}

// TestLockoutAndNonces: wrong passwords lock the account (the right one is
// refused too) until LockoutDuration passes; a user-list change or a
// NonceReset period makes earlier nonces stale.
func TestLockoutAndNonces(t *testing.T) {
	clock, advance := fakeClock()
	s := startSim(t, Config{Devices: 1, BaseIP: base83(t), Kind: KindMEBx, Now: clock,
		Firmware: Firmware{LockoutThreshold: 3, LockoutDuration: time.Minute, NonceReset: time.Hour}})
	a := s.Addrs()[0]
	send := rawGet(t, s, a)
	m := challengeRE.FindStringSubmatch(send("").Header.Get("WWW-Authenticate"))
	realm, nonce := m[1], m[2]
	right := func() int { return send(digestAuth("admin", realm, testPassword, nonce, "/wsman")).StatusCode }
	wrong := func() int { return send(digestAuth("admin", realm, "Wr0ng!pass", nonce, "/wsman")).StatusCode }

	steps := []struct {
		name string
		do   func() int
		want int
	}{
		{"right password", right, 200},
		{"wrong 1", wrong, 401}, {"wrong 2", wrong, 401},
		{"a success resets the count", right, 200},
		{"wrong 1 again", wrong, 401}, {"wrong 2 again", wrong, 401}, {"wrong 3 locks", wrong, 401},
		{"right password while locked", right, 401},
		{"after the lockout", func() int { advance(61 * time.Second); return right() }, 200},
	}
	for _, st := range steps {
		if got := st.do(); got != st.want {
			t.Fatalf("%s: HTTP %d, want %d", st.name, got, st.want)
		}
	}
	if ds, _ := s.Device(a); ds.Lockouts != 1 {
		t.Errorf("lockouts %d, want 1", ds.Lockouts)
	}

	staleAfter := func(name string, change func()) {
		t.Run(name, func(t *testing.T) {
			m := challengeRE.FindStringSubmatch(send("").Header.Get("WWW-Authenticate"))
			nonce := m[2]
			if send(digestAuth("admin", realm, testPassword, nonce, "/wsman")).StatusCode != 200 {
				t.Fatal("fresh nonce refused")
			}
			change()
			res := send(digestAuth("admin", realm, testPassword, nonce, "/wsman"))
			if m := challengeRE.FindStringSubmatch(res.Header.Get("WWW-Authenticate")); res.StatusCode != 401 || m == nil || m[3] != "true" {
				t.Errorf("old nonce after the change: HTTP %d %q, want 401 stale=true", res.StatusCode, res.Header.Get("WWW-Authenticate"))
			}
		})
	}
	staleAfter("user added", func() {
		advance(time.Second)
		c := newClient(t, s, a, "admin", testPassword)
		if rv := c.rv(amtPrefix+"AMT_AuthorizationService", "AddUserAclEntryEx", `<h:DigestUsername>ops</h:DigestUsername><h:DigestPassword>`+
			b64(make([]byte, 16))+`</h:DigestPassword><h:AccessPermission>2</h:AccessPermission><h:Realms>3</h:Realms>`); rv != "0" {
			t.Fatalf("AddUserAclEntryEx: %s", rv)
		}
	})
	staleAfter("nonce reset period", func() { advance(time.Hour) })
}

// TestImmediateChanges: on real firmware a reset drops uncommitted
// settings but not password or user changes (they took effect at once);
// a partial unprovision keeps the admin login reachable.
func TestImmediateChanges(t *testing.T) {
	s := startSim(t, Config{Devices: 1, BaseIP: base83(t), Kind: KindMEBx})
	a := s.Addrs()[0]
	c := newClient(t, s, a, "admin", testPassword)
	const admin = "Adm1n!pass"
	if rv := c.rv(amtPrefix+"AMT_AuthorizationService", "SetAdminAclEntryEx", `<h:Username>admin</h:Username><h:DigestPassword>`+
		digestB64(s, a, "admin", admin)+`</h:DigestPassword>`); rv != "0" {
		t.Fatalf("SetAdminAclEntryEx: %s", rv)
	}
	c = newClient(t, s, a, "admin", admin)
	ps := amtPrefix + "AMT_SystemPowerScheme"
	c.invoke(ps, "SetPowerScheme", map[string]string{"InstanceID": "SCHEME 0"}, "")
	d := s.device(a)
	d.mu.Lock()
	d.revert() // what an injected reboot does
	d.mu.Unlock()
	st, _ := s.Device(a)
	if st.AdminHA1 != hexHA1(st.DigestRealm, admin) {
		t.Error("the reset dropped the admin password change")
	}
	if st.PowerScheme == "Desktop: ON in S0" {
		t.Error("the reset kept an uncommitted power scheme")
	}
	if rv := c.rv(amtPrefix+"AMT_SetupAndConfigurationService", "PartialUnprovision", ""); rv != "0" {
		t.Fatalf("PartialUnprovision: %s", rv)
	}
	waitListening(t, a, s.HTTPPort(), true)
	if v := textOf(t, c.get(amtPrefix+"AMT_SetupAndConfigurationService", nil), "ProvisioningState"); v != "1" {
		t.Errorf("after PartialUnprovision: state %s, want 1", v)
	}
}

// TestStoreLimits: the certificate and key stores are finite; the first
// entry past the limit answers 23, and deleting one makes room again.
func TestStoreLimits(t *testing.T) {
	s := startSim(t, Config{Devices: 1, BaseIP: base83(t), Kind: KindMEBx, KeyPoolSize: -1})
	c := newClient(t, s, s.Addrs()[0], "admin", testPassword)
	pkm := amtPrefix + "AMT_PublicKeyManagementService"
	root := newTestCA(t, "store root", 2048)
	var last, firstID string
	for i := 0; i <= maxCertificates; i++ {
		out := c.invoke(pkm, "AddCertificate", nil, `<h:CertificateBlob>`+b64(provLeaf(t, root, fmt.Sprintf("c%d.amt.test", i), nil))+`</h:CertificateBlob>`)
		if last = textOf(t, out, "ReturnValue"); i == 0 {
			firstID = textOf(t, out, "Selector")
		}
	}
	if last != "23" {
		t.Fatalf("certificate %d: ReturnValue %s, want 23", maxCertificates+1, last)
	}
	c.ok(actionDelete, amtPrefix+"AMT_PublicKeyCertificate", map[string]string{"InstanceID": firstID}, "")
	if rv := c.rv(pkm, "AddCertificate", `<h:CertificateBlob>`+b64(provLeaf(t, root, "again.amt.test", nil))+`</h:CertificateBlob>`); rv != "0" {
		t.Errorf("after a delete: ReturnValue %s, want 0", rv)
	}
	for i := 0; i <= maxKeys; i++ {
		last = textOf(t, c.invoke(pkm, "GenerateKeyPair", nil, `<h:KeyAlgorithm>0</h:KeyAlgorithm><h:KeyLength>2048</h:KeyLength>`), "ReturnValue")
	}
	if last != "23" {
		t.Errorf("key %d: ReturnValue %s, want 23", maxKeys+1, last)
	}
}

// TestFirmwarePolicies: the settings whose firmware behaviour is not
// documented act as configured.
func TestFirmwarePolicies(t *testing.T) {
	scs := amtPrefix + "AMT_SetupAndConfigurationService"
	kvm := cimPrefix + "CIM_KVMRedirectionSAP"
	tests := []struct {
		name        string
		fw          Firmware
		mebx, kvmRV string
	}{
		{"defaults", Firmware{}, "16", "0"},
		{"mebx anytime, KVM refused", Firmware{MEBxPolicy: MEBxAnytime, KVMWithoutListener: KVMRefuse}, "0", "16"},
		{"mebx during setup only", Firmware{MEBxPolicy: MEBxDuringSetup}, "16", "0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startSim(t, Config{Devices: 1, BaseIP: base83(t), Kind: KindMEBx, Firmware: tc.fw})
			c := newClient(t, s, s.Addrs()[0], "admin", testPassword)
			if rv := c.rv(scs, "SetMEBxPassword", `<h:Password>Passw0rd!</h:Password>`); rv != tc.mebx {
				t.Errorf("SetMEBxPassword in ACM: %s, want %s", rv, tc.mebx)
			}
			if rv := c.rv(kvm, "RequestStateChange", `<h:RequestedState>2</h:RequestedState>`); rv != tc.kvmRV {
				t.Errorf("KVM without the listener: %s, want %s", rv, tc.kvmRV)
			}
		})
	}
	if _, err := New(Config{Devices: 1, BaseIP: base83(t), Kind: KindFactory, Firmware: Firmware{MEBxPolicy: "sometimes"}}); err == nil ||
		!strings.Contains(err.Error(), "MEBxPolicy") {
		t.Errorf("bad MEBxPolicy: %v, want an error naming the field", err)
	}
}
