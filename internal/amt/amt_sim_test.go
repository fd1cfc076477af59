package amt_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/amt"
	"github.com/amtops/amtops/internal/amtsim"
	"github.com/amtops/amtops/internal/amtsim/amtsimtest"
	"github.com/amtops/amtops/internal/wsman"
)

const (
	simProvPassword = "Prov-Passw0rd!"
	simHost         = "pc01-amt"
	simDomain       = "amt.test"
	simFQDN         = simHost + "." + simDomain
)

// simDevice starts a one-device simulator on a random loopback address
// and ports, stopped when the test ends.
func simDevice(t *testing.T) (addr netip.Addr, httpPort, tlsPort int) {
	t.Helper()
	sim := amtsimtest.Start(t, amtsim.Config{Devices: 1, Kind: amtsim.KindMEBx, Password: simProvPassword,
		CommitDelay: 200 * time.Millisecond, KeyPoolSize: 2}, nil)
	return sim.Addrs()[0], sim.HTTPPort(), sim.TLSPort()
}

type simConn struct {
	addr     netip.Addr
	port     int
	tls      *wsman.TLSConfig
	password string
}

func (sc simConn) client(t *testing.T) *amt.Client {
	t.Helper()
	ws, err := wsman.New(wsman.Config{
		Address: netip.AddrPortFrom(sc.addr, uint16(sc.port)).String(), TLS: sc.tls,
		Username: "admin", Password: sc.password, Timeout: 10 * time.Second, Logger: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ws.Close)
	return amt.New(ws)
}

// awaitDevice polls until the device answers again after CommitChanges or
// an unprovision restarted its network stack. Bounded in attempts; only
// transient errors are waited out.
func awaitDevice(t *testing.T, c *amt.Client) *amt.GeneralSettings {
	t.Helper()
	var err error
	for i := 0; i < 100; i++ {
		var gs *amt.GeneralSettings
		if gs, err = c.GeneralSettings(context.Background()); err == nil {
			return gs
		}
		if !wsman.Retryable(err) {
			t.Fatalf("device answered with a permanent error: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("device did not come back: %v", err)
	return nil
}

// testPKI makes a root CA and a server certificate for fqdn, as phase 1 would.
func testPKI(t *testing.T, fqdn string) (root *x509.Certificate, leafDER []byte, leafKey *rsa.PrivateKey) {
	t.Helper()
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "amtops test root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ = x509.ParseCertificate(caDER)
	leafKey, err = rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: fqdn}, DNSNames: []string{fqdn},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err = x509.CreateCertificate(rand.Reader, leafTmpl, root, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return root, leafDER, leafKey
}

// TestProvisioningAgainstSimulator runs the phase-2 sequence the agent will
// run (S7–S10) and then both removals (S16) against the AMT simulator.
func TestProvisioningAgainstSimulator(t *testing.T) {
	ctx := context.Background()
	addr, httpPort, tlsPort := simDevice(t)
	plain := simConn{addr: addr, port: httpPort, password: simProvPassword}
	c := plain.client(t)

	id, err := c.Identity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if id.ProvisioningState != amt.ProvisioningStatePost || id.UUID == "" || id.Version == "" || id.DigestRealm == "" {
		t.Fatalf("identity before provisioning: %+v", id)
	}

	// Stage 1 over the provisioning port: chain, key, certificate, FQDN, clock, TLS.
	root, leafDER, leafKey := testPKI(t, simFQDN)
	rootID, err := c.AddTrustedRootCertificate(ctx, root.Raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddKey(ctx, x509.MarshalPKCS1PrivateKey(leafKey)); err != nil {
		t.Fatal(err)
	}
	leafID, err := c.AddCertificate(ctx, leafDER)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddTrustedRootCertificate(ctx, root.Raw); err == nil {
		t.Error("installing the same root twice was accepted")
	}
	certs, err := c.Certificates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]amt.Certificate{}
	for _, ce := range certs {
		byID[ce.InstanceID] = ce
	}
	if !byID[rootID].TrustedRoot || byID[leafID].TrustedRoot || !bytes.Equal(byID[leafID].DER, leafDER) {
		t.Fatalf("certificate store after install: %+v", certs)
	}
	if err := c.SetFQDN(ctx, simHost, simDomain); err != nil {
		t.Fatal(err)
	}
	if err := c.SyncClock(ctx, time.Now); err != nil {
		t.Fatal(err)
	}
	if err := c.BindTLSCertificate(ctx, leafID); err != nil {
		t.Fatal(err)
	}
	if err := c.SetTLS(ctx, amt.TLSSettingsRemote, true, false, false); err != nil {
		t.Fatal(err)
	}
	if err := c.CommitChanges(ctx); err != nil {
		t.Fatal(err)
	}

	// Stage 2 over TLS, verifying the chain we just installed.
	pool := x509.NewCertPool()
	pool.AddCert(root)
	secure := simConn{addr: addr, port: tlsPort, password: simProvPassword, tls: &wsman.TLSConfig{RootCAs: pool, ServerName: simFQDN}}
	tc := secure.client(t)
	gs := awaitDevice(t, tc)
	if gs.HostName != simHost || gs.DomainName != simDomain {
		t.Fatalf("FQDN over TLS: %q %q", gs.HostName, gs.DomainName)
	}
	wrongName := secure
	wrongName.tls = &wsman.TLSConfig{RootCAs: pool, ServerName: "other.amt.test"}
	if _, err := wrongName.client(t).GeneralSettings(ctx); err == nil || wsman.Retryable(err) {
		t.Errorf("TLS with the wrong server name: err = %v", err)
	}
	if _, err := plain.client(t).GeneralSettings(ctx); err == nil {
		t.Error("plain HTTP still answers with TLS on and non-secure connections refused")
	}
	if sc, err := tc.SetupAndConfiguration(ctx); err != nil || sc.ProvisioningState != amt.ProvisioningStatePost {
		t.Fatalf("after commit: %+v %v", sc, err)
	}

	// S9 settings.
	if err := tc.SetRedirection(ctx, true, true); err != nil {
		t.Fatal(err)
	}
	if rs, err := tc.RedirectionService(ctx); err != nil || rs.EnabledState != amt.RedirectionIDERSOL || !rs.ListenerEnabled {
		t.Fatalf("redirection: %+v %v", rs, err)
	}
	if err := tc.SetPing(ctx, true, false); err != nil {
		t.Fatal(err)
	}
	if err := tc.SetWebUI(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := tc.SetKVM(ctx, false); err != nil {
		t.Fatal(err)
	}
	schemes, err := tc.PowerSchemes(ctx)
	if err != nil || len(schemes) == 0 {
		t.Fatalf("power schemes: %v %v", schemes, err)
	}
	if err := tc.SetPowerScheme(ctx, schemes[len(schemes)-1].InstanceID); err != nil {
		t.Fatal(err)
	}

	// S10: new admin password; the old one is refused afterwards.
	newPW, err := amt.GeneratePassword(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := tc.SetAdminPassword(ctx, "admin", newPW, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.GeneralSettings(ctx); !errors.Is(err, wsman.ErrUnauthorized) {
		t.Fatalf("old password after change: err = %v", err)
	}
	secure.password = newPW
	tc = secure.client(t)
	if _, err := tc.GeneralSettings(ctx); err != nil {
		t.Fatalf("new password: %v", err)
	}

	// S10: remove every other user (add one first so there is one to remove).
	sid := []byte{1, 5, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0xe9, 3, 0, 0}
	if _, err := tc.AddKerberosUser(ctx, sid, amt.AccessAny, []int{3}); err != nil {
		t.Fatal(err)
	}
	removed, err := tc.RemoveUsers(ctx)
	if err != nil || len(removed) != 1 {
		t.Fatalf("removed %v, %v", removed, err)
	}
	handles, err := tc.UserACLHandles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range handles {
		e, err := tc.UserACLEntry(ctx, h)
		if err != nil || !e.System() {
			t.Errorf("left after RemoveUsers: %+v %v", e, err)
		}
	}

	// S10: Kerberos on.
	k, err := tc.KerberosSettings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	k.RealmName, k.KeyVersion, k.MaximumClockTolerance, k.KrbEnabled = "AMT.TEST", 3, 5, true
	k.MasterKey = bytes.Repeat([]byte{0x42}, 16)
	k.ConfiguredEncryptionAlgorithms = []int{amt.KerberosRC4HMAC}
	if err := tc.PutKerberosSettings(ctx, k); err != nil {
		t.Fatal(err)
	}
	if k2, err := tc.KerberosSettings(ctx); err != nil || !k2.KrbEnabled || k2.RealmName != "AMT.TEST" || k2.KeyVersion != 3 {
		t.Fatalf("kerberos after put: %+v %v", k2, err)
	}
	if _, err := tc.AddKerberosUser(ctx, sid, amt.AccessAny, []int{3}); err != nil {
		t.Fatal(err)
	}
	if err := tc.CommitChanges(ctx); err != nil {
		t.Fatal(err)
	}
	awaitDevice(t, tc)

	// S16 partial: configuration gone, identity (names, admin password) kept,
	// back to plain HTTP.
	if err := tc.PartialUnprovision(ctx); err != nil {
		t.Fatal(err)
	}
	plain.password = newPW
	pc := plain.client(t)
	gs = awaitDevice(t, pc)
	if gs.HostName != simHost || gs.DomainName != simDomain {
		t.Errorf("partial unprovision lost the FQDN: %q %q", gs.HostName, gs.DomainName)
	}
	if sc, err := pc.SetupAndConfiguration(ctx); err != nil || sc.ProvisioningState != amt.ProvisioningStateIn {
		t.Errorf("after partial unprovision: %+v %v", sc, err)
	}
	if certs, err := pc.Certificates(ctx); err != nil || len(certs) != 0 {
		t.Errorf("certificates after partial unprovision: %d %v", len(certs), err)
	}
	if k, err := pc.KerberosSettings(ctx); err != nil || k.KrbEnabled {
		t.Errorf("kerberos after partial unprovision: %+v %v", k, err)
	}
	if ts, err := pc.TLSSettings(ctx); err != nil || len(ts) == 0 || ts[0].Enabled {
		t.Errorf("tls after partial unprovision: %+v %v", ts, err)
	}
	if h, err := pc.UserACLHandles(ctx); err != nil || len(h) != 1 {
		t.Errorf("users after partial unprovision: %v %v", h, err)
	}

	// S16 full: identity gone too, and the device is dark as from the
	// factory: no management on 16992 with any password, until a Hello
	// opens a remote configuration.
	if err := pc.Unprovision(ctx, amt.ProvisioningModeAdmin); err != nil {
		t.Fatal(err)
	}
	for _, pw := range []string{simProvPassword, newPW} {
		plain.password = pw
		if _, err := plain.client(t).GeneralSettings(ctx); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("16992 after unprovision, password %d: %v, want connection refused", len(pw), err)
		}
	}
}

// TestIdentifyAgainstSimulator: discovery's unauthenticated probe (S21).
func TestIdentifyAgainstSimulator(t *testing.T) {
	addr, httpPort, _ := simDevice(t)
	ws := simConn{addr: addr, port: httpPort}.client(t).WSMan()
	ident, err := ws.Identify(context.Background())
	if err != nil || ident.ProductVendor == "" || ident.ProductVersion == "" {
		t.Fatalf("identify: %+v %v", ident, err)
	}
}
