package amtsim

import (
	"crypto/tls"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const fixtureDir = "../wsman/testdata/responses"

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtureDir, name))
	if err != nil {
		t.Fatalf("fixtures not available: %v", err)
	}
	return b
}

// compareShape checks that the simulator's reply has the fixture's element
// paths (namespace URI + local name, distinct, in document order).
func compareShape(t *testing.T, fixture string, got []byte, bodyOnly bool) {
	t.Helper()
	want := readFixture(t, fixture)
	sub := ""
	if bodyOnly {
		sub = "{" + nsEnvelope + "}Body"
	}
	wp, gp := elementPaths(t, want, sub), elementPaths(t, got, sub)
	if !slices.Equal(wp, gp) {
		t.Errorf("shape of %s differs\nfixture:   %s\nsimulator: %s\nreply: %s", fixture,
			strings.Join(wp, "\n           "), strings.Join(gp, "\n           "), got)
	}
}

type shapeStep struct {
	name     string
	fixture  string // "" when there is no fixture for this call: run only
	bodyOnly bool
	do       func(t *testing.T) []byte
}

func runShapes(t *testing.T, steps []shapeStep) {
	t.Helper()
	for _, st := range steps {
		got := st.do(t)
		if st.fixture == "" {
			continue
		}
		t.Run(st.name, func(t *testing.T) { compareShape(t, st.fixture, got, st.bodyOnly) })
	}
}

// TestFixtureShapes drives one device through the calls the product uses,
// in a realistic order, and compares every reply with its real-firmware fixture.
func TestFixtureShapes(t *testing.T) {
	readFixture(t, "amt/general/get.xml")
	base := fixedBase(t)
	newer, _ := addrAdd(base, 1)
	commit, _ := addrAdd(base, 2)
	partial, _ := addrAdd(base, 3)
	full, _ := addrAdd(base, 4)
	s := startSim(t, Config{Devices: 5, Kind: KindMEBx, BaseIP: base, Overrides: map[netip.Addr]Override{newer: {Version: "16.1.25"}}})
	c := newClient(t, s, base, "admin", testPassword)
	n := tlsClient(t, s, newer, "admin", testPassword, &tls.Config{InsecureSkipVerify: true}) // 16.1: TLS only, self-signed

	gs := amtPrefix + "AMT_GeneralSettings"
	scs := amtPrefix + "AMT_SetupAndConfigurationService"
	sw := cimPrefix + "CIM_SoftwareIdentity"
	pkm := amtPrefix + "AMT_PublicKeyManagementService"
	pkc := amtPrefix + "AMT_PublicKeyCertificate"
	ppk := amtPrefix + "AMT_PublicPrivateKeyPair"
	tcc := amtPrefix + "AMT_TLSCredentialContext"
	tsd := amtPrefix + "AMT_TLSSettingData"
	ts := amtPrefix + "AMT_TimeSynchronizationService"
	rs := amtPrefix + "AMT_RedirectionService"
	kvm := cimPrefix + "CIM_KVMRedirectionSAP"
	sps := amtPrefix + "AMT_SystemPowerScheme"
	az := amtPrefix + "AMT_AuthorizationService"
	krb := amtPrefix + "AMT_KerberosSettingData"
	dot1x := ipsPrefix + "IPS_IEEE8021xSettings"
	wps := amtPrefix + "AMT_WiFiPortConfigurationService"
	wes := cimPrefix + "CIM_WiFiEndpointSettings"
	eth := amtPrefix + "AMT_EthernetPortSettings"

	ca := newTestCA(t, "root", 2048)
	var keyID, leafID, ta0 string
	steps := []shapeStep{
		{"general/get-16", "amt/general/get.xml", false, func(t *testing.T) []byte { return n.get(gs, nil) }},
		{"general/pull-11", "amt/general/pull.xml", false, func(t *testing.T) []byte { return c.pull(gs) }},
		{"hostbasedsetup/get", "ips/hostbasedsetup/get.xml", false, func(t *testing.T) []byte { return c.get(ipsPrefix+"IPS_HostBasedSetupService", nil) }},
		{"hostbasedsetup/pull", "ips/hostbasedsetup/pull.xml", false, func(t *testing.T) []byte { return c.pull(ipsPrefix + "IPS_HostBasedSetupService") }},
		{"optin/get", "ips/optin/get.xml", false, func(t *testing.T) []byte { return c.get(ipsPrefix+"IPS_OptInService", nil) }},
		{"optin/pull", "ips/optin/pull.xml", false, func(t *testing.T) []byte { return c.pull(ipsPrefix + "IPS_OptInService") }},
		{"wifi/port/get", "cim/wifi/port/get.xml", false, func(t *testing.T) []byte { return c.get(cimPrefix+"CIM_WiFiPort", nil) }},
		{"wifi/port/pull", "cim/wifi/port/pull.xml", false, func(t *testing.T) []byte { return c.pull(cimPrefix + "CIM_WiFiPort") }},
		{"wifi/port/requeststatechange", "cim/wifi/port/requeststatechange.xml", false, func(t *testing.T) []byte {
			return c.invoke(cimPrefix+"CIM_WiFiPort", "RequestStateChange", nil, `<h:RequestedState>32769</h:RequestedState>`)
		}},
		{"general/enumerate", "amt/general/enumerate.xml", false, func(t *testing.T) []byte { return c.enumerate(gs) }},
		{"setup/get", "amt/setupandconfiguration/get.xml", false, func(t *testing.T) []byte { return c.get(scs, nil) }},
		{"setup/pull", "amt/setupandconfiguration/pull.xml", false, func(t *testing.T) []byte { return c.pull(scs) }},
		{"setup/enumerate", "amt/setupandconfiguration/enumerate.xml", false, func(t *testing.T) []byte { return c.enumerate(scs) }},
		{"setup/getuuid", "amt/setupandconfiguration/getuuid.xml", true, func(t *testing.T) []byte { return c.invoke(scs, "GetUuid", nil, "") }},
		{"software/pull", "cim/software/identity/pull.xml", false, func(t *testing.T) []byte { return c.pull(sw) }},
		{"software/get", "cim/software/identity/get.xml", false, func(t *testing.T) []byte { return c.get(sw, map[string]string{"InstanceID": "AMTApps"}) }},
		{"software/enumerate", "cim/software/identity/enumerate.xml", false, func(t *testing.T) []byte { return c.enumerate(sw) }},
		{"pkm/get", "amt/publickey/management/get.xml", false, func(t *testing.T) []byte { return c.get(pkm, nil) }},
		{"pkm/pull", "amt/publickey/management/pull.xml", false, func(t *testing.T) []byte { return c.pull(pkm) }},
		{"pkm/enumerate", "amt/publickey/management/enumerate.xml", false, func(t *testing.T) []byte { return c.enumerate(pkm) }},
		{"pkm/addtrustedroot", "amt/publickey/management/addtrustedrootcertificate.xml", false, func(t *testing.T) []byte {
			return c.invoke(pkm, "AddTrustedRootCertificate", nil, `<h:CertificateBlob>`+b64(ca.der)+`</h:CertificateBlob>`)
		}},
		{"pkm/generatekeypair", "amt/publickey/management/generatekeypair.xml", false, func(t *testing.T) []byte {
			b := c.invoke(pkm, "GenerateKeyPair", nil, `<h:KeyAlgorithm>0</h:KeyAlgorithm><h:KeyLength>2048</h:KeyLength>`)
			keyID = textOf(t, b, "Selector")
			return b
		}},
		{"keypair/pull", "amt/publicprivate/pull.xml", false, func(t *testing.T) []byte { return c.pull(ppk) }},
		{"keypair/get", "amt/publicprivate/get.xml", false, func(t *testing.T) []byte { return c.get(ppk, map[string]string{"InstanceID": keyID}) }},
		{"keypair/enumerate", "amt/publicprivate/enumerate.xml", false, func(t *testing.T) []byte { return c.enumerate(ppk) }},
		{"pkm/generatepkcs10", "amt/publickey/management/generatepkcs10requestex.xml", false, func(t *testing.T) []byte {
			csr := nullSignedCSR(t, textOf(t, c.get(ppk, map[string]string{"InstanceID": keyID}), "DERKey"), "pc01.amt.test")
			return c.invoke(pkm, "GeneratePKCS10RequestEx", nil, eprXML("KeyPair", ppk, "InstanceID", keyID)+
				`<h:SigningAlgorithm>1</h:SigningAlgorithm><h:NullSignedCertificateRequest>`+csr+`</h:NullSignedCertificateRequest>`)
		}},
		{"pkm/addcertificate", "amt/publickey/management/addcertificate.xml", false, func(t *testing.T) []byte {
			csr := nullSignedCSR(t, textOf(t, c.get(ppk, map[string]string{"InstanceID": keyID}), "DERKey"), "pc01.amt.test")
			out := c.invoke(pkm, "GeneratePKCS10RequestEx", nil, eprXML("KeyPair", ppk, "InstanceID", keyID)+
				`<h:SigningAlgorithm>1</h:SigningAlgorithm><h:NullSignedCertificateRequest>`+csr+`</h:NullSignedCertificateRequest>`)
			signed := mustB64(t, textOf(t, out, "SignedCertificateRequest"))
			b := c.invoke(pkm, "AddCertificate", nil, `<h:CertificateBlob>`+b64(ca.issue(t, signed, "pc01.amt.test"))+`</h:CertificateBlob>`)
			leafID = textOf(t, b, "Selector")
			return b
		}},
		{"pkm/addkey", "amt/publickey/management/addkey.xml", false, func(t *testing.T) []byte {
			return c.invoke(pkm, "AddKey", nil, `<h:KeyBlob>`+b64(x509PKCS1(t))+`</h:KeyBlob>`)
		}},
		{"cert/pull", "amt/publickey/certificate/pull.xml", false, func(t *testing.T) []byte { return c.pull(pkc) }},
		{"cert/get", "amt/publickey/certificate/get.xml", false, func(t *testing.T) []byte { return c.get(pkc, map[string]string{"InstanceID": leafID}) }},
		{"cert/enumerate", "amt/publickey/certificate/enumerate.xml", false, func(t *testing.T) []byte { return c.enumerate(pkc) }},
		{"tlsctx/create", "amt/tls/credentialcontext/create.xml", false, func(t *testing.T) []byte {
			return c.ok(actionCreate, tcc, nil, credentialContextXML(leafID))
		}},
		{"tlsctx/pull", "amt/tls/credentialcontext/pull.xml", false, func(t *testing.T) []byte { return c.pull(tcc) }},
		{"tlsctx/put", "amt/tls/credentialcontext/put.xml", false, func(t *testing.T) []byte {
			return c.ok(actionPut, tcc, nil, credentialContextXML(leafID))
		}},
		{"tlsctx/enumerate", "amt/tls/credentialcontext/enumerate.xml", false, func(t *testing.T) []byte { return c.enumerate(tcc) }},
		{"tls/get", "amt/tls/settingdata/get.xml", false, func(t *testing.T) []byte { return c.get(tsd, map[string]string{"InstanceID": tls8023ID}) }},
		{"tls/pull", "amt/tls/settingdata/pull.xml", false, func(t *testing.T) []byte { return c.pull(tsd) }},
		{"tls/enumerate", "amt/tls/settingdata/enumerate.xml", false, func(t *testing.T) []byte { return c.enumerate(tsd) }},
		{"tls/put", "amt/tls/settingdata/put.xml", false, func(t *testing.T) []byte {
			return c.put(tsd, map[string]string{"InstanceID": tls8023ID}, "AMT_TLSSettingData",
				`<h:AcceptNonSecureConnections>true</h:AcceptNonSecureConnections><h:ElementName>x</h:ElementName><h:Enabled>true</h:Enabled><h:InstanceID>`+tls8023ID+`</h:InstanceID><h:MutualAuthentication>false</h:MutualAuthentication>`)
		}},
		{"time/get", "amt/timesynchronization/get.xml", false, func(t *testing.T) []byte { return c.get(ts, nil) }},
		{"time/pull", "amt/timesynchronization/pull.xml", false, func(t *testing.T) []byte { return c.pull(ts) }},
		{"time/enumerate", "amt/timesynchronization/enumerate.xml", false, func(t *testing.T) []byte { return c.enumerate(ts) }},
		{"time/getlow", "amt/timesynchronization/getlowaccuracytimesynch.xml", false, func(t *testing.T) []byte {
			b := c.invoke(ts, "GetLowAccuracyTimeSynch", nil, "")
			ta0 = textOf(t, b, "Ta0")
			return b
		}},
		{"time/sethigh", "amt/timesynchronization/sethighaccuracytimesynch.xml", false, func(t *testing.T) []byte {
			b := c.invoke(ts, "SetHighAccuracyTimeSynch", nil, `<h:Ta0>`+ta0+`</h:Ta0><h:Tm1>`+ta0+`</h:Tm1><h:Tm2>`+ta0+`</h:Tm2>`)
			if rv := textOf(t, b, "ReturnValue"); rv != "0" {
				t.Errorf("SetHighAccuracyTimeSynch: %s", rv)
			}
			return b
		}},
		{"redir/get", "amt/redirectionservice/get.xml", false, func(t *testing.T) []byte { return c.get(rs, nil) }},
		{"redir/pull", "amt/redirectionservice/pull.xml", false, func(t *testing.T) []byte { return c.pull(rs) }},
		{"redir/enumerate", "amt/redirectionservice/enumerate.xml", false, func(t *testing.T) []byte { return c.enumerate(rs) }},
		{"redir/requeststatechange", "amt/redirectionservice/requeststatechange.xml", false, func(t *testing.T) []byte {
			return c.invoke(rs, "RequestStateChange", nil, `<h:RequestedState>32771</h:RequestedState>`)
		}},
		{"redir/put", "amt/redirectionservice/put.xml", false, func(t *testing.T) []byte {
			return c.put(rs, nil, "AMT_RedirectionService", `<h:CreationClassName>AMT_RedirectionService</h:CreationClassName><h:ElementName>Intel(r) AMT Redirection Service</h:ElementName><h:EnabledState>32771</h:EnabledState><h:ListenerEnabled>true</h:ListenerEnabled><h:Name>Intel(r) AMT Redirection Service</h:Name><h:SystemCreationClassName>CIM_ComputerSystem</h:SystemCreationClassName><h:SystemName>Intel(r) AMT</h:SystemName>`)
		}},
		{"kvm/get", "cim/kvm/get.xml", false, func(t *testing.T) []byte { return c.get(kvm, nil) }},
		{"kvm/pull", "cim/kvm/pull.xml", false, func(t *testing.T) []byte { return c.pull(kvm) }},
		{"kvm/enumerate", "cim/kvm/enumerate.xml", false, func(t *testing.T) []byte { return c.enumerate(kvm) }},
		{"power/get", "amt/systempowerscheme/get.xml", false, func(t *testing.T) []byte { return c.get(sps, map[string]string{"InstanceID": "SCHEME 0"}) }},
		{"power/pull", "amt/systempowerscheme/pull.xml", false, func(t *testing.T) []byte { return c.pull(sps) }},
		{"power/enumerate", "amt/systempowerscheme/enumerate.xml", false, func(t *testing.T) []byte { return c.enumerate(sps) }},
		{"auth/get", "amt/authorization/get.xml", false, func(t *testing.T) []byte { return c.get(az, nil) }},
		{"auth/pull", "amt/authorization/pull.xml", false, func(t *testing.T) []byte { return c.pull(az) }},
		{"auth/enumerate", "amt/authorization/enumerate.xml", false, func(t *testing.T) []byte { return c.enumerate(az) }},
		{"auth/add", "", false, func(t *testing.T) []byte {
			return c.invoke(az, "AddUserAclEntryEx", nil, `<h:DigestUsername>operator</h:DigestUsername><h:DigestPassword>`+b64(make([]byte, 16))+`</h:DigestPassword><h:AccessPermission>2</h:AccessPermission><h:Realms>3</h:Realms>`)
		}},
		{"auth/enumerateusers", "amt/authorization/enumerateuseraclentries.xml", false, func(t *testing.T) []byte {
			return c.invoke(az, "EnumerateUserAclEntries", nil, `<h:StartIndex>1</h:StartIndex>`)
		}},
		{"auth/getuser", "amt/authorization/getuseraclentryex.xml", false, func(t *testing.T) []byte {
			return c.invoke(az, "GetUserAclEntryEx", nil, `<h:Handle>1</h:Handle>`)
		}},
		{"auth/removeuser", "amt/authorization/removeuseraclentry.xml", false, func(t *testing.T) []byte {
			return c.invoke(az, "RemoveUserAclEntry", nil, `<h:Handle>2</h:Handle>`)
		}},
		{"auth/getadmin", "amt/authorization/getadminaclentry.xml", false, func(t *testing.T) []byte { return c.invoke(az, "GetAdminAclEntry", nil, "") }},
		{"krb/get", "amt/kerberos/get.xml", false, func(t *testing.T) []byte { return c.get(krb, nil) }},
		{"krb/pull", "amt/kerberos/pull.xml", false, func(t *testing.T) []byte { return c.pull(krb) }},
		{"krb/enumerate", "amt/kerberos/enumerate.xml", false, func(t *testing.T) []byte { return c.enumerate(krb) }},
		{"8021x/get", "ips/ieee8021x/settings/get.xml", false, func(t *testing.T) []byte { return c.get(dot1x, nil) }},
		{"8021x/pull", "ips/ieee8021x/settings/pull.xml", false, func(t *testing.T) []byte { return c.pull(dot1x) }},
		{"8021x/enumerate", "ips/ieee8021x/settings/enumerate.xml", false, func(t *testing.T) []byte { return c.enumerate(dot1x) }},
		{"8021x/setcertificates", "ips/ieee8021x/settings/setcertificates.xml", false, func(t *testing.T) []byte {
			return c.invoke(dot1x, "SetCertificates", nil, eprXML("ServerCertificateIssuer", pkc, "InstanceID", certInstanceID(0))+eprXML("ClientCertificate", pkc, "InstanceID", leafID))
		}},
		{"wifiport/get-16", "amt/wifiportconfiguration/get.xml", false, func(t *testing.T) []byte { return n.get(wps, nil) }},
		{"wifiport/pull-16", "amt/wifiportconfiguration/pull.xml", false, func(t *testing.T) []byte { return n.pull(wps) }},
		{"wifiport/enumerate", "amt/wifiportconfiguration/enumerate.xml", false, func(t *testing.T) []byte { return c.enumerate(wps) }},
		{"wifiport/add", "amt/wifiportconfiguration/addwifisettings.xml", false, func(t *testing.T) []byte {
			return c.invoke(wps, "AddWiFiSettings", nil, `<h:WiFiEndpoint/><h:WiFiEndpointSettingsInput xmlns:q="`+wes+`"><q:ElementName>office</q:ElementName><q:InstanceID>office</q:InstanceID><q:AuthenticationMethod>6</q:AuthenticationMethod><q:EncryptionMethod>4</q:EncryptionMethod><q:SSID>office-wlan</q:SSID><q:Priority>1</q:Priority><q:PSKPassPhrase>Secret123!</q:PSKPassPhrase></h:WiFiEndpointSettingsInput>`)
		}},
		{"ethernet/pull", "amt/ethernetport/pull.xml", false, func(t *testing.T) []byte { return c.pull(eth) }},
		// get.xml comes from other firmware (it adds SecondaryDNS): run only.
		{"ethernet/get", "", false, func(t *testing.T) []byte {
			return c.get(eth, map[string]string{"InstanceID": "Intel(r) AMT Ethernet Port Settings 0"})
		}},
		{"ethernet/enumerate", "amt/ethernetport/enumerate.xml", false, func(t *testing.T) []byte { return c.enumerate(eth) }},
		{"wifi/pull", "cim/wifi/endpointsettings/pull.xml", false, func(t *testing.T) []byte { return c.pull(wes) }},
		{"wifi/enumerate", "cim/wifi/endpointsettings/enumerate.xml", false, func(t *testing.T) []byte { return c.enumerate(wes) }},
		{"wifi/delete", "cim/wifi/endpointsettings/delete.xml", false, func(t *testing.T) []byte {
			return c.ok(actionDelete, wes, map[string]string{"InstanceID": "Intel(r) AMT:WiFi Endpoint Settings office"}, "")
		}},
		{"tlsctx-delete", "", false, func(t *testing.T) []byte {
			c.put(tsd, map[string]string{"InstanceID": tls8023ID}, "AMT_TLSSettingData",
				`<h:AcceptNonSecureConnections>true</h:AcceptNonSecureConnections><h:Enabled>false</h:Enabled><h:MutualAuthentication>false</h:MutualAuthentication>`)
			c.invoke(dot1x, "SetCertificates", nil, "")
			return c.ok(actionDelete, tcc, nil, "")
		}},
		{"cert/delete", "amt/publickey/certificate/delete.xml", false, func(t *testing.T) []byte {
			return c.ok(actionDelete, pkc, map[string]string{"InstanceID": leafID}, "")
		}},
		{"keypair/delete", "amt/publicprivate/delete.xml", false, func(t *testing.T) []byte {
			return c.ok(actionDelete, ppk, map[string]string{"InstanceID": keyID}, "")
		}},
		{"auth/setadmin", "amt/authorization/setadminaclentryex.xml", false, func(t *testing.T) []byte {
			return c.invoke(az, "SetAdminAclEntryEx", nil, `<h:Username>admin</h:Username><h:DigestPassword>`+b64(make([]byte, 16))+`</h:DigestPassword>`)
		}},
		{"setup/commit", "amt/setupandconfiguration/commitchanges.xml", false, func(t *testing.T) []byte {
			return newClient(t, s, commit, "admin", testPassword).invoke(scs, "CommitChanges", nil, "")
		}},
		{"setup/partialunprovision", "amt/setupandconfiguration/partialunprovision.xml", false, func(t *testing.T) []byte {
			return newClient(t, s, partial, "admin", testPassword).invoke(scs, "PartialUnprovision", nil, "")
		}},
		{"setup/unprovision", "amt/setupandconfiguration/unprovision.xml", false, func(t *testing.T) []byte {
			return newClient(t, s, full, "admin", testPassword).invoke(scs, "Unprovision", nil, `<h:ProvisioningMode>1</h:ProvisioningMode>`)
		}},
	}
	runShapes(t, steps)
}
