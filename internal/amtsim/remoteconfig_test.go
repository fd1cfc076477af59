package amtsim

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/icholy/digest"
)

const provDomain = "amt.test"

// testKey is one RSA key shared by the test leaves (key generation is slow).
var testKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// provLeaf issues a provisioning leaf from ca: the AMT EKU, CN cn; mod
// changes the template before signing.
func provLeaf(t testing.TB, ca *testCA, cn string, mod func(*x509.Certificate)) []byte {
	t.Helper()
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: n, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:           x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:        []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{oidProvisioningEKU}}
	if mod != nil {
		mod(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &testKey().PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// subCA issues an intermediate CA from ca.
func subCA(t testing.TB, ca *testCA, name string) *testCA {
	t.Helper()
	k := testKey()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &k.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, der: der, key: k}
}

// provClient is a provisioning server's TLS client: it cannot verify the
// device's self-signed certificate and offers what AMT 11–18 speak.
func provClient(chain ...[]byte) *tls.Config {
	cfg := &tls.Config{InsecureSkipVerify: true, CipherSuites: append(append([]uint16{}, ecdheSuites...), rsaKexSuites...)}
	if len(chain) > 0 {
		cfg.Certificates = []tls.Certificate{{Certificate: chain, PrivateKey: testKey()}}
	}
	return cfg
}

// session opens TLS to 16993 and sends one unauthenticated request: a
// session the device accepted answers 401; a refused handshake errors
// (under TLS 1.3 the refusal of a client certificate arrives on read).
func session(s *Sim, a netip.Addr, cfg *tls.Config) (*tls.ConnectionState, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(&d, "tcp", netip.AddrPortFrom(a, uint16(s.TLSPort())).String(), cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("POST /wsman HTTP/1.1\r\nHost: amt\r\nContent-Length: 0\r\n\r\n")); err != nil {
		return nil, err
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 401") {
		return nil, fmt.Errorf("unexpected answer %q", buf[:n])
	}
	st := c.ConnectionState()
	return &st, nil
}

func base83(t testing.TB) netip.Addr {
	t.Helper()
	n, _ := rand.Int(rand.Reader, big.NewInt(250))
	return netip.AddrFrom4([4]byte{127, 83, byte(n.Int64()), 1})
}

func sha1Of(b []byte) []byte   { h := sha1.Sum(b); return h[:] }
func sha256Of(b []byte) []byte { h := sha256.Sum256(b); return h[:] }
func sha384Of(b []byte) []byte { h := sha512.Sum384(b); return h[:] }

// TestRemoteConfigHandshake: a factory device accepts a TLS session on
// 16993 only from a provisioning chain it would accept, as firmware checks it.
func TestRemoteConfigHandshake(t *testing.T) {
	r256, r1, r384 := newTestCA(t, "root by sha256", 2048), newTestCA(t, "root by sha1", 2048), newTestCA(t, "root by sha384", 2048)
	stranger := newTestCA(t, "untrusted root", 2048)
	inter := subCA(t, r256, "issuing CA")
	s := startSim(t, Config{Devices: 1, BaseIP: base83(t), Kind: KindFactory, Firmware: Firmware{TrustedDomain: provDomain,
		TrustHashes: [][]byte{sha256Of(r256.der), sha1Of(r1.der), sha384Of(r384.der)}}})
	a := s.Addrs()[0]

	if _, err := session(s, a, provClient(provLeaf(t, r256, "prov.amt.test", nil), r256.der)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("before any Hello: %v, want connection refused (dark)", err)
	}
	if err := s.TriggerHello(a); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		chain  [][]byte
		reason string // "" accepted; else a part of DeviceState.LastRefusal
	}{
		{"root by sha256", [][]byte{provLeaf(t, r256, "prov.amt.test", nil), r256.der}, ""},
		{"root by sha1", [][]byte{provLeaf(t, r1, "prov.amt.test", nil), r1.der}, ""},
		{"root by sha384", [][]byte{provLeaf(t, r384, "prov.amt.test", nil), r384.der}, ""},
		{"through an intermediate", [][]byte{provLeaf(t, inter, "prov.amt.test", nil), inter.der, r256.der}, ""},
		{"OU instead of EKU", [][]byte{provLeaf(t, r256, "prov.amt.test", func(c *x509.Certificate) {
			c.UnknownExtKeyUsage, c.Subject.OrganizationalUnit = nil, []string{provisioningOU}
		}), r256.der}, ""},
		{"CN is the suffix", [][]byte{provLeaf(t, r256, "AMT.test", nil), r256.der}, ""},
		{"no client certificate", nil, ""},
		{"untrusted root", [][]byte{provLeaf(t, stranger, "prov.amt.test", nil), stranger.der}, "not in the trusted list"},
		{"wrong domain", [][]byte{provLeaf(t, r256, "prov.other.test", nil), r256.der}, "does not end in the trusted domain"},
		{"suffix not on a label", [][]byte{provLeaf(t, r256, "evilamt.test", nil), r256.der}, "does not end in the trusted domain"},
		{"neither EKU nor OU", [][]byte{provLeaf(t, r256, "prov.amt.test", func(c *x509.Certificate) { c.UnknownExtKeyUsage = nil }), r256.der},
			"neither the AMT provisioning EKU"},
		{"expired leaf", [][]byte{provLeaf(t, r256, "prov.amt.test", func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
		}), r256.der}, "not valid at"},
		{"root left out", [][]byte{provLeaf(t, r256, "prov.amt.test", nil)}, "does not end in a self-signed root"},
		{"leaf under another root", [][]byte{provLeaf(t, stranger, "prov.amt.test", nil), r256.der}, "not signed by"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := s.Device(a)
			_, err := session(s, a, provClient(tc.chain...))
			after, _ := s.Device(a)
			wantOK := tc.reason == "" && tc.chain != nil
			if wantOK {
				if err != nil {
					t.Fatalf("refused: %v (device: %s)", err, after.LastRefusal)
				}
				if after.ProvisioningSessions != before.ProvisioningSessions+1 {
					t.Errorf("sessions %d → %d", before.ProvisioningSessions, after.ProvisioningSessions)
				}
				return
			}
			if err == nil {
				t.Fatal("handshake accepted")
			}
			if tc.reason != "" && (!strings.Contains(after.LastRefusal, tc.reason) || after.ProvisioningRefusals != before.ProvisioningRefusals+1) {
				t.Errorf("refusal %q (count %d → %d), want one with %q", after.LastRefusal, before.ProvisioningRefusals, after.ProvisioningRefusals, tc.reason)
			}
		})
	}
}

// tlsClient is a WS-Man client over TLS to 16993 with cfg.
func tlsClient(t testing.TB, s *Sim, a netip.Addr, user, password string, cfg *tls.Config) *wsman {
	t.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: 1, TLSClientConfig: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	return &wsman{t: t, url: fmt.Sprintf("https://%s:%d/wsman", a, s.TLSPort()),
		client: &http.Client{Timeout: 20 * time.Second, Transport: &digest.Transport{Username: user, Password: password, Transport: tr}}}
}

// digestB64 is SetAdminAclEntryEx's DigestPassword for a user.
func digestB64(s *Sim, a netip.Addr, user, pw string) string {
	ds, _ := s.Device(a)
	h := ha1(user, ds.DigestRealm, pw)
	return b64(h[:])
}

func timeSync(t testing.TB, c *wsman) {
	t.Helper()
	ts := amtPrefix + "AMT_TimeSynchronizationService"
	ta0 := textOf(t, c.invoke(ts, "GetLowAccuracyTimeSynch", nil, ""), "Ta0")
	now := fmt.Sprint(time.Now().Unix())
	if rv := c.rv(ts, "SetHighAccuracyTimeSynch", `<h:Ta0>`+ta0+`</h:Ta0><h:Tm1>`+now+`</h:Tm1><h:Tm2>`+now+`</h:Tm2>`); rv != "0" {
		t.Fatalf("SetHighAccuracyTimeSynch: %s", rv)
	}
}

// TestRemoteConfiguration walks a factory device from its Hello window to
// ACM over the provisioning session, then back to dark with Unprovision.
func TestRemoteConfiguration(t *testing.T) {
	root := newTestCA(t, "provisioning root", 2048)
	s := startSim(t, Config{Devices: 1, BaseIP: base83(t), Kind: KindFactory, Firmware: Firmware{TrustedDomain: provDomain,
		TrustHashes: [][]byte{sha256Of(root.der)}, TLSRestart: 300 * time.Millisecond}})
	a := s.Addrs()[0]
	prov := provClient(provLeaf(t, root, "prov.amt.test", nil), root.der)
	if err := s.TriggerHello(a); err != nil {
		t.Fatal(err)
	}
	waitListening(t, a, s.TLSPort(), true)
	waitListening(t, a, s.HTTPPort(), false) // no management on 16992 in state 0

	if code, _, err := tlsClient(t, s, a, "admin", "Wr0ng!pass", prov).post(envelope(actionGet, amtPrefix+"AMT_GeneralSettings", "1", nil, "")); err != nil || code != 401 {
		t.Fatalf("wrong MEBx password: HTTP %d, %v; want 401", code, err)
	}
	c := tlsClient(t, s, a, "admin", "admin", prov) // the factory MEBx password
	scs := amtPrefix + "AMT_SetupAndConfigurationService"
	az := amtPrefix + "AMT_AuthorizationService"
	if v := textOf(t, c.get(scs, nil), "ProvisioningState"); v != "0" {
		t.Fatalf("ProvisioningState %s, want 0", v)
	}
	_ = c.pull(cimPrefix + "CIM_SoftwareIdentity")
	if rv := c.rv(scs, "CommitChanges", ""); rv != "2057" {
		t.Fatalf("CommitChanges with nothing set: %s, want 2057", rv)
	}
	const mebx, admin = "N3w-MEBx!pw", "Adm1n!pass"
	if rv := c.rv(scs, "SetMEBxPassword", `<h:Password>`+mebx+`</h:Password>`); rv != "0" {
		t.Fatalf("SetMEBxPassword: %s", rv)
	}
	if rv := c.rv(az, "SetAdminAclEntryEx", `<h:Username>admin</h:Username><h:DigestPassword>`+digestB64(s, a, "admin", admin)+`</h:DigestPassword>`); rv != "0" {
		t.Fatalf("SetAdminAclEntryEx: %s", rv)
	}
	c = tlsClient(t, s, a, "admin", admin, prov) // takes effect at once
	if rv := c.rv(scs, "CommitChanges", ""); rv != "2057" {
		t.Fatalf("CommitChanges without the clock: %s, want 2057", rv)
	}
	timeSync(t, c)
	ca, _ := provisionTLS(t, c, "pc1.amt.test", false)
	if rv := c.rv(scs, "CommitChanges", ""); rv != "0" {
		t.Fatalf("CommitChanges: %s", rv)
	}
	st, _ := s.Device(a)
	if st.ProvisioningState != 2 || st.ControlMode != 2 || st.ProvisioningMode != 1 {
		t.Fatalf("after commit: state %d control mode %d mode %d, want 2, 2 (ACM), 1", st.ProvisioningState, st.ControlMode, st.ProvisioningMode)
	}
	// The site certificate, after the TLS restart; the provisioning session is over.
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	site := &tls.Config{RootCAs: pool, ServerName: "pc1.amt.test", CipherSuites: rsaKexSuites}
	deadline := time.Now().Add(5 * time.Second)
	var cs *tls.ConnectionState
	var err error
	for time.Now().Before(deadline) {
		if cs, err = session(s, a, site); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("site TLS after commit: %v", err)
	}
	if cs.PeerCertificates[0].Subject.CommonName != "pc1.amt.test" {
		t.Errorf("served %q", cs.PeerCertificates[0].Subject.CommonName)
	}
	sc := tlsClient(t, s, a, "admin", admin, site)
	if v := textOf(t, sc.get(ipsPrefix+"IPS_HostBasedSetupService", nil), "CurrentControlMode"); v != "2" {
		t.Errorf("CurrentControlMode %s, want 2", v)
	}
	for _, pw := range []string{"admin", mebx} {
		if code, _, _ := tlsClient(t, s, a, "admin", pw, site).post(envelope(actionGet, scs, "1", nil, "")); code != 401 {
			t.Errorf("old password %q: HTTP %d, want 401", pw, code)
		}
	}
	if st, _ := s.Device(a); st.MEBxDefault || st.MEBxHA1 == hexHA1(st.DigestRealm, "admin") {
		t.Error("MEBx password still the factory one")
	}

	// Full unprovision: dark again; a new Hello reopens the session, whose
	// login is now the MEBx password the provisioning server set.
	if rv := sc.rv(scs, "Unprovision", `<h:ProvisioningMode>1</h:ProvisioningMode>`); rv != "0" {
		t.Fatalf("Unprovision: %s", rv)
	}
	time.Sleep(400 * time.Millisecond)
	if _, err := session(s, a, prov); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("after Unprovision: %v, want connection refused", err)
	}
	if err := s.TriggerHello(a); err != nil {
		t.Fatal(err)
	}
	// Added hashes are gone with the unprovision (Intel's documentation),
	// so the same root no longer opens a session.
	if _, err := session(s, a, prov); err == nil {
		t.Fatal("session accepted with a root hash unprovisioning deleted")
	}
}

func hexHA1(realm, pw string) string {
	h := ha1("admin", realm, pw)
	return fmt.Sprintf("%x", h[:])
}
