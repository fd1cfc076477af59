package api_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/discover"
)

// helloOf is what an agent reports for a device at ip that trusts roots.
func helloOf(ip, id string, retry uint32, roots ...[]byte) *pb.Hello {
	h := &pb.Hello{Ip: ip, Uuid: id, Version: 3, RetryCount: retry}
	for _, r := range roots {
		h.TrustedRoots = append(h.TrustedRoots, &pb.CertHash{Algorithm: pb.HashAlgorithm_HASH_ALGORITHM_SHA256, Hash: r})
	}
	return h
}

func (e *provEnv) rootHash() []byte {
	s := sha256.Sum256(e.id.Chain().Root().Raw)
	return s[:]
}

// known puts a named device of the inventory on subnet, in the "auto"
// collection (auto-provisioning) when auto.
func (e *provEnv) known(t *testing.T, host, ip, subnet string, auto bool) domain.Device {
	t.Helper()
	ctx := context.Background()
	d := domain.Device{ID: strings.ToLower(uuid.NewString()), HostName: host, Domain: "amt.test", IP: netip.MustParseAddr(ip),
		Subnet: netip.MustParsePrefix(subnet), Status: domain.StatusDetected}
	d.UUID = d.ID
	if err := e.srv.Store.PutDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	if auto {
		if err := e.srv.Store.PutCollection(ctx, domain.Collection{Name: "auto", AutoProvision: true, CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if err := e.srv.Store.AddMembers(ctx, "auto", d.ID); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func report(t *testing.T, c pb.AgentServiceClient, subnet string, hs ...*pb.Hello) *pb.ReportHellosResponse {
	t.Helper()
	resp, err := c.ReportHellos(context.Background(), &pb.ReportHellosRequest{Subnet: subnet, Hellos: hs})
	if err != nil {
		t.Fatalf("ReportHellos: %v", err)
	}
	return resp
}

func counts(r *pb.ReportHellosResponse) string {
	return fmt.Sprintf("matched %d unknown %d queued %d", r.GetMatched(), r.GetUnknown(), r.GetQueued())
}

// A Hello from a device not in the inventory records it as Detected with
// the reason, and starts nothing.
func TestReportHellosUnknownDevice(t *testing.T) {
	e := newProvEnv(t)
	const subnet = "10.9.10.0/24"
	c, _ := e.srv.Enroll(t, subnet)
	id := uuid.NewString()
	if got := counts(report(t, c, subnet, helloOf("10.9.10.7", strings.ToUpper(id), 0, e.rootHash()))); got != "matched 0 unknown 1 queued 0" {
		t.Fatalf("counts: %s", got)
	}
	d, err := e.srv.Store.GetDevice(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != domain.StatusDetected || d.HostName != "" || d.LastError != discover.UnknownHelloReason || d.Hello == nil ||
		d.Hello.Batch != "" || d.IP.String() != "10.9.10.7" || len(d.Hello.TrustedRoots) != 1 {
		t.Fatalf("unknown device recorded as %+v", d)
	}
	if ids, _ := e.srv.Store.ListBatches(context.Background(), 10); len(ids) != 0 {
		t.Fatalf("batches %v started for a device without a name", ids)
	}
}

// A Hello from a device of an auto-provisioning collection that can be
// activated starts phase 1 at once; the Hellos it repeats while the job
// runs start nothing new; one from a device outside the collection is
// only recorded.
func TestReportHellosAutoProvision(t *testing.T) {
	e := newProvEnv(t)
	ctx := context.Background()
	const subnet = "10.9.11.0/24"
	c, _ := e.srv.Enroll(t, subnet)
	auto := e.known(t, "hello1", "10.9.11.5", subnet, true)
	manual := e.known(t, "hello2", "10.9.11.6", subnet, false)
	// The auto device has a new address; the Hello's UUID finds it.
	got := report(t, c, subnet, helloOf("10.9.11.50", auto.UUID, 0, e.rootHash()), helloOf("10.9.11.6", manual.UUID, 0, e.rootHash()))
	if counts(got) != "matched 2 unknown 0 queued 1" {
		t.Fatalf("counts: %s", counts(got))
	}
	d, _ := e.srv.Store.GetDevice(ctx, auto.ID)
	if d.Hello == nil || d.Hello.Batch == "" || d.IP.String() != "10.9.11.50" || d.State != domain.ProvisioningPre ||
		d.Status != domain.StatusNotProvisioned {
		t.Fatalf("auto device after its Hello: %+v", d)
	}
	job, err := e.srv.Store.GetJob(ctx, d.Hello.Batch, domain.JobID(d.Hello.Batch, d.ID))
	if err != nil || job.State != domain.JobQueued || job.Kind != domain.KindProvision {
		t.Fatalf("hello batch job: %+v %v", job, err)
	}
	for retry := uint32(1); retry <= 3; retry++ {
		if got := counts(report(t, c, subnet, helloOf("10.9.11.50", auto.UUID, retry, e.rootHash()))); got != "matched 1 unknown 0 queued 0" {
			t.Fatalf("repeated hello %d: %s", retry, got)
		}
	}
	if ids, _ := e.srv.Store.ListBatches(ctx, 10); len(ids) != 1 {
		t.Fatalf("batches %v; want the one the first Hello started", ids)
	}
	if d2, _ := e.srv.Store.GetDevice(ctx, auto.ID); d2.Hello.Batch != d.Hello.Batch || d2.Hello.RetryCount != 3 {
		t.Fatalf("after the repeats: batch %q retry %d", d2.Hello.Batch, d2.Hello.RetryCount)
	}
	// Once that job has ended, the next Hello starts anew.
	if _, err := e.srv.Store.FinishJob(ctx, job.BatchID, job.ID, domain.JobFailed, "x", "y"); err != nil {
		t.Fatal(err)
	}
	if got := counts(report(t, c, subnet, helloOf("10.9.11.50", auto.UUID, 0, e.rootHash()))); got != "matched 1 unknown 0 queued 1" {
		t.Fatalf("hello after the job ended: %s", got)
	}
	if m, _ := e.srv.Store.GetDevice(ctx, manual.ID); m.Hello == nil || m.Hello.Batch != "" {
		t.Fatalf("device outside the collection: %+v", m.Hello)
	}
}

// A device in an auto collection whose Hello does not list the
// provisioning root is not started; the reason is on the device.
func TestReportHellosNotReady(t *testing.T) {
	e := newProvEnv(t)
	const subnet = "10.9.12.0/24"
	c, _ := e.srv.Enroll(t, subnet)
	d := e.known(t, "hello3", "10.9.12.5", subnet, true)
	other := sha256.Sum256([]byte("another root"))
	if got := counts(report(t, c, subnet, helloOf("10.9.12.5", d.UUID, 0, other[:]))); got != "matched 1 unknown 0 queued 0" {
		t.Fatalf("counts: %s", got)
	}
	got, _ := e.srv.Store.GetDevice(context.Background(), d.ID)
	if got.LastErrorStep != "check-activation" || !strings.Contains(got.LastError, "no provisioning root matches any of the 1 hashes the device trusts") {
		t.Fatalf("device not ready recorded as %q at %q", got.LastError, got.LastErrorStep)
	}
}

// An agent speaks for its own subnets only: a Hello naming a device of
// another subnet leaves it where it is, and a sender outside the
// reported subnet refuses the whole report.
func TestReportHellosForeign(t *testing.T) {
	e := newProvEnv(t)
	ctx := context.Background()
	const mine, theirs = "10.9.13.0/24", "10.9.14.0/24"
	c, _ := e.srv.Enroll(t, mine)
	d := e.known(t, "hello4", "10.9.14.5", theirs, true)
	if got := counts(report(t, c, mine, helloOf("10.9.13.5", d.UUID, 0, e.rootHash()))); got != "matched 0 unknown 0 queued 0" {
		t.Fatalf("counts: %s", got)
	}
	got, _ := e.srv.Store.GetDevice(ctx, d.ID)
	if got.Subnet.String() != theirs || got.IP.String() != "10.9.14.5" || got.Hello != nil {
		t.Fatalf("foreign device changed: %s %s %+v", got.Subnet, got.IP, got.Hello)
	}
	for _, tc := range []struct {
		name, subnet string
		h            *pb.Hello
		code         codes.Code
		field        string
	}{
		{"sender outside the subnet", mine, helloOf("10.9.14.9", uuid.NewString(), 0), codes.InvalidArgument, "hellos.ip"},
		{"not an address", mine, helloOf("nope", uuid.NewString(), 0), codes.InvalidArgument, "hellos.ip"},
		{"bad uuid", mine, helloOf("10.9.13.9", "xyz", 0), codes.InvalidArgument, "hellos.uuid"},
		{"bad hash", mine, helloOf("10.9.13.9", uuid.NewString(), 0, []byte{1, 2}), codes.InvalidArgument, "hellos.trusted_roots"},
		{"subnet not served", theirs, helloOf("10.9.14.9", uuid.NewString(), 0), codes.PermissionDenied, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.ReportHellos(ctx, &pb.ReportHellosRequest{Subnet: tc.subnet, Hellos: []*pb.Hello{tc.h}})
			if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("ReportHellos = %v, want %s naming %q", err, tc.code, tc.field)
			}
		})
	}
}

// A storm of Hellos (a whole site powering on: 2,000 devices, each
// twice in one report, 200 of them in an auto-provisioning collection)
// is recorded in bounded time; the duplicates count once and the known
// devices start one batch.
func TestReportHellosStorm(t *testing.T) {
	e := newProvEnv(t)
	ctx := context.Background()
	const subnet = "10.20.0.0/20"
	c, _ := e.srv.Enroll(t, subnet)
	const devices, repeats, known = 2000, 2, 200
	hs := make([]*pb.Hello, 0, devices*repeats)
	ids := make([]string, devices)
	ip := func(i int) string { return fmt.Sprintf("10.20.%d.%d", i/250, 1+i%250) }
	for i := range ids {
		ids[i] = uuid.NewString()
		if i < known {
			ids[i] = e.known(t, fmt.Sprintf("storm%d", i), ip(i), subnet, true).UUID
		}
	}
	for r := range repeats {
		for i, id := range ids {
			hs = append(hs, helloOf(ip(i), id, uint32(r), e.rootHash()))
		}
	}
	start := time.Now()
	got := report(t, c, subnet, hs...)
	took := time.Since(start)
	if want := fmt.Sprintf("matched %d unknown %d queued %d", known, devices-known, known); counts(got) != want {
		t.Fatalf("counts: %s, want %s", counts(got), want)
	}
	t.Logf("%d Hellos (%d devices, %d started) recorded in %s", len(hs), devices, known, took)
	if took > 30*time.Second {
		t.Fatalf("storm took %s", took)
	}
	d, err := e.srv.Store.GetDevice(ctx, strings.ToLower(ids[devices-1]))
	if err != nil || d.Hello == nil || d.Hello.RetryCount != repeats-1 {
		t.Fatalf("last device: %+v %v", d.Hello, err)
	}
	first, _ := e.srv.Store.GetDevice(ctx, ids[0])
	b, err := e.srv.Store.GetBatch(ctx, first.Hello.Batch)
	if err != nil || b.Total != known || b.Origin != discover.OriginHello {
		t.Fatalf("hello batch %+v %v; want one of %d devices", b, err, known)
	}
}
