package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/api/apitest"
	"github.com/amtops/amtops/server/jobs"
)

func wantCode(t *testing.T, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("code = %v (%v), want %v", got, err, want)
	}
}

// foreignCert is a client certificate from a CA the server never saw,
// carrying the CN of a real agent.
func foreignCert(t *testing.T, cn string) *tls.Certificate {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "evil CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caT, caT, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	lt := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, lt, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestAuthentication(t *testing.T) {
	s := apitest.Start(t, apitest.Options{})
	ctx := context.Background()
	_, agentID := s.Enroll(t, "10.1.0.0/24")

	t.Run("no client certificate", func(t *testing.T) {
		_, err := s.Dial(t, nil).Heartbeat(ctx, &pb.HeartbeatRequest{})
		wantCode(t, err, codes.PermissionDenied)
	})
	t.Run("certificate from another CA", func(t *testing.T) {
		// The TLS handshake refuses it (VerifyClientCertIfGiven), so the
		// call fails before reaching the service.
		_, err := s.Dial(t, foreignCert(t, agentID)).Heartbeat(ctx, &pb.HeartbeatRequest{})
		if err == nil {
			t.Fatal("foreign certificate accepted")
		}
		if c := status.Code(err); c == codes.OK {
			t.Fatalf("code OK for foreign certificate")
		}
	})
	t.Run("reused bootstrap token", func(t *testing.T) {
		tok := s.Token(t, "10.1.0.0/24")
		_, csr := apitest.Key(t)
		c := s.Dial(t, nil)
		if _, err := c.Enroll(ctx, &pb.EnrollRequest{BootstrapToken: tok, CsrDer: csr}); err != nil {
			t.Fatalf("first enroll: %v", err)
		}
		_, err := c.Enroll(ctx, &pb.EnrollRequest{BootstrapToken: tok, CsrDer: csr})
		wantCode(t, err, codes.PermissionDenied)
	})
	t.Run("bad CSR", func(t *testing.T) {
		_, err := s.Dial(t, nil).Enroll(ctx, &pb.EnrollRequest{BootstrapToken: s.Token(t, "10.1.0.0/24"), CsrDer: []byte("junk")})
		wantCode(t, err, codes.InvalidArgument)
	})
	t.Run("renew", func(t *testing.T) {
		c, id := s.Enroll(t, "10.1.0.0/24")
		_, csr := apitest.Key(t)
		resp, err := c.Renew(ctx, &pb.RenewRequest{CsrDer: csr})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetAgentId() != id || len(resp.GetSubnets()) != 1 {
			t.Fatalf("renew = %s %v, want %s with one subnet", resp.GetAgentId(), resp.GetSubnets(), id)
		}
	})
	t.Run("heartbeat records load", func(t *testing.T) {
		c, id := s.Enroll(t, "10.1.0.0/24")
		if _, err := c.Heartbeat(ctx, &pb.HeartbeatRequest{InFlight: 3, Capacity: 8}); err != nil {
			t.Fatal(err)
		}
		a, err := s.Store.GetAgent(ctx, id)
		if err != nil || a.InFlight != 3 || a.Capacity != 8 {
			t.Fatalf("agent = %+v, %v; want 3 of 8 in flight", a, err)
		}
	})
	t.Run("deleted agent", func(t *testing.T) {
		c, id := s.Enroll(t, "10.1.0.0/24")
		if err := s.Store.DeleteAgent(ctx, id); err != nil {
			t.Fatal(err)
		}
		_, err := c.Heartbeat(ctx, &pb.HeartbeatRequest{})
		wantCode(t, err, codes.PermissionDenied)
	})
}

func TestSubnetAuthorisation(t *testing.T) {
	s := apitest.Start(t, apitest.Options{})
	ctx := context.Background()
	a, _ := s.Enroll(t, "10.1.0.0/24")
	b, _ := s.Enroll(t, "10.2.0.0/24")
	jobB := s.Job(t, "bB", "10.2.0.0/24", "10.2.0.5", domain.KindProvision)

	// A finds nothing: B's job is not on its subnets.
	resp, err := a.Lease(ctx, &pb.LeaseRequest{MaxJobs: 5, Wait: durationpb.New(100 * time.Millisecond)})
	if err != nil || len(resp.GetJobs()) != 0 {
		t.Fatalf("A lease = %v, %v; want empty", resp.GetJobs(), err)
	}
	got, err := b.Lease(ctx, &pb.LeaseRequest{MaxJobs: 5, Wait: durationpb.New(time.Second)})
	if err != nil || len(got.GetJobs()) != 1 || got.GetJobs()[0].GetLease().GetJobId() != jobB {
		t.Fatalf("B lease = %v, %v; want %s", got.GetJobs(), err, jobB)
	}
	ref := got.GetJobs()[0].GetLease()

	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"complete", func() error {
			_, err := a.Complete(ctx, &pb.CompleteRequest{Lease: ref, Result: pb.CompleteResult_COMPLETE_RESULT_SUCCEEDED})
			return err
		}},
		{"progress", func() error {
			_, err := a.ReportProgress(ctx, &pb.ReportProgressRequest{Lease: ref, Events: []*pb.OperationEvent{{Step: "x"}}})
			return err
		}},
		{"discovery", func() error {
			_, err := a.ReportDiscovery(ctx, &pb.ReportDiscoveryRequest{Subnet: "10.2.0.0/24"})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { wantCode(t, tc.call(), codes.PermissionDenied) })
	}
	// A heartbeat naming B's lease does not extend it: A is told the job
	// is not its own (lost), whatever the token.
	bSubnet := netip.MustParsePrefix("10.2.0.0/24")
	was, err := s.Queue.Job(ctx, bSubnet, ref.GetJobId())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond) // an extension would move the deadline
	hb, err := a.Heartbeat(ctx, &pb.HeartbeatRequest{Leases: []*pb.LeaseRef{ref}})
	if err != nil || len(hb.GetLostJobIds()) != 1 || hb.GetLostJobIds()[0] != ref.GetJobId() {
		t.Fatalf("A heartbeat on B's lease = %v, %v; want it reported lost", hb, err)
	}
	if qj, err := s.Queue.Job(ctx, bSubnet, ref.GetJobId()); err != nil || qj.State != "leased" || !qj.Deadline.Equal(was.Deadline) {
		t.Fatalf("B's job after A's heartbeat = %+v, %v", qj, err)
	}
	// Nothing changed: B still holds the lease and can complete.
	if _, err := b.Complete(ctx, &pb.CompleteRequest{Lease: ref, Result: pb.CompleteResult_COMPLETE_RESULT_SUCCEEDED}); err != nil {
		t.Fatalf("B complete: %v", err)
	}
}

func TestLeaseHeartbeatComplete(t *testing.T) {
	s := apitest.Start(t, apitest.Options{})
	ctx := context.Background()
	c, _ := s.Enroll(t, "10.1.0.0/24")
	jobID := s.Job(t, "b1", "10.1.0.0/24", "10.1.0.9", domain.KindProvision)
	dev := "dev-10-1-0-9"
	if err := s.Store.PutSecret(ctx, "device/"+dev+"/admin-pending", []byte("new-pw")); err != nil {
		t.Fatal(err)
	}
	if err := s.Store.PutSecret(ctx, "job/"+jobID+"/key/server-auth", []byte("key")); err != nil {
		t.Fatal(err)
	}

	resp, err := c.Lease(ctx, &pb.LeaseRequest{MaxJobs: 3, Wait: durationpb.New(time.Second)})
	if err != nil || len(resp.GetJobs()) != 1 {
		t.Fatalf("lease = %v, %v", resp.GetJobs(), err)
	}
	job := resp.GetJobs()[0]
	if job.GetDeviceId() != dev || job.GetAttempt() != 1 || job.GetLease().GetToken() == "" {
		t.Fatalf("job = %v", job)
	}
	ref := job.GetLease()
	hb, err := c.Heartbeat(ctx, &pb.HeartbeatRequest{Leases: []*pb.LeaseRef{ref, {Subnet: ref.Subnet, JobId: "b1:other", Token: "t"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(hb.GetLostJobIds()) != 1 || hb.GetLostJobIds()[0] != "b1:other" {
		t.Fatalf("lost = %v, want only b1:other", hb.GetLostJobIds())
	}
	if _, err := c.ReportProgress(ctx, &pb.ReportProgressRequest{Lease: ref, Events: []*pb.OperationEvent{
		{Step: "install-cert", Outcome: pb.Outcome_OUTCOME_OK}}}); err != nil {
		t.Fatal(err)
	}
	// A stale token changes nothing.
	_, err = c.Complete(ctx, &pb.CompleteRequest{Lease: &pb.LeaseRef{Subnet: ref.Subnet, JobId: ref.JobId, Token: "stale"}, Result: pb.CompleteResult_COMPLETE_RESULT_SUCCEEDED})
	wantCode(t, err, codes.FailedPrecondition)

	for i, want := range []bool{false, true, true} {
		r, err := c.Complete(ctx, &pb.CompleteRequest{Lease: ref, Result: pb.CompleteResult_COMPLETE_RESULT_SUCCEEDED,
			Facts: &pb.DeviceFacts{Uuid: "u-1", AmtVersion: "11.8"}})
		if err != nil {
			t.Fatalf("complete %d: %v", i, err)
		}
		if r.GetAlreadyCompleted() != want {
			t.Fatalf("complete %d: already_completed = %v, want %v", i, r.GetAlreadyCompleted(), want)
		}
	}
	b, err := s.Store.GetBatch(ctx, "b1")
	if err != nil {
		t.Fatal(err)
	}
	if b.Succeeded != 1 || b.Failed != 0 {
		t.Fatalf("batch = %+v, want exactly one success", b)
	}
	d, err := s.Store.GetDevice(ctx, dev)
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != domain.StatusProvisioned || d.ProvisionedAt.IsZero() || d.AMTVersion != "11.8" {
		t.Fatalf("device = %+v", d)
	}
	if pw, err := s.Store.GetSecret(ctx, "device/"+dev+"/admin"); err != nil || string(pw) != "new-pw" {
		t.Fatalf("admin secret = %q, %v", pw, err)
	}
	for _, name := range []string{"device/" + dev + "/admin-pending", "job/" + jobID + "/key/server-auth"} {
		if _, err := s.Store.GetSecret(ctx, name); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("secret %s still there: %v", name, err)
		}
	}
	evs, err := s.Store.Events(ctx, dev, 10)
	if err != nil || len(evs) < 2 {
		t.Fatalf("events = %v, %v", evs, err)
	}
}

func TestCompleteFailure(t *testing.T) {
	s := apitest.Start(t, apitest.Options{Jobs: jobs.Config{RetryDelay: time.Second}})
	ctx := context.Background()
	c, _ := s.Enroll(t, "10.1.0.0/24")

	for _, tc := range []struct {
		name      string
		permanent bool
		wantFail  int
	}{
		{"permanent ends the job", true, 1},
		{"transient is retried", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			batch := map[bool]string{true: "bp", false: "bt"}[tc.permanent]
			s.Job(t, batch, "10.1.0.0/24", map[bool]string{true: "10.1.0.20", false: "10.1.0.21"}[tc.permanent], domain.KindProvision)
			resp, err := c.Lease(ctx, &pb.LeaseRequest{MaxJobs: 1, Wait: durationpb.New(time.Second)})
			if err != nil || len(resp.GetJobs()) != 1 {
				t.Fatalf("lease = %v, %v", resp.GetJobs(), err)
			}
			ref := resp.GetJobs()[0].GetLease()
			if _, err := c.Complete(ctx, &pb.CompleteRequest{Lease: ref, ErrorStep: "tls", Error: "boom",
				Result: map[bool]pb.CompleteResult{true: pb.CompleteResult_COMPLETE_RESULT_FAILED_PERMANENT, false: pb.CompleteResult_COMPLETE_RESULT_FAILED}[tc.permanent]}); err != nil {
				t.Fatal(err)
			}
			b, _ := s.Store.GetBatch(ctx, batch)
			if b.Failed != tc.wantFail {
				t.Fatalf("batch failed = %d, want %d", b.Failed, tc.wantFail)
			}
			d, _ := s.Store.GetDevice(ctx, resp.GetJobs()[0].GetDeviceId())
			if d.LastErrorStep != "tls" || d.LastError != "boom" {
				t.Fatalf("device error = %q at %q", d.LastError, d.LastErrorStep)
			}
		})
	}
}

func TestLeaseAnswersBeforeDeadline(t *testing.T) {
	s := apitest.Start(t, apitest.Options{})
	c, _ := s.Enroll(t, "10.1.0.0/24")
	// The caller's deadline is shorter than the wait asked for: the
	// server must answer, empty, rather than let the call time out.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := c.Lease(ctx, &pb.LeaseRequest{MaxJobs: 1, Wait: durationpb.New(time.Minute)})
	if err != nil {
		t.Fatalf("lease: %v", err)
	}
	if len(resp.GetJobs()) != 0 {
		t.Fatalf("jobs = %v, want none", resp.GetJobs())
	}
}

func TestDiscovery(t *testing.T) {
	s := apitest.Start(t, apitest.Options{})
	ctx := context.Background()
	c, _ := s.Enroll(t, "10.3.0.0/24")
	resp, err := c.ReportDiscovery(ctx, &pb.ReportDiscoveryRequest{Subnet: "10.3.0.0/24", Devices: []*pb.DiscoveredDevice{
		{Ip: "10.3.0.1", Port_16992: true},
		{Ip: "10.3.0.2", Port_16993: true, CredentialsKnown: true, Facts: &pb.DeviceFacts{Uuid: "ABC", ProvisioningState: 0}},
		{Ip: "10.3.0.3", Port_16993: true, Facts: &pb.DeviceFacts{ProvisioningState: 2}},
		{Ip: "10.3.0.4"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetCreated() != 3 {
		t.Fatalf("created = %d, want 3", resp.GetCreated())
	}
	for _, tc := range []struct {
		id   string
		want domain.Status
	}{
		{"ip-10.3.0.1", domain.StatusDetected},
		{"abc", domain.StatusNotProvisioned},
		{"ip-10.3.0.3", domain.StatusExternallyProvisioned},
	} {
		d, err := s.Store.GetDevice(ctx, tc.id)
		if err != nil || d.Status != tc.want {
			t.Errorf("%s: status %q, %v; want %q", tc.id, d.Status, err, tc.want)
		}
	}
	// A second sweep updates rather than creates.
	resp, err = c.ReportDiscovery(ctx, &pb.ReportDiscoveryRequest{Subnet: "10.3.0.0/24", Devices: []*pb.DiscoveredDevice{{Ip: "10.3.0.1", Port_16992: true}}})
	if err != nil || resp.GetUpdated() != 1 || resp.GetCreated() != 0 {
		t.Fatalf("second sweep = %v, %v", resp, err)
	}
	_, err = c.ReportDiscovery(ctx, &pb.ReportDiscoveryRequest{Subnet: "10.3.0.0/24", Devices: []*pb.DiscoveredDevice{{Ip: "10.9.0.1", Port_16992: true}}})
	wantCode(t, err, codes.InvalidArgument)
}

// Each result the agent can send has its own effect, and a request that
// names none is refused rather than read as a failure.
func TestCompleteResults(t *testing.T) {
	s := apitest.Start(t, apitest.Options{Jobs: jobs.Config{RetryDelay: time.Hour}})
	ctx := context.Background()
	c, _ := s.Enroll(t, "10.1.0.0/24")
	for i, tc := range []struct {
		name      string
		result    pb.CompleteResult
		wantCode  codes.Code
		wantQueue string // the queue's state of the job afterwards
		wantState domain.JobState
		wantStep  string
	}{
		{"unspecified is refused", pb.CompleteResult_COMPLETE_RESULT_UNSPECIFIED, codes.InvalidArgument, "leased", domain.JobPhase2, ""},
		{"released goes back at once, uncounted", pb.CompleteResult_COMPLETE_RESULT_RELEASED, codes.OK, "pending", domain.JobPhase2, ""},
		{"cancelled ends the job", pb.CompleteResult_COMPLETE_RESULT_CANCELLED, codes.OK, "completed", domain.JobFailed, "cancelled"},
		{"failed is parked for its retry", pb.CompleteResult_COMPLETE_RESULT_FAILED, codes.OK, "leased", domain.JobPhase2, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			batch := fmt.Sprintf("r%d", i)
			jobID := s.Job(t, batch, "10.1.0.0/24", fmt.Sprintf("10.1.0.%d", 40+i), domain.KindProvision)
			resp, err := c.Lease(ctx, &pb.LeaseRequest{MaxJobs: 1, Wait: durationpb.New(time.Second)})
			if err != nil || len(resp.GetJobs()) != 1 {
				t.Fatalf("lease = %v, %v", resp.GetJobs(), err)
			}
			ref := resp.GetJobs()[0].GetLease()
			_, err = c.Complete(ctx, &pb.CompleteRequest{Lease: ref, Result: tc.result, ErrorStep: "tls", Error: "boom"})
			if status.Code(err) != tc.wantCode {
				t.Fatalf("complete: %v, want %s", err, tc.wantCode)
			}
			qj, err := s.Queue.Job(ctx, netip.MustParsePrefix("10.1.0.0/24"), jobID)
			if err != nil {
				t.Fatal(err)
			}
			j, err := s.Store.GetJob(ctx, batch, jobID)
			if err != nil {
				t.Fatal(err)
			}
			if qj.State != tc.wantQueue || j.State != tc.wantState || j.ErrorStep != tc.wantStep {
				t.Fatalf("queue %s, job %s at %q; want queue %s, job %s at %q", qj.State, j.State, j.ErrorStep, tc.wantQueue, tc.wantState, tc.wantStep)
			}
			if tc.result == pb.CompleteResult_COMPLETE_RESULT_RELEASED {
				// Not counted: the next lease is still the first attempt's number.
				again, err := c.Lease(ctx, &pb.LeaseRequest{MaxJobs: 1, Wait: durationpb.New(time.Second)})
				if err != nil || len(again.GetJobs()) != 1 {
					t.Fatalf("lease again = %v, %v", again.GetJobs(), err)
				}
				if a := again.GetJobs()[0].GetAttempt(); a != resp.GetJobs()[0].GetAttempt() {
					t.Fatalf("attempt %d after a release, want %d", a, resp.GetJobs()[0].GetAttempt())
				}
				if _, err := c.Complete(ctx, &pb.CompleteRequest{Lease: again.GetJobs()[0].GetLease(),
					Result: pb.CompleteResult_COMPLETE_RESULT_SUCCEEDED}); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
