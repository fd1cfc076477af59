package phase2_test

import (
	"context"
	"crypto/md5"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/agent/phase2"
	"github.com/amtops/amtops/internal/amtsim"
	"github.com/amtops/amtops/internal/amtsim/amtsimtest"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/pki"
	"github.com/amtops/amtops/internal/pki/builtin"
	"github.com/amtops/amtops/internal/pki/pkitest"
	"github.com/amtops/amtops/internal/wsman"
	amtopsv1 "github.com/amtops/amtops/proto/amtops/v1"
)

const (
	provPassword = "P@ssw0rd1"
	newPassword  = "N3w-Admin!pass"
	testSID      = "S-1-5-21-1004336348-1177238915-682003330-1001"
)

var krbKey = []byte("0123456789abcdef") // 16-byte RC4-HMAC key

// startSim runs a simulator; overrides are keyed by device index.
func startSim(t *testing.T, devices int, overrides map[int]amtsim.Override) *amtsim.Sim {
	t.Helper()
	return amtsimtest.Start(t, amtsim.Config{Devices: devices, Kind: amtsim.KindMEBx, Password: provPassword, CommitDelay: 30 * time.Millisecond}, overrides)
}

func newExecutor(sim *amtsim.Sim) *phase2.Executor {
	return phase2.NewExecutor(phase2.Config{
		HTTPPort: sim.HTTPPort(), TLSPort: sim.TLSPort(),
		CallTimeout: 5 * time.Second, CommitWait: 40 * time.Millisecond,
		CommitDeadline: 5 * time.Second, PollInterval: 20 * time.Millisecond,
		Log: zerolog.Nop(),
	})
}

// ca is a real built-in CA in memory.
type ca struct{ ca *builtin.CA }

func newCA(t *testing.T) *ca {
	t.Helper()
	c, err := builtin.New(context.Background(), &pkitest.MemStorage{}, builtin.Config{Log: zerolog.Nop()})
	if err != nil {
		t.Fatalf("builtin.New: %v", err)
	}
	return &ca{ca: c}
}

// issue makes a key and certificate for fqdn: PKCS#8 key, leaf, chain.
func (c *ca) issue(t *testing.T, fqdn string, profile pki.Profile) (key, leaf []byte, chain [][]byte, serial string) {
	t.Helper()
	k, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CSR(k, fqdn)
	if err != nil {
		t.Fatal(err)
	}
	is, err := c.ca.Issue(context.Background(), pki.Request{Profile: profile, FQDN: fqdn, CSR: csr})
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	key, err = x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return key, is.Leaf, is.Chain, is.Serial
}

func provisionJob(t *testing.T, c *ca, ip netip.Addr, host string) *amtopsv1.Phase2Job {
	t.Helper()
	fqdn := host + ".corp.example"
	key, leaf, chain, serial := c.issue(t, fqdn, pki.ProfileServerAuth)
	return &amtopsv1.Phase2Job{
		DeviceId: "dev-" + host,
		Kind:     amtopsv1.JobKind_JOB_KIND_PROVISION,
		Target:   &amtopsv1.Target{Ip: ip.String(), HostName: host, Domain: "corp.example"},
		Credentials: &amtopsv1.Credentials{Username: "admin", Password: provPassword,
			NewAdminPassword: newPassword},
		Tls: &amtopsv1.TLSMaterial{CertificateDer: leaf, PrivateKeyDer: key, ChainDer: chain, Serial: serial},
		Settings: &amtopsv1.Settings{IdeRedirection: true, SerialOverLan: true, Kvm: true, PingResponse: false,
			WebUi: true, PowerScheme: "ON in S0"},
		Kerberos: &amtopsv1.Kerberos{Enabled: true, Realm: "corp.example", MasterKey: krbKey, KeyVersion: 3,
			EncryptionType: 23, MaxClockToleranceMinutes: 5,
			Acl: []*amtopsv1.KerberosACL{{Sid: testSID, AccessPermission: 2, Realms: []int32{3, 5}}}},
	}
}

// recorder is a Reporter that keeps events and can cancel a run when a
// given step starts (the injected failure).
type recorder struct {
	mu       sync.Mutex
	events   []string
	cancelOn string
	cancel   context.CancelFunc
}

func (r *recorder) Step(_ context.Context, step string, outcome domain.Outcome, detail string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, step+" "+string(outcome)+" "+detail)
	if r.cancel != nil && step == r.cancelOn && outcome == domain.OutcomeStarted {
		r.cancel()
	}
}

func (r *recorder) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.events, "\n")
}

func ha1(user, realm, pw string) string {
	s := md5.Sum([]byte(user + ":" + realm + ":" + pw))
	return hex.EncodeToString(s[:])
}

func mustRun(t *testing.T, ex *phase2.Executor, job *amtopsv1.Phase2Job) phase2.Result {
	t.Helper()
	rec := &recorder{}
	res := ex.Run(context.Background(), job, rec)
	if res.Err != nil {
		t.Fatalf("Run %s: step %s: %v (permanent %t)\nevents:\n%s", job.GetKind(), res.ErrorStep, res.Err, res.Permanent, rec.all())
	}
	for _, e := range rec.events {
		for _, secret := range []string{provPassword, newPassword} {
			if strings.Contains(e, secret) {
				t.Errorf("event carries a secret: %q", e)
			}
		}
	}
	return res
}

func device(t *testing.T, sim *amtsim.Sim, a netip.Addr) amtsim.DeviceState {
	t.Helper()
	st, ok := sim.Device(a)
	if !ok {
		t.Fatalf("no device %s", a)
	}
	return st
}

// checkProvisioned asserts the whole S7–S10 result on the device.
func checkProvisioned(t *testing.T, sim *amtsim.Sim, job *amtopsv1.Phase2Job, res phase2.Result) {
	t.Helper()
	a := netip.MustParseAddr(job.Target.Ip)
	st := device(t, sim, a)
	if st.ProvisioningState != 2 {
		t.Errorf("provisioning state %d, want 2", st.ProvisioningState)
	}
	have := map[string]amtsim.CertState{}
	for _, c := range st.Certificates {
		have[string(c.DER)] = c
	}
	chain := job.Tls.ChainDer
	if c, ok := have[string(chain[len(chain)-1])]; !ok || !c.TrustedRoot {
		t.Errorf("root not installed as trusted root")
	}
	for _, der := range append([][]byte{job.Tls.CertificateDer}, chain[:len(chain)-1]...) {
		if _, ok := have[string(der)]; !ok {
			t.Errorf("certificate %x… not installed", der[:8])
		}
	}
	if len(st.Certificates) != len(chain)+1 {
		t.Errorf("%d certificates on the device, want %d (no duplicates)", len(st.Certificates), len(chain)+1)
	}
	if !st.TLS.Enabled || !st.TLS.ServingTLS || st.TLS.ServingHTTP || st.TLS.AcceptNonSecure {
		t.Errorf("TLS enabled %t serving TLS %t HTTP %t accept non-secure %t, want enabled, serving TLS only",
			st.TLS.Enabled, st.TLS.ServingTLS, st.TLS.ServingHTTP, st.TLS.AcceptNonSecure)
	}
	if len(st.TLS.ServedChain) == 0 || string(st.TLS.ServedChain[0]) != string(job.Tls.CertificateDer) {
		t.Errorf("TLS port does not serve our leaf")
	}
	if st.HostName != job.Target.HostName || st.DomainName != job.Target.Domain {
		t.Errorf("FQDN %s.%s, want %s.%s", st.HostName, st.DomainName, job.Target.HostName, job.Target.Domain)
	}
	if st.ClockOffset > 2*time.Second || st.ClockOffset < -2*time.Second {
		t.Errorf("clock offset %s, want within 2s", st.ClockOffset)
	}
	s := job.Settings
	if st.IDER != s.IdeRedirection || st.SOL != s.SerialOverLan || st.KVM != s.Kvm || st.Ping != s.PingResponse || st.WebUI != s.WebUi {
		t.Errorf("settings IDER %t SOL %t KVM %t ping %t webUI %t, want %+v", st.IDER, st.SOL, st.KVM, st.Ping, st.WebUI, s)
	}
	if !strings.Contains(st.PowerScheme, "ON in S0") {
		t.Errorf("power scheme %q", st.PowerScheme)
	}
	if st.AdminHA1 != ha1("admin", st.DigestRealm, newPassword) {
		t.Errorf("admin password is not the new one")
	}
	if st.AdminHA1 == ha1("admin", st.DigestRealm, provPassword) {
		t.Errorf("provisioning password still valid")
	}
	var users []amtsim.UserState
	for _, u := range st.Users {
		if !u.System {
			users = append(users, u)
		}
	}
	if len(users) != 1 || users[0].Name != "" {
		t.Errorf("users %+v, want only the Kerberos ACL entry", users)
	}
	k := st.Kerberos
	if !k.Enabled || k.Realm != "CORP.EXAMPLE" || k.KeyVersion != 3 || k.MasterKeyHex != hex.EncodeToString(krbKey) {
		t.Errorf("kerberos %+v", k)
	}
	if res.Facts.GetUuid() != st.UUID || res.Facts.GetAmtVersion() != st.Version ||
		res.Facts.GetInstalledSerial() != job.Tls.Serial || res.Facts.GetProvisioningState() != 2 {
		t.Errorf("facts %+v vs state uuid %s version %s", res.Facts, st.UUID, st.Version)
	}
	// The passwords as a client sees them: the old one refused, the new one accepted.
	for _, c := range []struct {
		pw   string
		want error
	}{{provPassword, wsman.ErrUnauthorized}, {newPassword, nil}} {
		err := tlsLogin(t, sim, job, c.pw)
		if (c.want == nil) != (err == nil) || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("login with %s password: %v, want %v", map[string]string{provPassword: "provisioning", newPassword: "new"}[c.pw], err, c.want)
		}
	}
}

func tlsLogin(t *testing.T, sim *amtsim.Sim, job *amtopsv1.Phase2Job, pw string) error {
	t.Helper()
	pool := x509.NewCertPool()
	root, _ := x509.ParseCertificate(job.Tls.ChainDer[len(job.Tls.ChainDer)-1])
	pool.AddCert(root)
	ws, err := wsman.New(wsman.Config{Address: net.JoinHostPort(job.Target.Ip, fmt.Sprint(sim.TLSPort())),
		Username: "admin", Password: pw, Timeout: 5 * time.Second,
		TLS: &wsman.TLSConfig{RootCAs: pool, ServerName: job.Target.HostName + "." + job.Target.Domain}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_, err = ws.Get(context.Background(), "http://intel.com/wbem/wscim/1/amt-schema/1/AMT_GeneralSettings")
	return err
}

func TestProvisionEndToEnd(t *testing.T) {
	sim := startSim(t, 1, nil)
	c := newCA(t)
	job := provisionJob(t, c, sim.Addrs()[0], "pc01")
	res := mustRun(t, newExecutor(sim), job)
	checkProvisioned(t, sim, job, res)

	// Running the same job again on the finished device converges (its
	// second attempt tries the new password).
	job.Attempt = 2
	res = mustRun(t, newExecutor(sim), job)
	checkProvisioned(t, sim, job, res)
}

func TestProvisionConvergesAfterInterruption(t *testing.T) {
	cases := []struct {
		name, step string
	}{
		{"before any change", "install-root"},
		{"certificates installed", "set-fqdn"},
		{"TLS configured, not committed", "commit"},
		{"TLS on, settings half done", "ping"},
		{"new password set", "remove-users"},
		{"kerberos half done", "kerberos-acl"},
	}
	sim := startSim(t, len(cases), nil)
	c := newCA(t)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			job := provisionJob(t, c, sim.Addrs()[i], fmt.Sprintf("conv%d", i))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			rec := &recorder{cancelOn: tc.step, cancel: cancel}
			res := newExecutor(sim).Run(ctx, job, rec)
			if res.Err == nil {
				t.Fatalf("interrupted run succeeded\n%s", rec.all())
			}
			if res.Permanent {
				t.Errorf("interrupted run is permanent: %v", res.Err)
			}
			if res.ErrorStep == "" {
				t.Errorf("no error step for %v", res.Err)
			}
			// Later attempts take turns with the password candidates (one
			// each, no spraying): within one round one of them gets in.
			for job.Attempt = 2; job.Attempt <= 3; job.Attempt++ {
				res = newExecutor(sim).Run(context.Background(), job, nil)
				if res.Err == nil || res.Permanent {
					break
				}
			}
			if res.Err != nil {
				t.Fatalf("attempt %d: step %s: %v (permanent %t)", job.Attempt, res.ErrorStep, res.Err, res.Permanent)
			}
			checkProvisioned(t, sim, job, res)
		})
	}
}

func TestRemove(t *testing.T) {
	cases := []struct {
		name      string
		kind      amtopsv1.JobKind
		wantState int
		keepName  bool
	}{
		{"remove config keeps identity", amtopsv1.JobKind_JOB_KIND_REMOVE_CONFIG, 1, true},
		{"remove all", amtopsv1.JobKind_JOB_KIND_REMOVE_ALL, 0, false},
	}
	sim := startSim(t, len(cases), nil)
	c := newCA(t)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := sim.Addrs()[i]
			job := provisionJob(t, c, a, fmt.Sprintf("rm%d", i))
			mustRun(t, newExecutor(sim), job)
			rm := &amtopsv1.Phase2Job{DeviceId: job.DeviceId, Kind: tc.kind, Target: job.Target, Tls: job.Tls,
				Credentials: &amtopsv1.Credentials{Username: "admin", Password: newPassword}}
			res := mustRun(t, newExecutor(sim), rm)
			st := device(t, sim, a)
			if st.ProvisioningState != tc.wantState || int(res.Facts.GetProvisioningState()) != tc.wantState {
				t.Errorf("provisioning state %d (facts %d), want %d", st.ProvisioningState, res.Facts.GetProvisioningState(), tc.wantState)
			}
			if st.TLS.Enabled || st.Kerberos.Enabled || st.KVM || st.IDER || st.SOL {
				t.Errorf("configuration left: TLS %t krb %t KVM %t IDER %t SOL %t", st.TLS.Enabled, st.Kerberos.Enabled, st.KVM, st.IDER, st.SOL)
			}
			if got := st.HostName == job.Target.HostName; got != tc.keepName {
				t.Errorf("host name %q kept=%t, want kept=%t", st.HostName, got, tc.keepName)
			}
			// A full removal leaves the device as from the factory: dark,
			// its next login the MEBx password of a remote configuration.
			want := ha1("admin", st.DigestRealm, newPassword)
			if !tc.keepName {
				want = st.MEBxHA1
			}
			if st.AdminHA1 != want {
				t.Errorf("admin password after removal is not the expected one")
			}
		})
	}
}

func updateJob(prov *amtopsv1.Phase2Job, nets []*amtopsv1.NetworkProfile, confirm bool) *amtopsv1.Phase2Job {
	return &amtopsv1.Phase2Job{DeviceId: prov.DeviceId, Kind: amtopsv1.JobKind_JOB_KIND_UPDATE, Target: prov.Target,
		Tls:         prov.Tls,
		Credentials: &amtopsv1.Credentials{Username: "admin", Password: newPassword, NewAdminPassword: newPassword},
		Settings:    &amtopsv1.Settings{IdeRedirection: false, SerialOverLan: true, Kvm: false, PingResponse: true},
		Kerberos:    prov.Kerberos, Networks: nets, Update: &amtopsv1.UpdateOptions{Confirm_8021X: confirm}}
}

func netProfile(t *testing.T, c *ca, kind amtopsv1.NetworkProfile_Kind, fqdn string) *amtopsv1.NetworkProfile {
	t.Helper()
	key, leaf, chain, serial := c.issue(t, fqdn, pki.ProfileClientAuth)
	return &amtopsv1.NetworkProfile{Kind: kind, Name: "corp", Ssid: "corp-wlan", ClientCertificateDer: leaf,
		ClientKeyDer: key, RadiusRootDer: [][]byte{chain[len(chain)-1]}, ClientSerial: serial, Priority: 1}
}

func TestUpdate(t *testing.T) {
	cases := []struct {
		name      string
		link      amtsim.Link
		kind      amtopsv1.NetworkProfile_Kind
		confirm   bool
		wantErr   error
		wantWarn  string
		wantLink  amtopsv1.Link
		checkWiFi func(t *testing.T, st amtsim.DeviceState)
	}{
		{name: "wireless link skips the Wi-Fi profile", link: amtsim.LinkWireless, kind: amtopsv1.NetworkProfile_KIND_WIRELESS,
			wantWarn: phase2.WarnWirelessNotUpdated, wantLink: amtopsv1.Link_LINK_WIRELESS,
			checkWiFi: func(t *testing.T, st amtsim.DeviceState) {
				if len(st.WiFi) != 1 || st.WiFi[0].ElementName != "site" {
					t.Errorf("wifi profiles %+v, want the original one only", st.WiFi)
				}
			}},
		{name: "wired link adds the Wi-Fi profile", link: amtsim.LinkWired, kind: amtopsv1.NetworkProfile_KIND_WIRELESS,
			wantLink: amtopsv1.Link_LINK_WIRED,
			checkWiFi: func(t *testing.T, st amtsim.DeviceState) {
				if len(st.WiFi) != 1 || st.WiFi[0].ElementName != "corp" || st.WiFi[0].ClientCertHandle < 0 {
					t.Errorf("wifi profiles %+v, want corp with a client certificate", st.WiFi)
				}
			}},
		{name: "802.1X link unconfirmed fails", link: amtsim.LinkWired8021X, kind: amtopsv1.NetworkProfile_KIND_WIRED_8021X,
			wantErr: domain.ErrConfirm8021X, wantLink: amtopsv1.Link_LINK_WIRED_8021X},
		{name: "802.1X link confirmed updates", link: amtsim.LinkWired8021X, kind: amtopsv1.NetworkProfile_KIND_WIRED_8021X,
			confirm: true, wantLink: amtopsv1.Link_LINK_WIRED_8021X, wantWarn: phase2.WarnConfirmed8021X,
			checkWiFi: func(t *testing.T, st amtsim.DeviceState) {
				if !st.IEEE8021.Enabled || st.IEEE8021.ClientCertHandle < 0 || st.IEEE8021.RootCertHandle < 0 {
					t.Errorf("802.1X %+v, want enabled with our certificates", st.IEEE8021)
				}
			}},
	}
	ov := map[int]amtsim.Override{}
	for i, tc := range cases {
		ov[i] = amtsim.Override{Link: tc.link}
	}
	sim := startSim(t, len(cases), ov)
	c := newCA(t)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := sim.Addrs()[i]
			prov := provisionJob(t, c, a, fmt.Sprintf("up%d", i))
			if got := mustRun(t, newExecutor(sim), prov).Facts.GetLink(); got != tc.wantLink {
				t.Errorf("provisioning reported link %s, want %s", got, tc.wantLink)
			}
			job := updateJob(prov, []*amtopsv1.NetworkProfile{netProfile(t, c, tc.kind, "up.corp.example")}, tc.confirm)
			rec := &recorder{}
			res := newExecutor(sim).Run(context.Background(), job, rec)
			st := device(t, sim, a)
			if tc.wantErr != nil {
				if !errors.Is(res.Err, tc.wantErr) || !res.Permanent || res.ErrorStep != phase2.StepNetworkProfiles {
					t.Fatalf("err %v permanent %t step %q, want permanent %v at %s", res.Err, res.Permanent, res.ErrorStep, tc.wantErr, phase2.StepNetworkProfiles)
				}
				if !st.SOL || !st.IDER || st.IEEE8021.ClientCertHandle >= 0 {
					t.Errorf("a refused update changed the device")
				}
				return
			}
			if res.Err != nil {
				t.Fatalf("update: step %s: %v\n%s", res.ErrorStep, res.Err, rec.all())
			}
			if got := strings.Join(res.Warnings, ";"); got != tc.wantWarn {
				t.Errorf("warnings %q, want %q", got, tc.wantWarn)
			}
			if res.Facts.GetLink() != tc.wantLink {
				t.Errorf("link %s, want %s", res.Facts.GetLink(), tc.wantLink)
			}
			if st.LinkDown {
				t.Errorf("update dropped the link")
			}
			if st.IDER || !st.SOL || st.KVM || !st.Ping {
				t.Errorf("settings not updated: IDER %t SOL %t KVM %t ping %t", st.IDER, st.SOL, st.KVM, st.Ping)
			}
			tc.checkWiFi(t, st)
		})
	}
}

func TestFailures(t *testing.T) {
	sim := startSim(t, 2, map[int]amtsim.Override{1: {Kind: amtsim.KindExternal}})
	c := newCA(t)
	cases := []struct {
		name     string
		mutate   func(j *amtopsv1.Phase2Job)
		wantStep string
		wantText string
	}{
		{"missing ip", func(j *amtopsv1.Phase2Job) { j.Target.Ip = "" }, "", "target.ip"},
		{"missing key", func(j *amtopsv1.Phase2Job) { j.Tls.PrivateKeyDer = nil }, "", "tls.private_key_der"},
		{"wrong passwords", func(j *amtopsv1.Phase2Job) {
			j.Credentials.Password, j.Credentials.NewAdminPassword = "Wr0ng!pass", ""
		}, phase2.StepConnect, "refused"},
		{"externally provisioned", func(j *amtopsv1.Phase2Job) {
			// One candidate: its refusal is final. (With two, a refusal
			// stays transient and the site's attempt budget ends the job:
			// TestRefusalWithCandidatesLeftIsTransient.)
			j.Target.Ip, j.Credentials.NewAdminPassword = sim.Addrs()[1].String(), ""
		}, phase2.StepConnect, "externally"},
		{"unknown power scheme", func(j *amtopsv1.Phase2Job) { j.Settings.PowerScheme = "ON in S7" }, phase2.StepPower, "power_scheme"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			job := provisionJob(t, c, sim.Addrs()[0], "fail")
			tc.mutate(job)
			res := newExecutor(sim).Run(context.Background(), job, nil)
			if res.Err == nil || !res.Permanent || res.ErrorStep != tc.wantStep || !strings.Contains(res.Err.Error(), tc.wantText) {
				t.Fatalf("err %v permanent %t step %q, want permanent error at %q mentioning %q", res.Err, res.Permanent, res.ErrorStep, tc.wantStep, tc.wantText)
			}
			for _, s := range []string{provPassword, newPassword} {
				if strings.Contains(res.Err.Error(), s) {
					t.Errorf("error carries a password")
				}
			}
		})
	}
}

// With two password candidates, a refused one is transient on every
// attempt: a turn lost to a fault proves nothing about the other, so the
// site's attempt budget ends the job, not the agent. Each attempt tries
// one candidate only (no spraying against the lockout).
func TestRefusalWithCandidatesLeftIsTransient(t *testing.T) {
	sim := startSim(t, 1, map[int]amtsim.Override{0: {Kind: amtsim.KindExternal}})
	c := newCA(t)
	for attempt := int32(1); attempt <= 6; attempt++ {
		job := provisionJob(t, c, sim.Addrs()[0], "refused")
		job.Attempt = attempt
		res := newExecutor(sim).Run(context.Background(), job, nil)
		if res.Err == nil || res.Permanent || res.ErrorStep != phase2.StepConnect || !errors.Is(res.Err, wsman.ErrUnauthorized) {
			t.Fatalf("attempt %d: err %v permanent %t step %q; want a transient refusal at connect", attempt, res.Err, res.Permanent, res.ErrorStep)
		}
		if want := fmt.Sprintf("candidate %d of 2", 1+(attempt-1)%2); !strings.Contains(res.Err.Error(), want) {
			t.Errorf("attempt %d: %v; want it to have tried %s", attempt, res.Err, want)
		}
	}
}

func TestProvisionKeyOnDevice(t *testing.T) {
	sim := startSim(t, 1, nil)
	c := newCA(t)
	job := provisionJob(t, c, sim.Addrs()[0], "kod")
	job.Tls = &amtopsv1.TLSMaterial{KeyOnDevice: true, ChainDer: job.Tls.ChainDer}
	var signed []byte
	ex := phase2.NewExecutor(phase2.Config{
		HTTPPort: sim.HTTPPort(), TLSPort: sim.TLSPort(), CallTimeout: 5 * time.Second,
		CommitWait: 40 * time.Millisecond, CommitDeadline: 5 * time.Second, PollInterval: 20 * time.Millisecond,
		Log: zerolog.Nop(),
		SignCSR: func(ctx context.Context, csr []byte) ([]byte, [][]byte, string, error) {
			is, err := c.ca.Issue(ctx, pki.Request{Profile: pki.ProfileServerAuth, FQDN: "kod.corp.example", CSR: csr})
			if err != nil {
				return nil, nil, "", err
			}
			signed = is.Leaf
			return is.Leaf, is.Chain, is.Serial, nil
		},
	})
	res := mustRun(t, ex, job)
	st := device(t, sim, sim.Addrs()[0])
	if len(st.TLS.ServedChain) == 0 || string(st.TLS.ServedChain[0]) != string(signed) {
		t.Fatalf("TLS port does not serve the certificate signed for the device key")
	}
	onDevice := false
	for _, k := range st.Keys {
		onDevice = onDevice || k.GeneratedOnDevice
	}
	if !onDevice || res.Facts.GetInstalledSerial() == "" {
		t.Errorf("key generated on device %t, serial %q", onDevice, res.Facts.GetInstalledSerial())
	}
}

// An unanswered CommitChanges that never reached the device leaves the
// settings live but uncommitted: reading them back looks right, and the
// next reset reverts them. The job must not end provisioned on that; it
// repeats the commit until one is answered (issue 14, phantom success).
func TestUnansweredCommitIsConfirmed(t *testing.T) {
	sim := startSim(t, 1, nil)
	a := sim.Addrs()[0]
	// The TLS stage's commit goes through; the settings stage's is lost.
	if err := sim.DropCall(a, "CommitChanges", 1); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	res := newExecutor(sim).Run(context.Background(), provisionJob(t, newCA(t), a, "lost-commit"), rec)
	if res.Err != nil {
		t.Fatalf("step %s: %v\n%s", res.ErrorStep, res.Err, rec.all())
	}
	st := device(t, sim, a)
	if st.UncommittedChanges || st.Commits != 2 {
		t.Fatalf("after the job: uncommitted changes %t, %d commits; want none uncommitted and both commits applied", st.UncommittedChanges, st.Commits)
	}
	if !strings.Contains(rec.all(), "CommitChanges answered on try 2") {
		t.Errorf("the log does not say the commit was confirmed:\n%s", rec.all())
	}
}

// A reset between the device's DUPLICATE answer and the listing that
// should show the certificate (the duplicate was an earlier attempt's,
// uncommitted) leaves the device without it: this attempt fails, but the
// next one adds it, so the failure must not be permanent. make chaos's
// simulator faults (1% reboots) ended a device failed for good so.
func TestDuplicateThenResetIsTransient(t *testing.T) {
	sim := amtsimtest.Start(t, amtsim.Config{Devices: 1, Kind: amtsim.KindMEBx, Password: provPassword,
		CommitDelay: 30 * time.Millisecond, BaseIP: netip.MustParseAddr("127.21.6.1")}, nil)
	a := sim.Addrs()[0]
	job := provisionJob(t, newCA(t), a, "dup-reset")
	// Attempt 1 adds root, key and certificate, then its FQDN write (the
	// first Put) is lost: nothing is committed.
	if err := sim.DropCall(a, "Put", 0); err != nil {
		t.Fatal(err)
	}
	res := newExecutor(sim).Run(context.Background(), job, nil)
	if res.Err == nil || res.ErrorStep != phase2.StepSetFQDN {
		t.Fatalf("attempt 1: step %q, %v; want a failure at %s", res.ErrorStep, res.Err, phase2.StepSetFQDN)
	}
	// Attempt 2 meets its root as a duplicate, and the device resets
	// right after saying so.
	if err := sim.RebootAfter(a, "AddTrustedRootCertificate", 0); err != nil {
		t.Fatal(err)
	}
	// (The same attempt number each time: the password candidates' order
	// is not what this is about.)
	res = newExecutor(sim).Run(context.Background(), job, nil)
	if res.Err == nil || res.ErrorStep != phase2.StepInstallRoot || res.Permanent {
		t.Fatalf("attempt 2: step %q, permanent %t, %v; want a transient failure at %s", res.ErrorStep, res.Permanent, res.Err, phase2.StepInstallRoot)
	}
	mustRun(t, newExecutor(sim), job)
}

// The same with the key the device generates (key_on_device): a reset
// right after GenerateKeyPair loses the key before it is listed.
func TestGeneratedKeyLostToResetIsTransient(t *testing.T) {
	sim := amtsimtest.Start(t, amtsim.Config{Devices: 1, Kind: amtsim.KindMEBx, Password: provPassword,
		CommitDelay: 30 * time.Millisecond, BaseIP: netip.MustParseAddr("127.21.7.1")}, nil)
	a := sim.Addrs()[0]
	c := newCA(t)
	job := provisionJob(t, c, a, "kod-reset")
	job.Tls = &amtopsv1.TLSMaterial{KeyOnDevice: true, ChainDer: job.Tls.ChainDer}
	ex := phase2.NewExecutor(phase2.Config{
		HTTPPort: sim.HTTPPort(), TLSPort: sim.TLSPort(), CallTimeout: 5 * time.Second,
		CommitWait: 40 * time.Millisecond, CommitDeadline: 5 * time.Second, PollInterval: 20 * time.Millisecond,
		Log: zerolog.Nop(),
		SignCSR: func(ctx context.Context, csr []byte) ([]byte, [][]byte, string, error) {
			is, err := c.ca.Issue(ctx, pki.Request{Profile: pki.ProfileServerAuth, FQDN: "kod-reset.corp.example", CSR: csr})
			if err != nil {
				return nil, nil, "", err
			}
			return is.Leaf, is.Chain, is.Serial, nil
		},
	})
	if err := sim.RebootAfter(a, "GenerateKeyPair", 0); err != nil {
		t.Fatal(err)
	}
	res := ex.Run(context.Background(), job, nil)
	if res.Err == nil || res.ErrorStep != phase2.StepInstallKey || res.Permanent {
		t.Fatalf("attempt 1: step %q, permanent %t, %v; want a transient failure at %s", res.ErrorStep, res.Permanent, res.Err, phase2.StepInstallKey)
	}
	mustRun(t, ex, job)
}
