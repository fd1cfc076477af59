package jobs

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/amtops/amtops/agent/phase2"
	"github.com/amtops/amtops/internal/amtsim"
	"github.com/amtops/amtops/internal/amtsim/amtsimtest"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/wire"
	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// The day-2 pipeline minus the gRPC hop: the phase-1 handler (real CA,
// real Samba, real Redis), the phase-2 job taken from the lease queue, the
// agent's executor against the AMT simulator, and the result recorded as
// the AgentService records it. What is checked is the state each peer is
// left in: the simulator's NVRAM, the CA's records and CRL, the AD objects.

const simPassword = "P@ssw0rd!" // the fixture's provisioning password

type pipeline struct {
	*fixture
	ad  adEnv
	sim *amtsim.Sim
	ex  *phase2.Executor
	n   int
}

func newPipeline(t *testing.T, devices int, overrides map[int]amtsim.Override) *pipeline {
	t.Helper()
	ad := newADEnv(t)
	p := &pipeline{fixture: newFixture(t, ad.dir, Site{}), ad: ad}
	// SP2 client certificates for a wired 802.1X network (S3, S14).
	p.prov.site.Networks.Wired8021X = true
	p.sim = startSim(t, devices, overrides)
	p.ex = phase2.NewExecutor(phase2.Config{HTTPPort: p.sim.HTTPPort(), TLSPort: p.sim.TLSPort(),
		CallTimeout: 5 * time.Second, CommitWait: 40 * time.Millisecond, CommitDeadline: 5 * time.Second,
		PollInterval: 20 * time.Millisecond, Log: zerolog.Nop()})
	return p
}

// startSim runs a simulator; overrides are keyed by device index.
func startSim(t *testing.T, devices int, overrides map[int]amtsim.Override) *amtsim.Sim {
	t.Helper()
	return amtsimtest.Start(t, amtsim.Config{Devices: devices, Kind: amtsim.KindMEBx, Password: simPassword, CommitDelay: 30 * time.Millisecond}, overrides)
}

// simDevice registers the simulator's i-th controller as a site device
// with a fresh name and its Windows computer object in AD.
func (p *pipeline) simDevice(t *testing.T, i int) domain.Device {
	t.Helper()
	a := p.sim.Addrs()[i]
	st, ok := p.sim.Device(a)
	if !ok {
		t.Fatalf("no simulated device %s", a)
	}
	name := randName(t)
	p.ad.addComputer(t, name)
	d := domain.Device{ID: "dev-" + strings.ToLower(name), UUID: st.UUID, HostName: strings.ToLower(name), Domain: "amt.test",
		IP: a, Subnet: netip.PrefixFrom(a, 24).Masked(), Status: domain.StatusNotProvisioned}
	if err := p.store.PutDevice(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	return d
}

// run does one operation on d through both phases and records its result;
// it returns phase 1's error or phase 2's result.
func (p *pipeline) run(t *testing.T, d domain.Device, kind domain.JobKind, opts map[string]string) (phase2.Result, error) {
	t.Helper()
	ctx := context.Background()
	p.n++
	batch := "e" + string(rune('a'+p.n%26)) + strings.ToLower(randName(t))
	task := p.task(t, batch, d, kind)
	task.Options = opts
	if err := p.prov.Handle(ctx, task); err != nil {
		return phase2.Result{}, err
	}
	got, err := p.queue.Lease(ctx, "agent-1", []netip.Prefix{d.Subnet}, 10, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].JobID != task.JobID {
		t.Fatalf("leased %d jobs, want exactly %s", len(got), task.JobID)
	}
	var job pb.Phase2Job
	if err := proto.Unmarshal(got[0].Payload, &job); err != nil {
		t.Fatal(err)
	}
	res := p.ex.Run(ctx, &job, nil)
	if res.Err == nil {
		p.record(t, task, got[0], res)
	}
	return res, nil
}

// mustRun is run that expects both phases to succeed.
func (p *pipeline) mustRun(t *testing.T, d domain.Device, kind domain.JobKind, opts map[string]string) phase2.Result {
	t.Helper()
	res, err := p.run(t, d, kind, opts)
	if err != nil {
		t.Fatalf("%s phase 1: %v", kind, err)
	}
	if res.Err != nil {
		t.Fatalf("%s phase 2: step %s: %v", kind, res.ErrorStep, res.Err)
	}
	return res
}

// record applies a successful result as the agent service does.
func (p *pipeline) record(t *testing.T, task Task, l domain.Leased, res phase2.Result) {
	t.Helper()
	if res.Err != nil {
		t.Fatalf("recording a failed result: %v", res.Err)
	}
	already, err := p.prov.Complete(context.Background(), "agent-1", domain.LeaseRef{Subnet: l.Subnet, JobID: l.JobID, Token: l.Token}, Result{Outcome: domain.ResultSucceeded, Facts: wire.FactsFrom(res.Facts),
		Warnings: res.Warnings})
	if err != nil || already {
		t.Fatalf("complete %s: already %t, %v", l.JobID, already, err)
	}
}

// certs returns the device's certificate records of purpose, checking
// that the CA agrees with each on revocation.
func (p *pipeline) certs(t *testing.T, deviceID string, purpose domain.CertPurpose) (live, revoked []domain.CertificateRecord) {
	t.Helper()
	all, err := p.store.CertificatesByDevice(context.Background(), deviceID)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range all {
		rec, err := p.ca.Lookup(context.Background(), c.Serial)
		if err != nil {
			t.Fatalf("CA does not know %s: %v", c.Serial, err)
		}
		if rec.Revoked == c.Status.Live() {
			t.Fatalf("site and CA disagree on %s: site %s, CA revoked %t", c.Serial, c.Status, rec.Revoked)
		}
		if c.Purpose != purpose {
			continue
		}
		if c.Status.Live() {
			live = append(live, c)
		} else {
			revoked = append(revoked, c)
		}
	}
	return live, revoked
}

// spns lists every SPN registered anywhere in the domain for fqdn.
func (p *pipeline) spns(t *testing.T, fqdn string) []string {
	t.Helper()
	res, err := p.ad.conn.Search(ldap.NewSearchRequest(p.ad.peer.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		"(servicePrincipalName=HTTP/"+ldap.EscapeFilter(fqdn)+"*)", []string{"servicePrincipalName"}, nil))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range res.Entries {
		out = append(out, e.GetAttributeValues("servicePrincipalName")...)
	}
	return out
}

func (p *pipeline) state(t *testing.T, d domain.Device) amtsim.DeviceState {
	t.Helper()
	st, ok := p.sim.Device(d.IP)
	if !ok {
		t.Fatalf("no simulated device %s", d.IP)
	}
	return st
}

func (p *pipeline) device(t *testing.T, id string) domain.Device {
	t.Helper()
	d, err := p.store.GetDevice(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// leaf is the DER of the certificate of record c, as phase 1 kept it.
func (p *pipeline) leaf(t *testing.T, c domain.CertificateRecord) []byte {
	t.Helper()
	b, err := p.store.GetSecret(context.Background(), certSecret(c.JobID, c.Purpose))
	if err != nil {
		t.Fatalf("issued %s: %v", c.Serial, err)
	}
	var is issued
	if err := json.Unmarshal(b, &is); err != nil {
		t.Fatal(err)
	}
	return is.Leaf
}

// hasCert reports whether the device holds the certificate of record c.
func (p *pipeline) hasCert(t *testing.T, st amtsim.DeviceState, c domain.CertificateRecord) bool {
	t.Helper()
	leaf := p.leaf(t, c)
	for _, dc := range st.Certificates {
		if bytes.Equal(dc.DER, leaf) {
			return true
		}
	}
	return false
}

func ha1hex(user, realm, pw string) string {
	s := md5.Sum([]byte(user + ":" + realm + ":" + pw))
	return hex.EncodeToString(s[:])
}

// S12–S15: an update applies a changed site setting, re-publishes a
// missing AD account with its SPNs, keeps the server certificate and
// replaces the 802.1X client certificate — and over an 802.1X wired link
// only once the administrator confirms, refusing before anything is revoked.
func TestUpdateEndToEnd(t *testing.T) {
	p := newPipeline(t, 1, nil)
	ctx := context.Background()
	d := p.simDevice(t, 0)
	p.mustRun(t, d, domain.KindProvision, nil)
	d = p.device(t, d.ID)
	if d.Link != domain.LinkWired8021X {
		t.Fatalf("link after provisioning with a wired 802.1X profile: %q, want %q", d.Link, domain.LinkWired8021X)
	}
	server0, _ := p.certs(t, d.ID, domain.PurposeServerAuth)
	client0, _ := p.certs(t, d.ID, domain.Purpose8021X)
	if len(server0) != 1 || len(client0) != 1 {
		t.Fatalf("after provisioning: %d live server, %d live 802.1X certificates; want 1 and 1", len(server0), len(client0))
	}
	before := p.state(t, d)
	if before.KVM != p.prov.site.Settings.KVM {
		t.Fatalf("provisioning left KVM %t, site says %t", before.KVM, p.prov.site.Settings.KVM)
	}

	// Site settings change; provisioned controllers keep the old ones (S12).
	p.prov.site.Settings.KVM = !p.prov.site.Settings.KVM
	p.prov.site.Settings.SerialOverLAN = !p.prov.site.Settings.SerialOverLAN
	// And the AMT account disappeared from AD (S13: publish it if missing).
	if ok, err := p.ad.dir.Delete(ctx, d.HostName); err != nil || !ok {
		t.Fatalf("delete AMT account: %v %v", ok, err)
	}
	if got := p.spns(t, d.FQDN()); len(got) != 0 {
		t.Fatalf("SPNs left after deleting the account: %v", got)
	}

	// Unconfirmed over an 802.1X link: refused for good in phase 1,
	// nothing revoked, nothing queued, the device untouched.
	_, err := p.run(t, d, domain.KindUpdate, nil)
	if !errors.Is(err, domain.ErrConfirm8021X) || !domain.IsPermanent(err) {
		t.Fatalf("unconfirmed update over 802.1X: %v, want permanent ErrConfirm8021X", err)
	}
	if live, _ := p.certs(t, d.ID, domain.Purpose8021X); len(live) != 1 || live[0].Serial != client0[0].Serial {
		t.Fatalf("a refused update changed the 802.1X certificates: live %v", live)
	}
	if st := p.state(t, d); st.KVM != before.KVM || st.SOL != before.SOL {
		t.Fatal("a refused update changed the device")
	}

	res := p.mustRun(t, d, domain.KindUpdate, map[string]string{OptionConfirm8021X: "true"})
	st := p.state(t, d)
	if st.KVM != p.prov.site.Settings.KVM || st.SOL != p.prov.site.Settings.SerialOverLAN {
		t.Errorf("update did not apply the changed settings: KVM %t SOL %t", st.KVM, st.SOL)
	}
	if !strings.Contains(strings.Join(res.Warnings, ";"), phase2.WarnConfirmed8021X) {
		t.Errorf("warnings %q: the confirmed 802.1X change is not recorded", res.Warnings)
	}
	if got := p.device(t, d.ID).Warnings; !strings.Contains(strings.Join(got, ";"), phase2.WarnConfirmed8021X) {
		t.Errorf("device warnings %q", got)
	}
	// S14: the server certificate stays, live and served.
	server1, serverRevoked := p.certs(t, d.ID, domain.PurposeServerAuth)
	if len(server1) != 1 || server1[0].Serial != server0[0].Serial || len(serverRevoked) != 0 {
		t.Errorf("server certificates after update: live %v revoked %v; want the same one live", server1, serverRevoked)
	}
	if !p.hasCert(t, st, server0[0]) || !st.TLS.ServingTLS || !bytes.Equal(st.TLS.ServedChain[0], p.leaf(t, server0[0])) {
		t.Errorf("the device no longer serves its server certificate")
	}
	// S14: the 802.1X client certificate is replaced: old one revoked
	// (superseded), the new one live and the one 802.1X uses.
	client1, clientRevoked := p.certs(t, d.ID, domain.Purpose8021X)
	if len(client1) != 1 || client1[0].Serial == client0[0].Serial {
		t.Fatalf("802.1X certificates after update: live %v, want one new", client1)
	}
	if len(clientRevoked) != 1 || clientRevoked[0].Serial != client0[0].Serial {
		t.Fatalf("revoked 802.1X certificates %v, want the first", clientRevoked)
	}
	if rec, err := p.ca.Lookup(ctx, client0[0].Serial); err != nil || !rec.Revoked || rec.Reason != domain.ReasonSuperseded {
		t.Errorf("old client certificate at the CA: %+v %v, want revoked as superseded", rec, err)
	}
	if !p.hasCert(t, st, client1[0]) {
		t.Error("the new 802.1X client certificate is not on the device")
	}
	var clientDER []byte
	for _, c := range st.Certificates {
		if c.Handle == st.IEEE8021.ClientCertHandle {
			clientDER = c.DER
		}
	}
	if clientDER == nil || !st.IEEE8021.Enabled {
		t.Fatalf("802.1X %+v uses no client certificate", st.IEEE8021)
	}
	if !bytes.Equal(clientDER, p.leaf(t, client1[0])) {
		t.Error("802.1X does not use the new client certificate")
	}
	// S13: the account is back, with its SPNs.
	if n := len(p.ad.accounts(t, d.UUID)); n != 1 {
		t.Errorf("%d AMT accounts after update, want 1", n)
	}
	if got := p.spns(t, d.FQDN()); len(got) != 4 {
		t.Errorf("SPNs after update: %v, want the four port-qualified ones", got)
	}
	if !st.Kerberos.Enabled {
		t.Error("Kerberos off after update")
	}
}

// S16–S19: each removal option leaves exactly its documented state on the
// controller, at the CA and in AD, and marks the device as asked.
func TestRemoveEndToEnd(t *testing.T) {
	cases := []struct {
		name         string
		kind         domain.JobKind
		opts         map[string]string
		wantState    int
		keepIdentity bool
		suppressed   bool
		renamePend   bool
	}{
		{name: "config only", kind: domain.KindRemoveConfig, wantState: 1, keepIdentity: true},
		{name: "config only, suppress auto-provisioning", kind: domain.KindRemoveConfig,
			opts: map[string]string{OptionSuppressAuto: "true"}, wantState: 1, keepIdentity: true, suppressed: true},
		{name: "config and identity", kind: domain.KindRemoveAll, wantState: 0},
		{name: "rename begin", kind: domain.KindRemoveAll, opts: map[string]string{OptionRename: "true"},
			wantState: 0, suppressed: true, renamePend: true},
	}
	p := newPipeline(t, len(cases), nil)
	ctx := context.Background()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := p.simDevice(t, i)
			p.mustRun(t, d, domain.KindProvision, nil)
			if n := len(p.ad.accounts(t, d.UUID)); n != 1 {
				t.Fatalf("%d AMT accounts after provisioning", n)
			}
			p.mustRun(t, p.device(t, d.ID), tc.kind, tc.opts)

			st := p.state(t, d)
			if st.ProvisioningState != tc.wantState {
				t.Errorf("provisioning state %d, want %d", st.ProvisioningState, tc.wantState)
			}
			// Configuration is gone either way.
			if st.TLS.Enabled || st.TLS.ServingTLS || st.Kerberos.Enabled || st.KVM || st.IDER || st.SOL || st.WebUI ||
				st.IEEE8021.ClientCertHandle >= 0 || len(st.Certificates) != 0 || len(st.Keys) != 0 {
				t.Errorf("configuration left: TLS %t/%t krb %t KVM %t IDER %t SOL %t webUI %t 802.1X client %d certs %d keys %d",
					st.TLS.Enabled, st.TLS.ServingTLS, st.Kerberos.Enabled, st.KVM, st.IDER, st.SOL, st.WebUI,
					st.IEEE8021.ClientCertHandle, len(st.Certificates), len(st.Keys))
			}
			for _, u := range st.Users {
				if !u.System {
					t.Errorf("user account left: %+v", u)
				}
			}
			// Identity: name, domain and admin account kept only by "config only".
			kept := st.HostName == d.HostName && st.DomainName == d.Domain
			if kept != tc.keepIdentity {
				t.Errorf("identity %q.%q kept=%t, want kept=%t", st.HostName, st.DomainName, kept, tc.keepIdentity)
			}
			if !tc.keepIdentity && (st.HostName != "" || st.DomainName != "") {
				t.Errorf("identity left: %q.%q", st.HostName, st.DomainName)
			}
			// Partial removal keeps the admin account, and the site its
			// password; a full one returns the device to factory state, so
			// the site drops the password it no longer protects.
			admin, err := p.store.GetSecret(ctx, adminPasswordSecret(d.ID))
			if tc.keepIdentity != (err == nil) {
				t.Fatalf("admin password secret after removal: %v (identity kept %t)", err, tc.keepIdentity)
			}
			// Fully removed, the device's next login is its MEBx password
			// (a remote configuration after its next Hello).
			want := st.MEBxHA1
			if tc.keepIdentity {
				want = ha1hex("admin", st.DigestRealm, string(admin))
			}
			if st.AdminHA1 != want {
				t.Errorf("admin password after removal is not the expected one (identity kept %t)", tc.keepIdentity)
			}
			// S17: every certificate issued for the device is revoked.
			for _, purpose := range []domain.CertPurpose{domain.PurposeServerAuth, domain.Purpose8021X} {
				live, revoked := p.certs(t, d.ID, purpose)
				if len(live) != 0 || len(revoked) != 1 {
					t.Errorf("%s certificates: %d live, %d revoked; want 0 and 1", purpose, len(live), len(revoked))
				}
				for _, c := range revoked {
					if rec, err := p.ca.Lookup(ctx, c.Serial); err != nil || rec.Reason != domain.ReasonCessationOfOperation {
						t.Errorf("%s at the CA: %+v %v, want revoked for cessation of operation", c.Serial, rec, err)
					}
				}
			}
			// S17: the AMT account and its SPNs are gone from AD.
			if n := len(p.ad.accounts(t, d.UUID)); n != 0 {
				t.Errorf("%d AMT accounts left", n)
			}
			if got := p.spns(t, d.FQDN()); len(got) != 0 {
				t.Errorf("SPNs left: %v", got)
			}
			// S18, S19: the marks, and what they do to the next sweep or provisioning.
			after := p.device(t, d.ID)
			if after.Status != domain.StatusNotProvisioned || after.SuppressAutoProvision != tc.suppressed || after.RenamePending != tc.renamePend {
				t.Errorf("device status %s suppressed %t rename-pending %t; want not-provisioned, %t, %t",
					after.Status, after.SuppressAutoProvision, after.RenamePending, tc.suppressed, tc.renamePend)
			}
			if after.AutoProvisionable() == (tc.suppressed || tc.renamePend) {
				t.Errorf("AutoProvisionable %t after %s", after.AutoProvisionable(), tc.name)
			}
			_, err = p.run(t, after, domain.KindProvision, nil)
			if tc.renamePend {
				if !errors.Is(err, domain.ErrRenamePending) || !domain.IsPermanent(err) {
					t.Errorf("provisioning a rename-pending device: %v, want permanent ErrRenamePending", err)
				}
				if live, _ := p.certs(t, d.ID, domain.PurposeServerAuth); len(live) != 0 {
					t.Error("a certificate was issued for a rename-pending device")
				}
			} else if err != nil {
				t.Errorf("re-provisioning after %s: %v", tc.name, err)
			}
		})
	}
}
