package site_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	"github.com/amtops/amtops/internal/amt"
	"github.com/amtops/amtops/internal/amtsim"
	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/secrets"
	"github.com/amtops/amtops/internal/site"
	"github.com/amtops/amtops/internal/testpeers"
	"github.com/amtops/amtops/internal/wsman"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/store"
)

// e2e is a running site plus a direct view of its store, used only to
// read what the site sealed (passwords, Kerberos keys) for the proofs.
type e2e struct {
	*site.Site
	ctx   context.Context
	st    *store.Store
	roots *x509.CertPool // the built-in CA's root, from /ca.pem
	dir   string
	cfg   site.Config
}

// startMEBx starts a site whose devices were set up by hand in the MEBx
// (state 2, ACM, the admin password the site knows).
func startMEBx(t *testing.T, devices int, faults string, withAD bool) *e2e {
	t.Helper()
	return startWith(t, site.Config{Devices: devices, Profile: amtsim.KindMEBx}, faults, withAD)
}

func startWith(t *testing.T, cfg site.Config, faults string, withAD bool) *e2e {
	t.Helper()
	redisAddr := testpeers.Redis(t)
	fs, err := amtsim.ParseFaultSpec(faults)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The AMT ports are per-test so that tests in other packages running
	// at the same time on 127.0.0.0/8 cannot collide with this fleet.
	cfg.Subnets, cfg.RedisAddr, cfg.Faults, cfg.Seed, cfg.Dir = 2, redisAddr, fs, 7, dir
	cfg.HTTPPort, cfg.TLSPort = 26992, 26993
	tweak := cfg.Server
	cfg.Server = func(c *config.Server) {
		c.Phase2.RetryDelay, c.Phase2.ReapEvery, c.Phase2.LeaseTTL = time.Second, 500*time.Millisecond, 20*time.Second
		c.Phase1.MaxRetry = 3
		if tweak != nil {
			tweak(c)
		}
	}
	if withAD {
		peer := testpeers.Samba(t)
		cfg.Directory = config.Directory{URL: peer.URL, CAFile: peer.CAFile, BindDN: peer.BindDN, BaseDN: peer.BaseDN,
			AccountOU: peer.OU(t), Realm: peer.Realm, Timeout: 10 * time.Second, PoolSize: 4}
		cfg.DirectoryPassword = peer.Password
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	s, err := site.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { _ = rdb.Close() })
	sealer, err := secrets.LoadKey(filepath.Join(dir, "server", "site.key"))
	if err != nil {
		t.Fatal(err)
	}
	e := &e2e{Site: s, ctx: ctx, st: store.New(rdb, sealer, store.Options{}), dir: dir, cfg: cfg}
	resp, err := http.Get("http://" + s.HTTPAddr + "/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	pemCA, _ := io.ReadAll(resp.Body)
	e.roots = x509.NewCertPool()
	if !e.roots.AppendCertsFromPEM(pemCA) {
		t.Fatalf("/ca.pem: no certificate in %q", pemCA)
	}
	return e
}

// provisionAll discovers the fleet and provisions it in one batch.
func (e *e2e) provisionAll(t *testing.T) *pb.Batch {
	t.Helper()
	if _, err := e.Discover(e.ctx); err != nil {
		t.Fatal(err)
	}
	b, err := e.Run(e.ctx, pb.JobKind_JOB_KIND_PROVISION, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !b.GetDone() || b.GetSucceeded()+b.GetFailed()+b.GetCancelled() != b.GetTotal() {
		t.Fatalf("batch not finished: %+v", b)
	}
	return b
}

func (e *e2e) devices(t *testing.T) []*pb.Device {
	t.Helper()
	resp, err := e.Admin.ListDevices(e.ctx, &pb.ListDevicesRequest{Collection: site.Collection, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetDevices()
}

func (e *e2e) simState(t *testing.T, ip string) amtsim.DeviceState {
	t.Helper()
	a := netip.MustParseAddr(ip)
	for _, s := range e.Sims {
		if st, ok := s.Device(a); ok {
			return st
		}
	}
	t.Fatalf("no simulated device at %s", ip)
	return amtsim.DeviceState{}
}

// dialAMT connects to the device's TLS port verifying the site root and
// the FQDN, as a management console would.
func (e *e2e) dialAMT(d *pb.Device, user, password string) (*amt.Client, error) {
	ws, err := wsman.New(wsman.Config{Address: d.GetIp() + ":26993", Username: user, Password: password, Timeout: 10 * time.Second,
		TLS: &wsman.TLSConfig{RootCAs: e.roots, ServerName: d.GetFqdn()}})
	if err != nil {
		return nil, err
	}
	return amt.New(ws), nil
}

// checkProvisioned proves S7–S10 on one device from the simulator's state
// and from the outside.
func (e *e2e) checkProvisioned(t *testing.T, d *pb.Device, site config.Server, kerberos bool) {
	t.Helper()
	st := e.simState(t, d.GetIp())
	fqdn := d.GetFqdn()
	if st.HostName+"."+st.DomainName != fqdn { // S8
		t.Errorf("%s: AMT FQDN %s.%s, want %s", d.GetId(), st.HostName, st.DomainName, fqdn)
	}
	// S8 clock: AMT's time sync has one-second resolution and a call can
	// take seconds on a loaded 2-core machine; Kerberos tolerates minutes.
	if off := st.ClockOffset.Abs(); off > 5*time.Second {
		t.Errorf("%s: clock off by %v", d.GetId(), off)
	}
	// S7: the chain is installed and TLS on 16993 serves the leaf issued
	// for the FQDN; dialAMT verifies chain and name.
	if !st.TLS.Enabled || !st.TLS.ServingTLS || len(st.TLS.ServedChain) == 0 {
		t.Errorf("%s: TLS state %+v", d.GetId(), st.TLS)
	} else if leaf, err := x509.ParseCertificate(st.TLS.ServedChain[0]); err != nil || leaf.VerifyHostname(fqdn) != nil {
		t.Errorf("%s: served leaf does not name %s: %v", d.GetId(), fqdn, err)
	} else if rec, err := e.st.CertificateBySerial(e.ctx, leaf.SerialNumber.String()); err != nil || rec.Status != domain.CertInstalled || rec.DeviceID != d.GetId() {
		t.Errorf("%s: served certificate %s recorded as %+v (%v), want installed for this device", d.GetId(), leaf.SerialNumber, rec, err)
	}
	want := site.AMT.Settings // S9
	if st.IDER != want.IDERedirection || st.SOL != want.SerialOverLAN || st.KVM != want.KVM || st.Ping != want.PingResponse || st.WebUI != want.WebUI {
		t.Errorf("%s: settings ider=%v sol=%v kvm=%v ping=%v webui=%v, want %+v", d.GetId(), st.IDER, st.SOL, st.KVM, st.Ping, st.WebUI, want)
	}
	// S10: the password the device had (the MEBx-set admin password, or
	// the factory MEBx password of a remote configuration) is refused and
	// the sealed new one works.
	// The stored names (server/jobs/secrets.go): a rename would orphan them.
	pw, err := e.st.GetSecret(e.ctx, "device/"+d.GetId()+"/admin")
	if err != nil {
		t.Errorf("%s: admin password: %v", d.GetId(), err)
		return
	}
	provisioning, err := e.provisioningPassword()
	if err != nil {
		t.Fatal(err)
	}
	for _, old := range []string{provisioning, "admin"} {
		if c, err := e.dialAMT(d, "admin", old); err == nil {
			if _, err := c.GeneralSettings(e.ctx); !errors.Is(err, wsman.ErrUnauthorized) {
				t.Errorf("%s: an old password still works: %v", d.GetId(), err)
			}
		}
	}
	c, err := e.dialAMT(d, "admin", string(pw))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GeneralSettings(e.ctx); err != nil {
		t.Errorf("%s: the new admin password over TLS: %v", d.GetId(), err)
	}
	for _, u := range st.Users { // S10: no other users
		if !u.System && u.Name != "" && u.Name != "admin" {
			t.Errorf("%s: user %q left on the device", d.GetId(), u.Name)
		}
	}
	if !kerberos {
		if st.Kerberos.Enabled {
			t.Errorf("%s: Kerberos on without a directory", d.GetId())
		}
		return
	}
	b, err := e.st.GetSecret(e.ctx, "device/"+d.GetId()+"/kerberos")
	if err != nil {
		t.Errorf("%s: kerberos key: %v", d.GetId(), err)
		return
	}
	k := &pb.Kerberos{}
	if err := proto.Unmarshal(b, k); err != nil {
		t.Fatal(err)
	}
	if !st.Kerberos.Enabled || st.Kerberos.KeyVersion != int(k.GetKeyVersion()) {
		t.Errorf("%s: Kerberos %+v, want on with key version %d", d.GetId(), st.Kerberos, k.GetKeyVersion())
	}
	// AES (AMT 8+): the device derives its keys from the AMT account's
	// passphrase, salt and iteration count — the inputs AD derived the
	// account's keys from — and holds no AES key as MasterKey. RC4: the
	// 16-byte key.
	if k.GetPassphrase() != "" {
		sum := sha256.Sum256([]byte(k.GetPassphrase()))
		if !st.Kerberos.PassphraseSet || st.Kerberos.Salt != k.GetSalt() || st.Kerberos.IterationCount != int(k.GetIterationCount()) ||
			st.Kerberos.PassphraseSHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: Kerberos AES inputs %+v, want phase 1's passphrase, salt %q and %d iterations", d.GetId(), st.Kerberos, k.GetSalt(), k.GetIterationCount())
		}
	}
	if mk := st.Kerberos.MasterKeyHex; mk != "" && mk != hex.EncodeToString(k.GetRc4Key()) || mk == "" && !st.Kerberos.PassphraseSet {
		t.Errorf("%s: MasterKey %q, want empty or the 16-byte RC4 key", d.GetId(), mk)
	}
}

func (e *e2e) provisioningPassword() (string, error) {
	b, err := os.ReadFile(filepath.Join(e.dir, "server", "provisioning.password"))
	return string(b), err
}

// TestProvisionFleet is the main job end to end on devices that were
// set up by hand in the MEBx (TestActivateFactoryFleet has factory ones):
// real Redis, the site server, two agents, 60 simulated controllers on
// two subnets, the built-in CA and Samba AD. Every device ends
// provisioned and the simulator shows S7–S10 on each.
func TestProvisionFleet(t *testing.T) {
	const n = 60
	e := startMEBx(t, n, "", true)
	b := e.provisionAll(t)
	if b.GetSucceeded() != n {
		failures, _ := e.Failures(e.ctx, b.GetId())
		t.Fatalf("provisioned %d of %d; failures %v", b.GetSucceeded(), n, failures)
	}
	// What an operator's dashboard sees.
	resp, err := http.Get("http://" + e.HTTPAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`amtops_devices{status="provisioned"} 60`, `amtops_agents 2`, `amtops_store_up 1`,
		`amtops_phase2_jobs{state="pending",subnet="127.61.0.0/24"} 0`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	cfg := config.DefaultServer()
	for _, d := range e.devices(t) {
		if d.GetStatus() != pb.DeviceStatus_DEVICE_STATUS_PROVISIONED {
			t.Errorf("%s: status %v", d.GetId(), d.GetStatus())
			continue
		}
		e.checkProvisioned(t, d, cfg, true)
	}
}

// TestProvisionFleetWithFaults injects dropped connections, HTTP 500s
// and reboots at a fixed seed, and has two controllers whose password
// the site does not know: every device ends provisioned or failed with a
// recorded reason, nothing stays in flight, and no device keeps a live
// certificate other than the one it serves.
func TestProvisionFleetWithFaults(t *testing.T) {
	const n = 50
	// About 50 WS-Man calls an attempt at a 4% fault rate fail most
	// attempts, and an unanswered write is not replayed (it may have been
	// applied): the budget is 10 attempts here, not the default 5.
	e := startWith(t, site.Config{Devices: n, Strangers: 2, Profile: amtsim.KindMEBx,
		Server: func(c *config.Server) { c.Phase2.MaxAttempts = 10 }}, "drop=0.02,http500=0.02,reboot=0.004", false)
	b := e.provisionAll(t)
	failures, err := e.Failures(e.ctx, b.GetId())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("with faults: %d provisioned, %d failed of %d; failures %v", b.GetSucceeded(), b.GetFailed(), n, failures)
	// The faults are transient and retried; only the strangers must fail.
	if b.GetSucceeded() < n-2-2 || b.GetFailed() < 2 {
		t.Fatalf("under faults %d provisioned and %d failed of %d; want at most the 2 strangers and 2 more to fail", b.GetSucceeded(), b.GetFailed(), n)
	}
	jobs, err := e.Admin.ListBatchJobs(e.ctx, &pb.ListBatchJobsRequest{BatchId: b.GetId(), Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.DefaultServer()
	for _, j := range jobs.GetJobs() {
		d, err := e.Admin.GetDevice(e.ctx, &pb.GetDeviceRequest{Id: j.GetDeviceId()})
		if err != nil {
			t.Fatal(err)
		}
		switch j.GetState() {
		case "succeeded":
			if d.GetStatus() != pb.DeviceStatus_DEVICE_STATUS_PROVISIONED {
				t.Errorf("%s: job succeeded, device %v", d.GetId(), d.GetStatus())
			}
			e.checkProvisioned(t, d, cfg, false)
		case "failed":
			if j.GetErrorStep() == "" || j.GetLastError() == "" || d.GetLastError() == "" {
				t.Errorf("%s: failed without a recorded reason: job %+v, device error %q", d.GetId(), j, d.GetLastError())
			}
		default:
			t.Errorf("%s: job left in %s", d.GetId(), j.GetState())
		}
		recs, err := e.st.CertificatesByDevice(e.ctx, d.GetId())
		if err != nil {
			t.Fatal(err)
		}
		live := 0
		for _, r := range recs {
			if r.Purpose == domain.PurposeServerAuth && r.Status != domain.CertRevoked {
				live++
				if j.GetState() == "succeeded" && r.Status != domain.CertInstalled {
					t.Errorf("%s: live certificate %s is %s, not the installed one", d.GetId(), r.Serial, r.Status)
				}
			}
		}
		if live > 1 {
			t.Errorf("%s: %d live server certificates", d.GetId(), live)
		}
	}
	q := store.NewLeaseQueue(e.st, store.QueueOptions{})
	for _, p := range e.Subnets {
		stats, err := q.Stats(e.ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if stats.Pending+stats.Leased != 0 {
			t.Errorf("subnet %s: jobs still in flight: %+v", p, stats)
		}
	}
}

// TestServerRestartMidBatch restarts the site server while a batch runs:
// agents ride it out, in-flight work resumes from Redis, and every device
// ends provisioned exactly once.
func TestServerRestartMidBatch(t *testing.T) {
	const n = 40
	e := startMEBx(t, n, "", false)
	if _, err := e.Discover(e.ctx); err != nil {
		t.Fatal(err)
	}
	b, err := e.Admin.StartBatch(e.ctx, &pb.StartBatchRequest{Kind: pb.JobKind_JOB_KIND_PROVISION, Collection: site.Collection})
	if err != nil {
		t.Fatal(err)
	}
	// Restart once some, but not all, devices are done.
	for {
		cur, err := e.Admin.GetBatch(e.ctx, &pb.GetBatchRequest{Id: b.GetId()})
		if err != nil {
			t.Fatal(err)
		}
		if cur.GetSucceeded() >= 5 {
			if cur.GetDone() {
				t.Fatal("the batch finished before the restart; the test proves nothing")
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := e.RestartServer(e.ctx); err != nil {
		t.Fatal(err)
	}
	final := e.watchThroughRestart(t, b.GetId())
	if final.GetSucceeded() != n || final.GetFailed() != 0 {
		failures, _ := e.Failures(e.ctx, b.GetId())
		t.Fatalf("after a restart: %+v; failures %v", final, failures)
	}
	for _, d := range e.devices(t) {
		e.checkProvisioned(t, d, config.DefaultServer(), false)
	}
}

// watchThroughRestart follows a batch, reconnecting while the server
// comes back.
func (e *e2e) watchThroughRestart(t *testing.T, id string) *pb.Batch {
	t.Helper()
	for range 50 {
		b, err := e.Watch(e.ctx, id, nil)
		if err == nil {
			return b
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal("could not follow the batch after the restart")
	return nil
}
