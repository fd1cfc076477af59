package amtsim

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// TestTLSByGeneration: what a real Go TLS client can negotiate with each
// firmware generation's remote-configuration listener.
func TestTLSByGeneration(t *testing.T) {
	root := newTestCA(t, "provisioning root", 2048)
	base := base83(t)
	versions := []string{"11.8.50", "12.0.67", "16.1.25", "18.0.5", "19.0.1"}
	ov := map[netip.Addr]Override{}
	for i, v := range versions {
		a, _ := addrAdd(base, i)
		ov[a] = Override{Version: v}
	}
	s := startSim(t, Config{Devices: len(versions), BaseIP: base, Kind: KindFactory, Overrides: ov,
		Firmware: Firmware{TrustedDomain: provDomain, TrustHashes: [][]byte{sha256Of(root.der)}}})
	chain := [][]byte{provLeaf(t, root, "prov.amt.test", nil), root.der}
	for _, a := range s.Addrs() {
		if err := s.TriggerHello(a); err != nil {
			t.Fatal(err)
		}
	}
	client := func(minV, maxV uint16, suites []uint16) *tls.Config {
		c := provClient(chain...)
		c.MinVersion, c.MaxVersion, c.CipherSuites = minV, maxV, suites
		return c
	}
	tls13 := client(tls.VersionTLS13, tls.VersionTLS13, nil)
	ecdheOnly := client(tls.VersionTLS12, tls.VersionTLS12, ecdheSuites)
	rsaOnly := client(tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256})
	goDefault := client(0, 0, nil) // Go ≥ 1.22 defaults: no RSA key exchange
	tests := []struct {
		name    string
		dev     int
		cfg     *tls.Config
		ok      bool
		version uint16
	}{
		{"11.8 refuses a TLS 1.3-only client", 0, tls13, false, 0},
		{"11.8 refuses ECDHE-only", 0, ecdheOnly, false, 0},
		{"11.8 refuses Go's default suites", 0, goDefault, false, 0},
		{"11.8 speaks TLS_RSA_WITH_AES_128_GCM_SHA256", 0, rsaOnly, true, tls.VersionTLS12},
		{"12.0 refuses a TLS 1.3-only client", 1, tls13, false, 0},
		{"12.0 speaks RSA key exchange", 1, rsaOnly, true, tls.VersionTLS12},
		{"16.1 refuses a TLS 1.3-only client", 2, tls13, false, 0},
		{"16.1 speaks ECDHE", 2, ecdheOnly, true, tls.VersionTLS12},
		{"16.1 speaks RSA key exchange", 2, rsaOnly, true, tls.VersionTLS12},
		{"18.0 stays on TLS 1.2 with Go's defaults", 3, goDefault, true, tls.VersionTLS12},
		{"19.0 speaks TLS 1.3", 4, tls13, true, tls.VersionTLS13},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs, err := session(s, s.Addrs()[tc.dev], tc.cfg)
			if (err == nil) != tc.ok {
				t.Fatalf("handshake error %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && cs.Version != tc.version {
				t.Errorf("negotiated %s, want %s", tls.VersionName(cs.Version), tls.VersionName(tc.version))
			}
		})
	}
}

// TestTLSOnlyFirmware: CSME 16.1+ closes 16992, serves its self-signed
// certificate from activation, shows NonSecureConnectionsSupported and
// refuses a Put that would allow plain connections; AMT 19 closes every
// TLS connection after its answer.
func TestTLSOnlyFirmware(t *testing.T) {
	base := base83(t)
	v19, _ := addrAdd(base, 1)
	old, _ := addrAdd(base, 2)
	s := startSim(t, Config{Devices: 3, BaseIP: base, Kind: KindMEBx, Version: "16.1.25",
		Overrides: map[netip.Addr]Override{v19: {Version: "19.0.1"}, old: {Version: "11.8.50"}}})
	a := s.Addrs()[0]
	if _, err := net.DialTimeout("tcp", netip.AddrPortFrom(a, uint16(s.HTTPPort())).String(), time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("16992 on 16.1: %v, want connection refused", err)
	}
	waitListening(t, old, s.HTTPPort(), true) // 11.8 in ACM without TLS: HTTP
	self := &tls.Config{InsecureSkipVerify: true}
	cs, err := session(s, a, self)
	if err != nil {
		t.Fatalf("TLS on 16.1 right after activation: %v", err)
	}
	if c := cs.PeerCertificates[0]; c.Subject.String() != c.Issuer.String() {
		t.Errorf("16.1 serves %q issued by %q, want the firmware's self-signed certificate", c.Subject, c.Issuer)
	}

	c := tlsClient(t, s, a, "admin", testPassword, self)
	tsd := amtPrefix + "AMT_TLSSettingData"
	sel := map[string]string{"InstanceID": tls8023ID}
	if v := textOf(t, c.get(tsd, sel), "NonSecureConnectionsSupported"); v != "false" {
		t.Errorf("NonSecureConnectionsSupported %q", v)
	}
	put := func(props string) (int, []byte) {
		return c.do(actionPut, tsd, sel, `<h:AMT_TLSSettingData xmlns:h="`+tsd+`">`+props+`</h:AMT_TLSSettingData>`)
	}
	props := func(accept, enabled string) string {
		return `<h:AcceptNonSecureConnections>` + accept + `</h:AcceptNonSecureConnections><h:ElementName>` + tls8023ID +
			`</h:ElementName><h:Enabled>` + enabled + `</h:Enabled><h:InstanceID>` + tls8023ID + `</h:InstanceID><h:MutualAuthentication>false</h:MutualAuthentication>`
	}
	tests := []struct {
		name, props, subcode string
	}{
		{"echoes the read-only property", props("false", "true") + `<h:NonSecureConnectionsSupported>false</h:NonSecureConnectionsSupported>`, "InvalidRepresentation"},
		{"accepts non-secure connections", props("true", "true"), "AccessDenied"},
		{"disables TLS", props("false", "false"), "AccessDenied"},
		{"keeps TLS on", props("false", "true"), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, b := put(tc.props)
			if tc.subcode == "" {
				if code != http.StatusOK {
					t.Fatalf("HTTP %d: %s", code, b)
				}
				return
			}
			if v := allTexts(b, "Value"); code != 400 || len(v) != 2 || v[1][len(v[1])-len(tc.subcode):] != tc.subcode {
				t.Errorf("HTTP %d subcode %v, want 400 %s", code, v, tc.subcode)
			}
		})
	}

	// AMT 19 with TLS: every answer closes its connection.
	tr := &http.Transport{TLSClientConfig: self}
	t.Cleanup(tr.CloseIdleConnections)
	res, err := tr.RoundTrip(mustRequest(t, "https://"+netip.AddrPortFrom(v19, uint16(s.TLSPort())).String()+"/wsman"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if !res.Close {
		t.Error("AMT 19 kept the TLS connection open")
	}
}

func mustRequest(t testing.TB, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}
