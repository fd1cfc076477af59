package amtsim

import (
	"crypto/md5"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/icholy/digest"
)

func TestIdentifyNeedsNoAuth(t *testing.T) {
	s := startSim(t, Config{Devices: 1, Kind: KindMEBx})
	a := s.Addrs()[0]
	body := `<?xml version="1.0"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:i="http://schemas.dmtf.org/wbem/wsman/identity/1/wsmanidentity.xsd"><s:Header/><s:Body><i:Identify/></s:Body></s:Envelope>`
	res, err := http.Post(fmt.Sprintf("http://%s:%d/wsman", a, s.HTTPPort()), "application/soap+xml", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	for local, want := range map[string]string{"ProductVendor": "Intel Corporation", "ProductVersion": "AMT 11.8.50", "ProtocolVersion": nsWSMan} {
		if got := textOf(t, b, local); got != want {
			t.Errorf("%s = %q, want %q", local, got, want)
		}
	}
	if len(allTexts(b, "SecurityProfileName")) == 0 {
		t.Error("no SecurityProfiles")
	}
}

func TestDigest(t *testing.T) {
	clock, advance := fakeClock()
	s := startSim(t, Config{Devices: 1, Kind: KindMEBx, Now: clock, NonceTTL: time.Minute})
	a := s.Addrs()[0]
	send := rawGet(t, s, a)
	challenge := func() (realm, nonce string) {
		t.Helper()
		res := send("")
		m := challengeRE.FindStringSubmatch(res.Header.Get("WWW-Authenticate"))
		if res.StatusCode != 401 || m == nil || m[3] != "false" {
			t.Fatalf("challenge: %d %q", res.StatusCode, res.Header.Get("WWW-Authenticate"))
		}
		b, _ := io.ReadAll(res.Body)
		if !strings.Contains(string(b), "<html>") {
			t.Errorf("401 body is not HTML: %q", b)
		}
		return m[1], m[2]
	}
	realm, nonce := challenge()
	ds, _ := s.Device(a)
	if realm != ds.DigestRealm {
		t.Fatalf("realm %q, device says %q", realm, ds.DigestRealm)
	}
	tests := []struct {
		name      string
		auth      func() string
		status    int
		wantStale string
	}{
		{"right password", func() string { return digestAuth("admin", realm, testPassword, nonce, "/wsman") }, 200, ""},
		{"wrong password", func() string { return digestAuth("admin", realm, "Wr0ng!pass", nonce, "/wsman") }, 401, "false"},
		{"unknown user", func() string { return digestAuth("bob", realm, testPassword, nonce, "/wsman") }, 401, "false"},
		{"wrong realm", func() string { return digestAuth("admin", "Digest:00", testPassword, nonce, "/wsman") }, 401, "false"},
		{"forged nonce", func() string {
			return digestAuth("admin", realm, testPassword, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "/wsman")
		}, 401, "false"},
		{"basic auth", func() string { return "Basic YWRtaW46eA==" }, 401, "false"},
		{"expired nonce", func() string {
			advance(2 * time.Minute)
			return digestAuth("admin", realm, testPassword, nonce, "/wsman")
		}, 401, "true"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := send(tc.auth())
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.status)
			}
			if tc.wantStale != "" {
				m := challengeRE.FindStringSubmatch(res.Header.Get("WWW-Authenticate"))
				if m == nil || m[3] != tc.wantStale {
					t.Errorf("WWW-Authenticate %q, want stale=%s", res.Header.Get("WWW-Authenticate"), tc.wantStale)
				}
			}
		})
	}
}

func TestFaultsForBadRequests(t *testing.T) {
	s := startSim(t, Config{Devices: 1, Kind: KindMEBx})
	c := newClient(t, s, s.Addrs()[0], "admin", testPassword)
	gs := amtPrefix + "AMT_GeneralSettings"
	tests := []struct{ name, body, subcode string }{
		{"malformed xml", "<Envelope", "SchemaValidationError"},
		{"not soap", `<x/>`, "SchemaValidationError"},
		{"unknown resource", envelope(actionGet, amtPrefix+"AMT_Nothing", "1", nil, ""), "DestinationUnreachable"},
		{"unknown action", envelope(gs+"/Reboot", gs, "1", nil, `<h:Reboot_INPUT xmlns:h="`+gs+`"/>`), "ActionNotSupported"},
		{"bad selector", envelope(actionGet, gs, "1", map[string]string{"Color": "red"}, ""), "InvalidSelectors"},
		{"ambiguous get", envelope(actionGet, amtPrefix+"AMT_TLSSettingData", "1", nil, ""), "InvalidSelectors"},
		{"no message id", strings.Replace(envelope(actionGet, gs, "", nil, ""), "<a:MessageID></a:MessageID>", "", 1), "MessageInformationHeaderRequired"},
		{"bad enumeration context", envelope(actionPull, gs, "1", nil, `<n:Pull xmlns:n="`+nsEnumeration+`"><n:EnumerationContext>zz</n:EnumerationContext></n:Pull>`), "InvalidEnumerationContext"},
		{"partial put", envelope(actionPut, gs, "1", nil, `<h:AMT_GeneralSettings xmlns:h="`+gs+`"><h:HostName>x</h:HostName></h:AMT_GeneralSettings>`), "InvalidRepresentation"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, b, err := c.post(tc.body)
			if err != nil {
				t.Fatal(err)
			}
			if st != 400 {
				t.Fatalf("HTTP %d, want 400: %s", st, b)
			}
			if a := textOf(t, b, "Action"); a != actionFault {
				t.Errorf("Action %q", a)
			}
			if v := allTexts(b, "Value"); len(v) != 2 || !strings.HasSuffix(v[1], ":"+tc.subcode) {
				t.Errorf("subcode %v, want %s", v, tc.subcode)
			}
			if textOf(t, b, "Text") == "" {
				t.Error("empty Reason")
			}
		})
	}
}

func TestCheckPassword(t *testing.T) {
	tests := []struct {
		pw string
		ok bool
	}{
		{"P@ssw0rd1", true}, {"Aa1!aaaa", true}, {"Aa1!" + strings.Repeat("a", 28), true},
		{"Aa1!aaa", false}, {"Aa1!" + strings.Repeat("a", 29), false}, {"Aa1_aaaa", false},
		{"aa1!aaaa", false}, {"AA1!AAAA", false}, {"Aab!aaaa", false}, {"Aa1:aaaa!", false},
		{"Aa1,aaaa!", false}, {`Aa1"aaaa!`, false}, {"Aa1!aaaé", false}, {"Aa1!aa\taa", false},
	}
	for _, tc := range tests {
		t.Run(tc.pw, func(t *testing.T) {
			if err := checkPassword(tc.pw); (err == nil) != tc.ok {
				t.Errorf("checkPassword(%q) = %v, want ok=%v", tc.pw, err, tc.ok)
			}
		})
	}
}

func TestFirmwareRules(t *testing.T) {
	// The MEBx policy lets SetMEBxPassword through, so its complexity rule shows.
	s := startSim(t, Config{Devices: 1, Kind: KindMEBx, Firmware: Firmware{MEBxPolicy: MEBxAnytime}})
	a := s.Addrs()[0]
	c := newClient(t, s, a, "admin", testPassword)
	az := amtPrefix + "AMT_AuthorizationService"
	pkm := amtPrefix + "AMT_PublicKeyManagementService"
	scs := amtPrefix + "AMT_SetupAndConfigurationService"
	ca := newTestCA(t, "rules root", 2048)
	zero := b64(make([]byte, 16))
	tests := []struct {
		name, uri, method, params, want string
	}{
		{"mebx weak password", scs, "SetMEBxPassword", `<h:Password>password</h:Password>`, "2054"},
		{"mebx underscore is no symbol", scs, "SetMEBxPassword", `<h:Password>Passw0rd_</h:Password>`, "2054"},
		{"mebx good password", scs, "SetMEBxPassword", `<h:Password>Passw0rd!</h:Password>`, "0"},
		{"admin digest not md5", az, "SetAdminAclEntryEx", `<h:Username>admin</h:Username><h:DigestPassword>cGxhaW4=</h:DigestPassword>`, "2054"},
		{"admin name too long", az, "SetAdminAclEntryEx", `<h:Username>abcdefghijklmnopq</h:Username><h:DigestPassword>` + zero + `</h:DigestPassword>`, "36"},
		{"user name $$", az, "AddUserAclEntryEx", `<h:DigestUsername>$$me</h:DigestUsername><h:DigestPassword>` + zero + `</h:DigestPassword><h:AccessPermission>2</h:AccessPermission><h:Realms>3</h:Realms>`, "36"},
		{"user duplicate of admin", az, "AddUserAclEntryEx", `<h:DigestUsername>admin</h:DigestUsername><h:DigestPassword>` + zero + `</h:DigestPassword><h:AccessPermission>2</h:AccessPermission><h:Realms>3</h:Realms>`, "2058"},
		{"remove system account", az, "RemoveUserAclEntry", `<h:Handle>1</h:Handle>`, "16"},
		{"remove unknown handle", az, "RemoveUserAclEntry", `<h:Handle>99</h:Handle>`, "2053"},
		{"trusted root", pkm, "AddTrustedRootCertificate", `<h:CertificateBlob>` + b64(ca.der) + `</h:CertificateBlob>`, "0"},
		{"duplicate certificate", pkm, "AddTrustedRootCertificate", `<h:CertificateBlob>` + b64(ca.der) + `</h:CertificateBlob>`, "2058"},
		{"not a certificate", pkm, "AddCertificate", `<h:CertificateBlob>AAAA</h:CertificateBlob>`, "2063"},
		{"not a key", pkm, "AddKey", `<h:KeyBlob>AAAA</h:KeyBlob>`, "2062"},
		{"key length", pkm, "GenerateKeyPair", `<h:KeyAlgorithm>0</h:KeyAlgorithm><h:KeyLength>1024</h:KeyLength>`, "36"},
		{"unprovision bad mode", scs, "Unprovision", `<h:ProvisioningMode>7</h:ProvisioningMode>`, "36"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := c.rv(tc.uri, tc.method, tc.params); got != tc.want {
				t.Errorf("ReturnValue %s, want %s", got, tc.want)
			}
		})
	}
	t.Run("big CA key on 11.x", func(t *testing.T) {
		big := newTestCA(t, "big root", 3072)
		if got := c.rv(pkm, "AddTrustedRootCertificate", `<h:CertificateBlob>`+b64(big.der)+`</h:CertificateBlob>`); got != "36" {
			t.Errorf("ReturnValue %s, want 36", got)
		}
	})
	t.Run("user entry limit", func(t *testing.T) {
		var last string
		for i := 0; i <= maxUserEntries; i++ {
			last = c.rv(az, "AddUserAclEntryEx", fmt.Sprintf(`<h:DigestUsername>u%d</h:DigestUsername><h:DigestPassword>%s</h:DigestPassword><h:AccessPermission>2</h:AccessPermission><h:Realms>3</h:Realms>`, i, zero))
		}
		if last != "23" {
			t.Errorf("entry %d: ReturnValue %s, want 23", maxUserEntries+1, last)
		}
	})
	krb := amtPrefix + "AMT_KerberosSettingData"
	krbProps := func(tol, enabled string) string {
		return `<h:InstanceID>` + krbID + `</h:InstanceID><h:RealmName>AMT.TEST</h:RealmName><h:KeyVersion>1</h:KeyVersion><h:MasterKey>` + zero +
			`</h:MasterKey><h:MaximumClockTolerance>` + tol + `</h:MaximumClockTolerance><h:KrbEnabled>` + enabled + `</h:KrbEnabled>`
	}
	for _, tc := range []struct{ name, props string }{
		{"kerberos clock tolerance 6", krbProps("6", "false")},
		{"kerberos without TLS", krbProps("5", "true")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, b := c.do(actionPut, krb, nil, `<h:AMT_KerberosSettingData xmlns:h="`+krb+`">`+tc.props+`</h:AMT_KerberosSettingData>`)
			if st != 400 || !strings.Contains(string(b), "InvalidRepresentation") {
				t.Errorf("HTTP %d %s, want 400 InvalidRepresentation", st, b)
			}
		})
	}
	t.Run("new admin password works for digest", func(t *testing.T) {
		ds, _ := s.Device(a)
		h := md5.Sum([]byte("admin:" + ds.DigestRealm + ":N3w!Passw0rd"))
		if rv := c.rv(az, "SetAdminAclEntryEx", `<h:Username>admin</h:Username><h:DigestPassword>`+b64(h[:])+`</h:DigestPassword>`); rv != "0" {
			t.Fatalf("SetAdminAclEntryEx: %s", rv)
		}
		nc := newClient(t, s, a, "admin", "N3w!Passw0rd")
		nc.get(amtPrefix+"AMT_GeneralSettings", nil)
		if st, _, _ := newClient(t, s, a, "admin", testPassword).post(envelope(actionGet, amtPrefix+"AMT_GeneralSettings", "1", nil, "")); st != 401 {
			t.Errorf("old password: HTTP %d, want 401", st)
		}
		if got, _ := s.Device(a); got.AdminHA1 != hex.EncodeToString(h[:]) {
			t.Errorf("AdminHA1 %s", got.AdminHA1)
		}
	})
}

// TestCommitServesTLS: stage 1 of S7 then CommitChanges; the TLS port then
// presents the installed leaf and chain and the HTTP port is closed.
func TestCommitServesTLS(t *testing.T) {
	s := startSim(t, Config{Devices: 1, Kind: KindMEBx})
	a := s.Addrs()[0]
	c := newClient(t, s, a, "admin", testPassword)
	ca, _ := provisionTLS(t, c, "pc01.amt.test", false)
	if ds, _ := s.Device(a); ds.Listening.TLS || ds.ProvisioningState != 2 || !ds.UncommittedChanges {
		t.Fatalf("before commit: TLS listening %v, state %d", ds.Listening.TLS, ds.ProvisioningState)
	}
	if rv := c.rv(amtPrefix+"AMT_SetupAndConfigurationService", "CommitChanges", ""); rv != "0" {
		t.Fatalf("CommitChanges: %s", rv)
	}
	waitListening(t, a, s.TLSPort(), true)
	waitListening(t, a, s.HTTPPort(), false)

	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "pc01.amt.test", CipherSuites: rsaKexSuites}} // 11.8: RSA key exchange only
	t.Cleanup(tr.CloseIdleConnections)
	tc := newClient(t, s, a, "admin", testPassword)
	tc.url = fmt.Sprintf("https://%s:%d/wsman", a, s.TLSPort())
	tc.client = &http.Client{Timeout: 20 * time.Second, Transport: &digest.Transport{Username: "admin", Password: testPassword, Transport: tr}}
	b := tc.get(amtPrefix+"AMT_SetupAndConfigurationService", nil)
	if st := textOf(t, b, "ProvisioningState"); st != "2" {
		t.Errorf("ProvisioningState %s, want 2", st)
	}
	ds, _ := s.Device(a)
	if len(ds.TLS.ServedChain) != 2 || !ds.TLS.ServingTLS || ds.TLS.ServingHTTP {
		t.Errorf("TLS state %+v", ds.TLS)
	}
	if ds.UncommittedChanges {
		t.Error("changes still uncommitted after commit")
	}
}

func TestUnprovision(t *testing.T) {
	base := fixedBase(t)
	s := startSim(t, Config{Devices: 2, Kind: KindMEBx, BaseIP: base})
	scs := amtPrefix + "AMT_SetupAndConfigurationService"
	zero := b64(make([]byte, 16))
	setup := func(a netip.Addr) (*wsman, DeviceState) {
		t.Helper()
		c := newClient(t, s, a, "admin", testPassword)
		factory, _ := s.Device(a)
		gs := amtPrefix + "AMT_GeneralSettings"
		c.put(gs, nil, "AMT_GeneralSettings", `<h:DigestRealm>`+factory.DigestRealm+`</h:DigestRealm><h:DomainName>amt.test</h:DomainName><h:HostName>pc01</h:HostName><h:PingResponseEnabled>false</h:PingResponseEnabled><h:RmcpPingResponseEnabled>false</h:RmcpPingResponseEnabled>`)
		c.rv(amtPrefix+"AMT_AuthorizationService", "AddUserAclEntryEx", `<h:DigestUsername>op</h:DigestUsername><h:DigestPassword>`+zero+`</h:DigestPassword><h:AccessPermission>2</h:AccessPermission><h:Realms>3</h:Realms>`)
		c.rv(amtPrefix+"AMT_RedirectionService", "RequestStateChange", `<h:RequestedState>32771</h:RequestedState>`)
		provisionTLS(t, c, "pc01.amt.test", true)
		if rv := c.rv(scs, "CommitChanges", ""); rv != "0" {
			t.Fatalf("commit: %s", rv)
		}
		waitListening(t, a, s.TLSPort(), true)
		waitListening(t, a, s.HTTPPort(), true)
		return newClient(t, s, a, "admin", testPassword), factory
	}
	t.Run("partial keeps identity", func(t *testing.T) {
		a := base
		c, factory := setup(a)
		if rv := c.rv(scs, "PartialUnprovision", ""); rv != "0" {
			t.Fatalf("PartialUnprovision: %s", rv)
		}
		waitListening(t, a, s.TLSPort(), false)
		ds, _ := s.Device(a)
		if ds.HostName != "pc01" || ds.DomainName != "amt.test" || ds.AdminHA1 != factory.AdminHA1 {
			t.Errorf("identity lost: %q %q", ds.HostName, ds.DomainName)
		}
		if len(ds.Users) != 1 || len(ds.Certificates) != 0 || ds.IDER || ds.TLS.Enabled || ds.ProvisioningState != 1 || !ds.Ping {
			t.Errorf("configuration kept: users %d certs %d ider %v tls %v state %d", len(ds.Users), len(ds.Certificates), ds.IDER, ds.TLS.Enabled, ds.ProvisioningState)
		}
	})
	t.Run("full returns to factory", func(t *testing.T) {
		a, _ := addrAdd(base, 1)
		c, factory := setup(a)
		if rv := c.rv(scs, "Unprovision", `<h:ProvisioningMode>1</h:ProvisioningMode>`); rv != "0" {
			t.Fatalf("Unprovision: %s", rv)
		}
		waitListening(t, a, s.TLSPort(), false)
		ds, _ := s.Device(a)
		// Dark again, as a factory device: the next login is the MEBx
		// password, in a remote-configuration session after a Hello.
		if ds.HostName != "" || ds.ProvisioningState != 0 || ds.AdminHA1 != factory.MEBxHA1 || len(ds.Users) != 1 || len(ds.Certificates) != 0 {
			t.Errorf("not factory: %+v", ds)
		}
		time.Sleep(50 * time.Millisecond) // past the restart
		waitListening(t, a, s.HTTPPort(), false)
		waitListening(t, a, s.TLSPort(), false)
	})
}

func TestOverridesAndLinks(t *testing.T) {
	base := fixedBase(t)
	ext, _ := addrAdd(base, 1)
	none, _ := addrAdd(base, 2)
	wired8021x, _ := addrAdd(base, 3)
	s := startSim(t, Config{Devices: 4, Kind: KindMEBx, BaseIP: base, Overrides: map[netip.Addr]Override{
		ext: {Kind: KindExternal}, none: {Kind: KindNotAMT}, wired8021x: {Link: LinkWired8021X}}})
	if st, _, _ := newClient(t, s, ext, "admin", testPassword).post(envelope(actionGet, amtPrefix+"AMT_GeneralSettings", "1", nil, "")); st != 401 {
		t.Errorf("external device: HTTP %d, want 401", st)
	}
	if ds, _ := s.Device(ext); ds.ProvisioningState != 2 {
		t.Errorf("external state %d", ds.ProvisioningState)
	}
	if _, err := net.DialTimeout("tcp", netip.AddrPortFrom(none, uint16(s.HTTPPort())).String(), time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("non-AMT address: %v, want connection refused", err)
	}
	c := newClient(t, s, wired8021x, "admin", testPassword)
	dot1x := ipsPrefix + "IPS_IEEE8021xSettings"
	c.put(dot1x, nil, "IPS_IEEE8021xSettings", `<h:ElementName>x</h:ElementName><h:Enabled>3</h:Enabled><h:InstanceID>`+dot1xID+`</h:InstanceID>`)
	waitListening(t, wired8021x, s.HTTPPort(), false)
	if ds, _ := s.Device(wired8021x); !ds.LinkDown {
		t.Error("disabling 802.1X over an 802.1X link did not drop the link")
	}
}

func TestFaultSpec(t *testing.T) {
	tests := []struct {
		spec, errField string
	}{
		{"", ""}, {"drop=0.02,http500=0.02,slow=0.01:3s,reboot=0.005", ""},
		{"drop=2", "drop"}, {"slow=0.1:fast", "slow"}, {"reboots=0.1", "reboots"}, {"drop", "drop"},
		{"drop=0.6,http500=0.6", "more than 1"}, {"drop=0.1,drop=0.1", "drop"},
	}
	for _, tc := range tests {
		t.Run(tc.spec, func(t *testing.T) {
			_, err := ParseFaultSpec(tc.spec)
			if (err != nil) != (tc.errField != "") || (err != nil && !strings.Contains(err.Error(), tc.errField)) {
				t.Errorf("ParseFaultSpec(%q) = %v, want error naming %q", tc.spec, err, tc.errField)
			}
		})
	}
	f, _ := ParseFaultSpec("slow=0.5:7s")
	if f.SlowFor != 7*time.Second || f.Slow != 0.5 {
		t.Errorf("parsed %+v", f)
	}
}

func TestConfigValidation(t *testing.T) {
	base := netip.MustParseAddr("127.30.0.1")
	tests := []struct {
		name  string
		cfg   Config
		field string
	}{
		{"ok", Config{Devices: 1, BaseIP: base, Password: testPassword}, ""},
		{"no devices", Config{BaseIP: base, Password: testPassword}, "Devices"},
		{"not loopback", Config{Devices: 1, BaseIP: netip.MustParseAddr("10.0.0.1"), Password: testPassword}, "127.0.0.0/8"},
		{"leaves loopback", Config{Devices: 300, BaseIP: netip.MustParseAddr("127.255.255.1"), Password: testPassword}, "127.0.0.0/8"},
		{"weak password", Config{Devices: 1, BaseIP: base, Password: "password"}, "Password"},
		{"same ports", Config{Devices: 1, BaseIP: base, Password: testPassword, HTTPPort: 5, TLSPort: 5}, "HTTPPort"},
		{"bad version", Config{Devices: 1, BaseIP: base, Password: testPassword, Version: "11"}, "Version"},
		{"override outside", Config{Devices: 1, BaseIP: base, Password: testPassword, Overrides: map[netip.Addr]Override{netip.MustParseAddr("127.0.0.1"): {}}}, "Overrides"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if (err != nil) != (tc.field != "") || (err != nil && !strings.Contains(err.Error(), tc.field)) {
				t.Errorf("New = %v, want error naming %q", err, tc.field)
			}
		})
	}
}

// TestFaultInjectionDeterministic checks every request's outcome against
// the pure draw for (seed, device, request number), on two devices.
func TestFaultInjectionDeterministic(t *testing.T) {
	spec, err := ParseFaultSpec("drop=0.15,http500=0.15,slow=0.1:5ms")
	if err != nil {
		t.Fatal(err)
	}
	const seed = 42
	s := startSim(t, Config{Devices: 2, Kind: KindMEBx, Faults: spec, Seed: seed, CommitDelay: 20 * time.Millisecond})
	for idx, a := range s.Addrs() {
		c := newClient(t, s, a, "admin", testPassword)
		// A fresh connection per request: after an injected drop the
		// server closes the connection, and net/http does not retry a POST
		// on a reused one that turns out closed, which would look like a
		// fault the seed never drew.
		c.client.Transport.(*digest.Transport).Transport.(*http.Transport).DisableKeepAlives = true
		var seen [5]int
		for n := uint64(0); n < 60; n++ {
			want := spec.pick(seed, idx, n)
			var st int
			var err error
			for try := 0; try < 500; try++ { // wait out reboots: refused connections draw nothing
				st, _, err = c.post(envelope(actionGet, amtPrefix+"AMT_GeneralSettings", fmt.Sprint(n), nil, ""))
				if err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			seen[want]++
			switch want {
			case faultNone, faultSlow:
				if err != nil || st != 200 {
					t.Fatalf("device %d request %d (%s): %v %d", idx, n, want, err, st)
				}
			case faultHTTP500:
				if err != nil || st != 500 {
					t.Fatalf("device %d request %d (%s): %v %d", idx, n, want, err, st)
				}
			case faultDrop, faultReboot:
				if err == nil {
					t.Fatalf("device %d request %d (%s): answered %d", idx, n, want, st)
				}
			}
		}
		if seen[faultNone] == 0 || seen[faultDrop]+seen[faultHTTP500]+seen[faultReboot] == 0 {
			t.Errorf("device %d: draws %v are not a mix", idx, seen)
		}
		if ds, _ := s.Device(a); ds.Reboots != seen[faultReboot] || ds.Requests != 60 {
			t.Errorf("device %d: reboots %d (want %d), requests %d", idx, ds.Reboots, seen[faultReboot], ds.Requests)
		}
	}
}

func TestRebootLosesUncommittedChanges(t *testing.T) {
	spec := FaultSpec{Reboot: 0.5}
	seed := int64(0)
	for spec.pick(seed, 0, 0) != faultNone || spec.pick(seed, 0, 1) != faultReboot {
		seed++
	}
	s := startSim(t, Config{Devices: 1, Kind: KindMEBx, CommitDelay: 10 * time.Millisecond, Faults: spec, Seed: seed})
	a := s.Addrs()[0]
	c := newClient(t, s, a, "admin", testPassword)
	c.rv(amtPrefix+"AMT_RedirectionService", "RequestStateChange", `<h:RequestedState>32771</h:RequestedState>`)
	if ds, _ := s.Device(a); !ds.IDER || !ds.UncommittedChanges {
		t.Fatalf("change not applied: %+v", ds)
	}
	if _, _, err := c.post(envelope(actionGet, amtPrefix+"AMT_GeneralSettings", "9", nil, "")); err == nil {
		t.Fatal("reboot answered")
	}
	if ds, _ := s.Device(a); ds.IDER || ds.UncommittedChanges || ds.Reboots != 1 {
		t.Errorf("after reboot: ider %v uncommitted %v reboots %d", ds.IDER, ds.UncommittedChanges, ds.Reboots)
	}
}

func TestConcurrentUse(t *testing.T) {
	s := startSim(t, Config{Devices: 4, Kind: KindMEBx})
	var wg sync.WaitGroup
	var fails atomic.Int32
	for _, a := range s.Addrs() {
		for w := 0; w < 3; w++ {
			wg.Go(func() {
				c := newClient(t, s, a, "admin", testPassword)
				for i := 0; i < 15; i++ {
					st, _, err := c.post(envelope(amtPrefix+"AMT_RedirectionService/RequestStateChange", amtPrefix+"AMT_RedirectionService", fmt.Sprint(i), nil,
						`<h:RequestStateChange_INPUT xmlns:h="`+amtPrefix+`AMT_RedirectionService"><h:RequestedState>`+fmt.Sprint(32768+i%4)+`</h:RequestedState></h:RequestStateChange_INPUT>`))
					if err != nil || st != 200 {
						fails.Add(1)
					}
					_ = s.Devices()
				}
			})
		}
	}
	wg.Wait()
	if fails.Load() != 0 {
		t.Errorf("%d requests failed", fails.Load())
	}
}

func TestStateHandlerHasNoPasswords(t *testing.T) {
	s := startSim(t, Config{Devices: 2, Kind: KindMEBx})
	srv := httptest.NewServer(s.StateHandler())
	t.Cleanup(srv.Close)
	res, err := http.Get(srv.URL + "/devices")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var all []DeviceState
	if err := json.Unmarshal(b, &all); err != nil || len(all) != 2 {
		t.Fatalf("decode: %v (%d devices)", err, len(all))
	}
	if strings.Contains(string(b), testPassword) {
		t.Error("state JSON contains the password")
	}
	res2, err := http.Get(srv.URL + "/devices/" + s.Addrs()[1].String())
	if err != nil || res2.StatusCode != 200 {
		t.Fatalf("one device: %v", err)
	}
	res2.Body.Close()
}

// TestAddWiFiSettingsNamespaces: AddWiFiSettings takes its embedded
// instances as Intel's client sends them, the parameter element in the
// method's namespace and the properties in the embedded class's; other
// shapes are invalid parameters (36), as the firmware treats them.
func TestAddWiFiSettingsNamespaces(t *testing.T) {
	s := startSim(t, Config{Devices: 1, Kind: KindMEBx})
	c := newClient(t, s, s.Addrs()[0], "admin", testPassword)
	wps := amtPrefix + "AMT_WiFiPortConfigurationService"
	wes := cimPrefix + "CIM_WiFiEndpointSettings"
	ieee := cimPrefix + "CIM_IEEE8021xSettings"
	pkm := amtPrefix + "AMT_PublicKeyManagementService"
	root := newTestCA(t, "radius root", 2048)
	if rv := c.rv(pkm, "AddTrustedRootCertificate", `<h:CertificateBlob>`+b64(root.der)+`</h:CertificateBlob>`); rv != "0" {
		t.Fatalf("AddTrustedRootCertificate: %s", rv)
	}
	rootRef := eprXML("ClientCredential", amtPrefix+"AMT_PublicKeyCertificate", "InstanceID", certInstanceID(0))
	props := func(p, name string, prio, auth int) string {
		s := fmt.Sprintf(`<%[1]s:ElementName>%[2]s</%[1]s:ElementName><%[1]s:InstanceID>Intel(r) AMT:WiFi Endpoint Settings %[2]s</%[1]s:InstanceID>`+
			`<%[1]s:AuthenticationMethod>%[3]d</%[1]s:AuthenticationMethod><%[1]s:EncryptionMethod>4</%[1]s:EncryptionMethod>`+
			`<%[1]s:SSID>%[2]s-net</%[1]s:SSID><%[1]s:Priority>%[4]d</%[1]s:Priority>`, p, name, auth, prio)
		if auth == 6 {
			s += `<` + p + `:PSKPassPhrase>Secret123!</` + p + `:PSKPassPhrase>`
		}
		return s
	}
	endpoint := eprXML("WiFiEndpoint", cimPrefix+"CIM_WiFiEndpoint", "Name", "WiFi Endpoint 0")
	eap := func(outer, inner string) string {
		return `<` + outer + `:IEEE8021xSettingsInput xmlns:q="` + ieee + `"><` + inner + `:ElementName>x</` + inner + `:ElementName><` +
			inner + `:AuthenticationProtocol>0</` + inner + `:AuthenticationProtocol></` + outer + `:IEEE8021xSettingsInput>` + rootRef
	}
	tests := []struct {
		name, params, want string
	}{
		{"psk as Intel sends it", endpoint + `<h:WiFiEndpointSettingsInput xmlns:q="` + wes + `">` + props("q", "a", 1, 6) + `</h:WiFiEndpointSettingsInput>`, "0"},
		{"parameter in the class namespace", endpoint + `<q:WiFiEndpointSettingsInput xmlns:q="` + wes + `">` + props("q", "b", 2, 6) + `</q:WiFiEndpointSettingsInput>`, "36"},
		{"properties in the method namespace", endpoint + `<h:WiFiEndpointSettingsInput>` + props("h", "c", 3, 6) + `</h:WiFiEndpointSettingsInput>`, "36"},
		{"802.1X as Intel sends it", endpoint + `<h:WiFiEndpointSettingsInput xmlns:q="` + wes + `">` + props("q", "d", 4, 7) + `</h:WiFiEndpointSettingsInput>` + eap("h", "q"), "0"},
		{"802.1X settings in the method namespace", endpoint + `<h:WiFiEndpointSettingsInput xmlns:q="` + wes + `">` + props("q", "e", 5, 7) + `</h:WiFiEndpointSettingsInput>` + eap("h", "h"), "36"},
		{"802.1X parameter in the class namespace", endpoint + `<h:WiFiEndpointSettingsInput xmlns:q="` + wes + `">` + props("q", "f", 6, 7) + `</h:WiFiEndpointSettingsInput>` + eap("q", "q"), "36"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := c.rv(wps, "AddWiFiSettings", tc.params); got != tc.want {
				t.Errorf("ReturnValue %s, want %s", got, tc.want)
			}
		})
	}
	if ds, _ := s.Device(s.Addrs()[0]); len(ds.WiFi) != 2 {
		t.Errorf("%d Wi-Fi profiles, want the 2 accepted", len(ds.WiFi))
	}
}
