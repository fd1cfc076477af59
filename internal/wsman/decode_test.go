package wsman_test

import (
	"strings"
	"testing"

	"github.com/amtops/amtops/internal/wsman"
)

// TestDecodeAllFixtures: every captured reply decodes, names a response
// Action, and has a Body; prefixes differ between files and must not matter.
func TestDecodeAllFixtures(t *testing.T) {
	for _, rel := range allFixtures(t) {
		t.Run(rel, func(t *testing.T) {
			env, err := wsman.Decode(readFixture(t, rel))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(env.Action(), "http://") {
				t.Errorf("Action = %q", env.Action())
			}
			if strings.HasSuffix(rel, "pull.xml") && env.Body.Child("PullResponse") == nil {
				t.Errorf("pull fixture without PullResponse")
			}
			if strings.HasSuffix(rel, "enumerate.xml") && env.Body.Path("EnumerateResponse", "EnumerationContext").Value() == "" {
				t.Errorf("enumerate fixture without EnumerationContext")
			}
		})
	}
}

func TestDecodeValues(t *testing.T) {
	tests := []struct {
		name    string
		fixture string
		check   func(t *testing.T, env *wsman.Envelope)
	}{
		{"general get (prefix g)", "amt/general/get.xml", func(t *testing.T, env *wsman.Envelope) {
			p := env.Payload()
			if p.Local != "AMT_GeneralSettings" || p.Space != wsman.AMTSchema+"AMT_GeneralSettings" {
				t.Errorf("payload %s in %s", p.Local, p.Space)
			}
			if got := p.Get("DigestRealm"); got != "Digest:F3EB554784E729164447A89F60B641C5" {
				t.Errorf("DigestRealm = %q", got)
			}
			if got := p.Get("HostName"); got != "Test Host Name" {
				t.Errorf("HostName = %q", got)
			}
			if m := p.Map(); len(m) != 24 || m["PingResponseEnabled"][0] != "true" {
				t.Errorf("map = %v", m)
			}
		}},
		{"general pull (prefix h, empty values)", "amt/general/pull.xml", func(t *testing.T, env *wsman.Envelope) {
			gs := env.Body.Path("PullResponse", "Items", "AMT_GeneralSettings")
			if gs == nil || !gs.Has("HostName") || gs.Get("HostName") != "" {
				t.Errorf("HostName present-and-empty expected: %+v", gs)
			}
			if !env.Body.Child("PullResponse").Has("EndOfSequence") {
				t.Error("EndOfSequence missing")
			}
		}},
		{"kerberos arrays", "amt/kerberos/get.xml", func(t *testing.T, env *wsman.Envelope) {
			if got := strings.Join(env.Payload().Values("SupportedEncryptionAlgorithms"), ","); got != "0,1,2" {
				t.Errorf("algorithms = %s", got)
			}
		}},
		{"multiline action", "amt/setupandconfiguration/commitchanges.xml", func(t *testing.T, env *wsman.Envelope) {
			if env.Action() != wsman.AMTSchema+"AMT_SetupAndConfigurationService/CommitChanges" {
				t.Errorf("Action = %q", env.Action())
			}
		}},
		{"default namespace getuuid", "amt/setupandconfiguration/getuuid.xml", func(t *testing.T, env *wsman.Envelope) {
			if got := env.Payload().Get("UUID"); got != "E67jVdK/u2EXoIiu3XA36g==" {
				t.Errorf("UUID = %q", got)
			}
		}},
		{"epr with nested selectors", "amt/tls/credentialcontext/create.xml", func(t *testing.T, env *wsman.Envelope) {
			e := wsman.ParseEPR(env.Body.Child("ResourceCreated"))
			if e == nil || e.ResourceURI != wsman.AMTSchema+"AMT_TLSCredentialContext" || len(e.Selectors) != 2 {
				t.Fatalf("epr = %+v", e)
			}
			if got := e.Selectors[0].EPR.Selector("InstanceID"); got != "testCertificate" {
				t.Errorf("ElementInContext InstanceID = %q", got)
			}
			if got := e.Selectors[1].EPR.Selector("ElementName"); got != "TLSProtocolEndpoint Instances Collection" {
				t.Errorf("ElementProvidingContext = %q", got)
			}
		}},
		{"method output epr", "amt/publickey/management/addcertificate.xml", func(t *testing.T, env *wsman.Envelope) {
			e := wsman.ParseEPR(env.Payload().Child("CreatedCertificate"))
			if e.Selector("InstanceID") != "Intel(r) AMT Certificate: Handle: 1" {
				t.Errorf("epr = %+v", e)
			}
		}},
		{"repeated handles", "amt/authorization/enumerateuseraclentries.xml", func(t *testing.T, env *wsman.Envelope) {
			if got := strings.Join(env.Payload().Values("Handles"), ","); got != "1,2" {
				t.Errorf("handles = %s", got)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, err := wsman.Decode(readFixture(t, tc.fixture))
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, env)
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct{ name, in string }{
		{"empty", ""},
		{"not xml", "hello"},
		{"wrong root", `<html></html>`},
		{"no body", `<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Header/></s:Envelope>`},
		{"soap 1.1 envelope", `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body/></s:Envelope>`},
		{"unterminated", `<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>`},
		{"two roots", `<a/><b/>`},
		{"too deep", strings.Repeat("<a>", 100) + strings.Repeat("</a>", 100)},
		{"entity bomb", `<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := wsman.Decode([]byte(tc.in)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestInstanceSet(t *testing.T) {
	in := wsman.Instance{ResourceURI: "u", Class: "C", Fields: []wsman.Field{{Name: "A", Value: "1"}, {Name: "L", Value: "x"}, {Name: "L", Value: "y"}, {Name: "B", Value: "2"}}}
	in.SetAll("L", "z")
	in.Set("A", "<&>")
	in.Set("New", "n")
	want := `<h:C xmlns:h="u"><h:A>&lt;&amp;&gt;</h:A><h:L>z</h:L><h:B>2</h:B><h:New>n</h:New></h:C>`
	if got := string(in.Body()); got != want {
		t.Errorf("body\n got %s\nwant %s", got, want)
	}
	orig := in.Fields
	in.Remove("L", "Missing")
	want = `<h:C xmlns:h="u"><h:A>&lt;&amp;&gt;</h:A><h:B>2</h:B><h:New>n</h:New></h:C>`
	if got := string(in.Body()); got != want {
		t.Errorf("after Remove\n got %s\nwant %s", got, want)
	}
	if orig[1].Name != "L" {
		t.Error("Remove changed the fields it was given (shared with a Get's instance)")
	}
}
