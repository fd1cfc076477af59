package amt

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/amtops/amtops/internal/wsman"
)

func fixturesDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join("..", "wsman", "testdata", "responses")
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		t.Fatalf("fixtures folder %s missing (a copy of shared/fixtures/wsman-responses): %v", dir, err)
	}
	return dir
}

func fixtureEnvelope(t *testing.T, rel string) *wsman.Envelope {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixturesDir(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	env, err := wsman.Decode(b)
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	return env
}

// instances returns the payload of a Get/Put reply or the items of a Pull.
func instances(env *wsman.Envelope) []*wsman.Node {
	if pr := env.Body.Child("PullResponse"); pr != nil {
		return pr.Child("Items").Elements()
	}
	return []*wsman.Node{env.Payload()}
}

// TestFixtureDecoding walks every fixture of every class this package
// reads and checks the typed decoding against values in the files.
func TestFixtureDecoding(t *testing.T) {
	tests := []struct {
		fixture string
		decode  func(env *wsman.Envelope) (any, error)
		want    any
	}{
		{"amt/general/get.xml", func(env *wsman.Envelope) (any, error) {
			gs, err := parseGeneralSettings(env.Payload())
			if err == nil {
				gs.raw = wsman.Instance{}
			}
			return gs, err
		}, &GeneralSettings{InstanceID: "Intel(r) AMT: General Settings", HostName: "Test Host Name", DomainName: "Test Domain Name",
			DigestRealm: "Digest:F3EB554784E729164447A89F60B641C5", PingResponseEnabled: true, RmcpPingResponseEnabled: true,
			SharedFQDN: true, NetworkInterfaceEnabled: true}},
		{"amt/general/pull.xml", func(env *wsman.Envelope) (any, error) {
			gs, err := parseGeneralSettings(instances(env)[0])
			if err == nil {
				gs.raw = wsman.Instance{}
			}
			return gs, err
		}, &GeneralSettings{InstanceID: "Intel(r) AMT: General Settings", DigestRealm: "Digest:6EE8C61BA74893E059F032EA919D699E",
			PingResponseEnabled: true, RmcpPingResponseEnabled: true, SharedFQDN: true, NetworkInterfaceEnabled: true}},
		{"amt/setupandconfiguration/get.xml", func(env *wsman.Envelope) (any, error) { return parseSetupAndConfiguration(env.Payload()) },
			&SetupAndConfiguration{ProvisioningState: 2, ProvisioningMode: 1, PasswordModel: 1, EnabledState: 5, ZeroTouchConfigurationEnabled: true}},
		{"amt/setupandconfiguration/pull.xml", func(env *wsman.Envelope) (any, error) { return parseSetupAndConfiguration(instances(env)[0]) },
			&SetupAndConfiguration{ProvisioningState: 2, ProvisioningMode: 1, PasswordModel: 1, EnabledState: 5, ZeroTouchConfigurationEnabled: true}},
		{"amt/setupandconfiguration/getuuid.xml", func(env *wsman.Envelope) (any, error) { return parseUUID(env.Payload().Get("UUID")) },
			"55e3ae13-bfd2-61bb-17a0-88aedd7037ea"},
		{"cim/software/identity/pull.xml", func(env *wsman.Envelope) (any, error) {
			m := parseVersions(instances(env))
			return []string{m["AMT"], m["Sku"], m["Build Number"]}, nil
		}, []string{"12.0.67", "16392", "1579"}},
		{"cim/software/identity/get.xml", func(env *wsman.Envelope) (any, error) { return parseVersions(instances(env)), nil },
			map[string]string{"AMTApps": "12.0.67"}},
		{"amt/publickey/certificate/get.xml", func(env *wsman.Envelope) (any, error) {
			c, err := parseCertificate(env.Payload())
			return []any{c.InstanceID, c.Subject, c.TrustedRoot, len(c.DER)}, err
		}, []any{"Intel(r) AMT Certificate: Handle: 0", "C=unknown,O=unknown,CN=MPSRoot-0af1d5", true, 1087}},
		{"amt/publickey/certificate/pull.xml", func(env *wsman.Envelope) (any, error) {
			var out []any
			for _, it := range instances(env) {
				c, err := parseCertificate(it)
				if err != nil {
					return nil, err
				}
				out = append(out, c.InstanceID, c.TrustedRoot)
			}
			return out, nil
		}, []any{"Intel(r) AMT Certificate: Handle: 0", true, "Intel(r) AMT Certificate: Handle: 1", false, "Intel(r) AMT Certificate: Handle: 2", true}},
		{"amt/publicprivate/pull.xml", func(env *wsman.Envelope) (any, error) {
			var out []any
			for _, it := range instances(env) {
				k, err := parseKeyPair(it)
				if err != nil {
					return nil, err
				}
				out = append(out, k.InstanceID, len(k.PublicDER))
			}
			return out, nil
		}, []any{"Intel(r) AMT Key: Handle: 0", 270, "Intel(r) AMT Key: Handle: 1", 270}},
		{"amt/publickey/management/addtrustedrootcertificate.xml", func(env *wsman.Envelope) (any, error) {
			return createdRef("x", env.Payload(), "CreatedCertificate")
		}, "Intel(r) AMT Certificate: Handle: 2"},
		{"amt/publickey/management/addkey.xml", func(env *wsman.Envelope) (any, error) { return createdRef("x", env.Payload(), "CreatedKey") },
			"Intel(r) AMT Key: Handle: 1"},
		{"amt/publickey/management/generatekeypair.xml", func(env *wsman.Envelope) (any, error) { return createdRef("x", env.Payload(), "KeyPair") },
			"Intel(r) AMT Key: Handle: 0"},
		{"amt/tls/credentialcontext/pull.xml", func(env *wsman.Envelope) (any, error) { return parseTLSCredentialContexts(instances(env)), nil },
			[]string{"Intel(r) AMT Certificate: Handle: 3"}},
		{"amt/tls/settingdata/pull.xml", func(env *wsman.Envelope) (any, error) {
			var out []any
			for _, it := range instances(env) {
				s, err := parseTLSSettingData(it)
				if err != nil {
					return nil, err
				}
				out = append(out, s.InstanceID, s.Enabled, s.MutualAuthentication, s.AcceptNonSecureConnections)
			}
			return out, nil
		}, []any{TLSSettingsRemote, false, false, false, TLSSettingsLocal, false, false, true}},
		{"amt/redirectionservice/get.xml", func(env *wsman.Envelope) (any, error) {
			r, err := parseRedirectionService(env.Payload())
			return []any{r.EnabledState, r.ListenerEnabled}, err
		}, []any{RedirectionIDERSOL, true}},
		{"amt/systempowerscheme/pull.xml", func(env *wsman.Envelope) (any, error) { return parsePowerSchemes(instances(env)), nil },
			[]PowerScheme{{"SCHEME 0", "Mobile: ON in S0", "djmXEQtWUEOIcJgS85G1YA=="}, {"SCHEME 1", "Mobile: ON in S0, ME Wake in S3, S4-5 (AC only)", "MIAN7gnAeEOvKHhootu+Og=="}}},
		{"amt/kerberos/get.xml", func(env *wsman.Envelope) (any, error) {
			k, err := parseKerberosSettings(env.Payload())
			return []any{k.InstanceID, k.KrbEnabled, k.SupportedEncryptionAlgorithms}, err
		}, []any{KerberosSettingsInstanceID, false, []int{0, 1, 2}}},
		{"amt/kerberos/pull.xml", func(env *wsman.Envelope) (any, error) {
			k, err := parseKerberosSettings(instances(env)[0])
			return []any{k.InstanceID, k.SupportedEncryptionAlgorithms}, err
		}, []any{KerberosSettingsInstanceID, []int{0, 1, 2}}},
		{"amt/authorization/enumerateuseraclentries.xml", func(env *wsman.Envelope) (any, error) {
			total, h, err := parseACLPage(env.Payload())
			return []any{total, h}, err
		}, []any{2, []int{1, 2}}},
		{"amt/authorization/getuseraclentryex.xml", func(env *wsman.Envelope) (any, error) {
			e, err := parseUserACLEntry(env.Payload())
			return []any{e.DigestUsername, e.System(), e.AccessPermission, e.Realms}, err
		}, []any{"$$uns", true, 0, []int{16}}},
		{"amt/timesynchronization/getlowaccuracytimesynch.xml", func(env *wsman.Envelope) (any, error) {
			f := read(env.Payload(), "x")
			return f.int64("Ta0"), f.err
		}, int64(1704586865)},
		{"ips/ieee8021x/settings/get.xml", func(env *wsman.Envelope) (any, error) {
			s, err := parseIEEE8021xSettings(env.Payload())
			return []any{s.InstanceID, s.Enabled, s.AvailableInS0, s.PxeTimeout}, err
		}, []any{"Intel(r) AMT: 8021X Settings", IEEE8021xDisabled, false, 120}},
		{"ips/ieee8021x/settings/pull.xml", func(env *wsman.Envelope) (any, error) {
			s, err := parseIEEE8021xSettings(instances(env)[0])
			return []any{s.InstanceID, s.Enabled}, err
		}, []any{"Intel(r) AMT: 8021X Settings", IEEE8021xDisabled}},
	}
	for _, tc := range tests {
		t.Run(tc.fixture, func(t *testing.T) {
			got, err := tc.decode(fixtureEnvelope(t, tc.fixture))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %#v\nwant %#v", got, tc.want)
			}
		})
	}
}

func TestParseUUIDRejects(t *testing.T) {
	env := fixtureEnvelope(t, "amt/setupandconfiguration/getuuid-bad.xml")
	for _, in := range []string{env.Payload().Get("UUID"), "", "AAAA", "E67jVdK/u2EXoIiu3XA36g"} {
		if _, err := parseUUID(in); err == nil {
			t.Errorf("parseUUID(%q) accepted", in)
		}
	}
}

func TestMalformedFieldNamed(t *testing.T) {
	n, err := wsman.DecodeTree([]byte(`<x:AMT_SetupAndConfigurationService xmlns:x="u"><x:ProvisioningState>two</x:ProvisioningState></x:AMT_SetupAndConfigurationService>`))
	if err != nil {
		t.Fatal(err)
	}
	_, err = parseSetupAndConfiguration(n)
	if err == nil || err.Error() != `amt: AMT_SetupAndConfigurationService.ProvisioningState: "two" is not an integer` {
		t.Errorf("err = %v", err)
	}
}
