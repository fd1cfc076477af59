package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/directory"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/pki/builtin"
	"github.com/amtops/amtops/internal/secrets"
	"github.com/amtops/amtops/internal/testpeers"
	"github.com/amtops/amtops/server/store"
)

// BenchmarkPhase1 measures the real phase-1 handler end to end for one
// fresh device per iteration: revoke-superseded, the server certificate
// from the built-in CA (sealed in the store's blobs, as the server runs
// it), and, with a directory, the AMT account with its password and SPNs
// in Samba, then the phase-2 job in the lease queue. devices/s is the
// figure of issue #4; RSA-2048 key generation is most of it.
func BenchmarkPhase1(b *testing.B) {
	b.Run("builtin-nodir", func(b *testing.B) {
		benchPhase1(b, newBenchEnv(b, false))
	})
	b.Run("samba", func(b *testing.B) {
		benchPhase1(b, newBenchEnv(b, true))
	})
}

type benchEnv struct {
	st    *store.Store
	q     *store.LeaseQueue
	prov  *Service
	ad    *ldap.Conn // nil without a directory
	ou    string
	run   string // unique per benchmark run: device and batch names
	count int
}

func newBenchEnv(b *testing.B, withDir bool) *benchEnv {
	b.Helper()
	ctx := context.Background()
	var dir Directory
	e := &benchEnv{}
	if withDir {
		// Samba first: without it the sub-benchmark skips before any
		// other peer is started.
		peer := testpeers.Samba(b)
		e.ou, e.ad = peer.OU(b), peer.Conn(b)
		dc, err := directory.New(directory.Config{URLs: []string{peer.URL}, CAFile: peer.CAFile, BindDN: peer.BindDN,
			Password: secrets.Redacted(peer.Password), BaseDN: peer.BaseDN, AccountOU: e.ou, Timeout: 20 * time.Second},
			zerolog.New(io.Discard))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { dc.Close() })
		dir = dc
	}
	rdb := redis.NewClient(&redis.Options{Addr: testpeers.Redis(b)})
	b.Cleanup(func() { rdb.Close() })
	sealer, err := secrets.New(make([]byte, 32))
	if err != nil {
		b.Fatal(err)
	}
	e.st = store.New(rdb, sealer, store.Options{})
	e.q = store.NewLeaseQueue(e.st, store.QueueOptions{})
	ca, err := builtin.New(ctx, builtin.Sealed(e.st.Blobs("ca"), sealer), builtin.Config{Log: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	site := Site{ProvisioningUser: "admin", ProvisioningPassword: "P@ssw0rd!", Settings: config.DefaultServer().AMT.Settings,
		Kerberos: config.Kerberos{Enabled: withDir, MaxClockTolerance: 5}, JobDeadline: 10 * time.Minute,
		NewPassword: func() (string, error) { return "N3w-Strong!pw", nil }}
	e.prov = New(e.st, e.q, ca, dir, Config{Site: site, Actor: "bench"}, zerolog.Nop())
	var r [3]byte
	if _, err := rand.Read(r[:]); err != nil {
		b.Fatal(err)
	}
	e.run = strings.ToLower(hex.EncodeToString(r[:]))
	return e
}

// device makes a fresh device with its batch and, with a directory, the
// Windows computer object its AMT account links to (S4).
func (e *benchEnv) device(b *testing.B) Task {
	b.Helper()
	ctx := context.Background()
	e.count++
	n := e.count
	// ≤ 15 characters, so the AMT account name is not shortened.
	host := fmt.Sprintf("b%s%05d", e.run, n)
	d := domain.Device{ID: "dev-" + host, UUID: fmt.Sprintf("8c4d2e6f-0000-4000-8000-%06s%06d", e.run, n), HostName: host,
		Domain: "amt.test", IP: netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}),
		Subnet: netip.MustParsePrefix("10.0.0.0/8"), Status: domain.StatusNotProvisioned}
	if e.ad != nil {
		d.ComputerDN = "CN=" + strings.ToUpper(host) + "," + e.ou
		add := ldap.NewAddRequest(d.ComputerDN, nil)
		add.Attribute("objectClass", []string{"top", "person", "organizationalPerson", "user", "computer"})
		add.Attribute("sAMAccountName", []string{strings.ToUpper(host) + "$"})
		add.Attribute("userAccountControl", []string{"4096"})
		if err := e.ad.Add(add); err != nil {
			b.Fatalf("add computer %s: %v", d.ComputerDN, err)
		}
	}
	if err := e.st.PutDevice(ctx, d); err != nil {
		b.Fatal(err)
	}
	batch := "bench-" + e.run + fmt.Sprint(n)
	job := domain.Job{ID: domain.JobID(batch, d.ID), BatchID: batch, DeviceID: d.ID, Kind: domain.KindProvision, State: domain.JobQueued}
	if _, err := e.st.CreateBatch(ctx, domain.Batch{ID: batch, Kind: domain.KindProvision, Origin: "admin", Total: 1},
		[]domain.Job{job}); err != nil {
		b.Fatal(err)
	}
	return Task{JobID: job.ID, BatchID: batch, DeviceID: d.ID, Kind: domain.KindProvision}
}

// benchPhase1 times Handle alone; making the device, its batch and its
// Windows computer object is set-up, outside the timer.
func benchPhase1(b *testing.B, e *benchEnv) {
	ctx := context.Background()
	// One device untimed: first connections, CA load, Lua script loads.
	if err := e.prov.Handle(ctx, e.device(b)); err != nil {
		b.Fatal(err)
	}
	// Time per step, through the same hook the crash tests use.
	perStep := map[string]time.Duration{}
	var stepStart time.Time
	e.prov.afterStep = func(s string) error {
		now := time.Now()
		perStep[s] += now.Sub(stepStart)
		stepStart = now
		return nil
	}
	b.Cleanup(func() { e.prov.afterStep = nil })
	b.ReportAllocs()
	b.ResetTimer()
	var handled time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		t := e.device(b)
		b.StartTimer()
		start := time.Now()
		stepStart = start
		if err := e.prov.Handle(ctx, t); err != nil {
			b.Fatalf("device %d: %v", i, err)
		}
		handled += time.Since(start)
	}
	b.StopTimer()
	if handled > 0 {
		b.ReportMetric(float64(b.N)/handled.Seconds(), "devices/s")
	}
	for _, s := range []string{StepIssueServerCert, StepPublishAccount, StepRegisterSPNs, StepQueuePhase2} {
		b.ReportMetric(float64(perStep[s].Microseconds())/1000/float64(b.N), s+"-ms/op")
	}
	// The work really happened: one live server certificate and one
	// phase-2 job per device.
	last := e.count
	certs, err := e.st.CertificatesByDevice(ctx, fmt.Sprintf("dev-b%s%05d", e.run, last))
	if err != nil || len(certs) != 1 || !certs[0].Status.Live() || certs[0].Purpose != domain.PurposeServerAuth {
		b.Fatalf("last device's certificates: %v %v, want one live server certificate", certs, err)
	}
	if s, err := e.q.Stats(ctx, netip.MustParsePrefix("10.0.0.0/8")); err != nil || s.Pending != int64(last) {
		b.Fatalf("phase-2 jobs pending: %+v %v, want %d", s, err, last)
	}
}
