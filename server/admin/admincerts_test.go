package admin_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/admin/admintest"
)

// keyCSR is a fresh key and a CSR for it.
func keyCSR(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "csr"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

// agentCert is a real agent certificate from the site's CA for id.
func agentCert(t *testing.T, s *admintest.Server, id string) *tls.Certificate {
	t.Helper()
	key, csr := keyCSR(t)
	c, err := s.CA.SignAgent(csr, id)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key}
}

// foreignAdminCert is shaped like an admin certificate but signed by a CA
// the server never saw.
func foreignAdminCert(t *testing.T) *tls.Certificate {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "amtops agent CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caT, caT, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	lt := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "ops", Organization: []string{"amtops admins"}},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, lt, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestCertificateLogin(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	s.Device(t, "d1", "pc1", "10.0.0.1", domain.StatusNotProvisioned)
	ctx := context.Background()
	readCert := s.AdminCert(t, "carol", "read")
	opCert := s.AdminCert(t, "dave", "operate")
	read, op := s.DialCert(t, readCert), s.DialCert(t, opCert)

	startBatch := func(c pb.AdminServiceClient) error {
		_, err := c.StartBatch(ctx, &pb.StartBatchRequest{Kind: pb.JobKind_JOB_KIND_PROVISION, DeviceIds: []string{"d1"}})
		return err
	}
	t.Run("read certificate lists", func(t *testing.T) {
		resp, err := read.ListDevices(ctx, &pb.ListDevicesRequest{})
		if err != nil || len(resp.GetDevices()) != 1 {
			t.Fatalf("list: %v, %v", resp, err)
		}
	})
	t.Run("read certificate cannot start a batch", func(t *testing.T) {
		wantCode(t, startBatch(read), codes.PermissionDenied, "operate role", "certificate", "carol")
	})
	t.Run("read certificate cannot issue certificates", func(t *testing.T) {
		_, csr := keyCSR(t)
		_, err := read.IssueAdminCertificate(ctx, &pb.IssueAdminCertificateRequest{Name: "eve", Role: "operate", CsrDer: csr})
		wantCode(t, err, codes.PermissionDenied, "IssueAdminCertificate", "operate role")
	})
	t.Run("read token cannot issue certificates", func(t *testing.T) {
		_, csr := keyCSR(t)
		_, err := s.Dial(t, s.Read).IssueAdminCertificate(ctx, &pb.IssueAdminCertificateRequest{Name: "eve", Role: "operate", CsrDer: csr})
		wantCode(t, err, codes.PermissionDenied, "IssueAdminCertificate")
	})
	t.Run("read certificate watches", func(t *testing.T) {
		st, err := read.WatchBatch(ctx, &pb.GetBatchRequest{Id: "nope"})
		if err == nil {
			_, err = st.Recv()
		}
		wantCode(t, err, codes.NotFound) // authenticated; the batch is unknown
	})
	t.Run("operate certificate starts a batch", func(t *testing.T) {
		if err := startBatch(op); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("operate certificate issues certificates", func(t *testing.T) {
		c := s.DialCert(t, admintest.IssueCert(t, op, "frank", "read"))
		if _, err := c.ListCollections(ctx, &pb.ListCollectionsRequest{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("bearer token wins over the certificate", func(t *testing.T) {
		// A read certificate with an operate token may start a batch ...
		conn := s.Conn(t, s.Operate, readCert)
		if err := startBatch(pb.NewAdminServiceClient(conn)); err != nil {
			t.Fatal(err)
		}
		// ... an operate certificate with a read token may not.
		conn = s.Conn(t, s.Read, opCert)
		wantCode(t, startBatch(pb.NewAdminServiceClient(conn)), codes.PermissionDenied, "token")
		// A bad token is not rescued by a good certificate.
		conn = s.Conn(t, "amtadm_nope", opCert)
		_, err := pb.NewAdminServiceClient(conn).ListDevices(ctx, &pb.ListDevicesRequest{})
		wantCode(t, err, codes.Unauthenticated, "token unknown")
	})
	t.Run("agent certificate is not an admin credential", func(t *testing.T) {
		// Named like an existing admin, from the same CA, for client auth.
		_, err := s.DialCert(t, agentCert(t, s, "dave")).ListDevices(ctx, &pb.ListDevicesRequest{})
		wantCode(t, err, codes.Unauthenticated, "not an administrator's")
	})
	t.Run("admin certificate is not an agent credential", func(t *testing.T) {
		// An enrolled agent has the admin's name; its own certificate
		// works, the admin's does not.
		if err := s.Store.PutAgent(ctx, domain.Agent{ID: "dave", Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")},
			EnrolledAt: admintest.Epoch}); err != nil {
			t.Fatal(err)
		}
		hb := func(cert *tls.Certificate) error {
			_, err := pb.NewAgentServiceClient(s.Conn(t, "", cert)).Heartbeat(ctx, &pb.HeartbeatRequest{})
			return err
		}
		if err := hb(agentCert(t, s, "dave")); err != nil {
			t.Fatalf("agent's own certificate: %v", err)
		}
		err := hb(opCert)
		if c := status.Code(err); c != codes.Unauthenticated && c != codes.PermissionDenied {
			t.Fatalf("agent call with an admin certificate: %v, want refused", err)
		}
	})
	t.Run("foreign CA", func(t *testing.T) {
		_, err := s.DialCert(t, foreignAdminCert(t)).ListDevices(ctx, &pb.ListDevicesRequest{})
		if c := status.Code(err); c == codes.OK {
			t.Fatal("certificate from a foreign CA accepted")
		}
	})
	t.Run("unrecorded certificate", func(t *testing.T) {
		// Signed by the site CA but never issued through the service.
		key, csr := keyCSR(t)
		c, err := s.CA.SignAdmin(csr, "mallory", "operate")
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.DialCert(t, &tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key}).ListDevices(ctx, &pb.ListDevicesRequest{})
		wantCode(t, err, codes.Unauthenticated, "unknown or revoked")
	})
	t.Run("revoking the name ends its certificates at once", func(t *testing.T) {
		cert := s.AdminCert(t, "grace", "operate")
		other := s.DialCert(t, s.AdminCert(t, "heidi", "read"))
		c := s.DialCert(t, cert)
		if _, err := c.ListDevices(ctx, &pb.ListDevicesRequest{}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Dial(t, s.Operate).RevokeAdminToken(ctx, &pb.RevokeAdminTokenRequest{Name: "grace"}); err != nil {
			t.Fatal(err)
		}
		// Same connection, next call.
		_, err := c.ListDevices(ctx, &pb.ListDevicesRequest{})
		wantCode(t, err, codes.Unauthenticated, "unknown or revoked", "grace")
		if _, err := other.ListDevices(ctx, &pb.ListDevicesRequest{}); err != nil {
			t.Fatalf("another name's certificate: %v", err)
		}
		// A token of the same name goes with it.
		tok, _, err := s.Store.CreateAdminToken(ctx, "ivan", domain.RoleRead)
		if err != nil {
			t.Fatal(err)
		}
		ivan := s.DialCert(t, s.AdminCert(t, "ivan", "read"))
		if _, err := s.Dial(t, s.Operate).RevokeAdminToken(ctx, &pb.RevokeAdminTokenRequest{Name: "ivan"}); err != nil {
			t.Fatal(err)
		}
		_, err = ivan.ListDevices(ctx, &pb.ListDevicesRequest{})
		wantCode(t, err, codes.Unauthenticated)
		_, err = s.Dial(t, tok).ListDevices(ctx, &pb.ListDevicesRequest{})
		wantCode(t, err, codes.Unauthenticated)
	})
}

func TestIssueAdminCertificateBadInput(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	ctx := context.Background()
	c := s.Dial(t, s.Operate)
	_, good := keyCSR(t)
	for _, tc := range []struct {
		name string
		req  *pb.IssueAdminCertificateRequest
		want []string
	}{
		{"no CSR", &pb.IssueAdminCertificateRequest{Name: "a", Role: "read"}, []string{"csr_der", "required"}},
		{"garbage CSR", &pb.IssueAdminCertificateRequest{Name: "a", Role: "read", CsrDer: []byte("junk")}, []string{"csr_der", "PKCS#10"}},
		{"unknown role", &pb.IssueAdminCertificateRequest{Name: "a", Role: "admin", CsrDer: good}, []string{"role", "read or operate"}},
		{"empty role", &pb.IssueAdminCertificateRequest{Name: "a", CsrDer: good}, []string{"role"}},
		{"bad name", &pb.IssueAdminCertificateRequest{Name: "a:b", Role: "read", CsrDer: good}, []string{"name"}},
		{"empty name", &pb.IssueAdminCertificateRequest{Role: "read", CsrDer: good}, []string{"name"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.IssueAdminCertificate(ctx, tc.req)
			wantCode(t, err, codes.InvalidArgument, tc.want...)
		})
	}
	t.Run("response", func(t *testing.T) {
		resp, err := c.IssueAdminCertificate(ctx, &pb.IssueAdminCertificateRequest{Name: "judy", Role: "read", CsrDer: good})
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(resp.GetCertificateDer())
		if err != nil {
			t.Fatal(err)
		}
		ca, err := x509.ParseCertificate(resp.GetCaDer())
		if err != nil || !ca.Equal(s.CA.Certificate()) {
			t.Fatalf("ca_der is not the site CA: %v", err)
		}
		if !resp.GetNotAfter().AsTime().Equal(cert.NotAfter) || cert.Subject.CommonName != "judy" {
			t.Fatalf("not_after %v, certificate %v / %s", resp.GetNotAfter().AsTime(), cert.NotAfter, cert.Subject)
		}
		recs, err := s.Store.ListAdminCertificates(ctx, "judy")
		if err != nil || len(recs) != 1 || recs[0].Serial != cert.SerialNumber.Text(16) || recs[0].Role != domain.RoleRead {
			t.Fatalf("recorded: %+v, %v", recs, err)
		}
	})
}

// Without a CA the service issues no certificates and accepts none;
// tokens still work.
func TestCertificatesWithoutCA(t *testing.T) {
	s := admintest.Start(t, admintest.Options{NoCA: true})
	ctx := context.Background()
	_, csr := keyCSR(t)
	_, err := s.Dial(t, s.Operate).IssueAdminCertificate(ctx, &pb.IssueAdminCertificateRequest{Name: "a", Role: "read", CsrDer: csr})
	wantCode(t, err, codes.FailedPrecondition, "no CA")

	// A certificate the site CA signed and the store recorded is still
	// refused: this service was not given the CA to check it.
	key, csr := keyCSR(t)
	c, err := s.CA.SignAdmin(csr, "kim", "operate")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Store.RecordAdminCertificate(ctx, domain.AdminCert{Serial: c.SerialNumber.Text(16), Name: "kim", Role: domain.RoleOperate, NotAfter: c.NotAfter}); err != nil {
		t.Fatal(err)
	}
	_, err = s.DialCert(t, &tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key}).ListDevices(ctx, &pb.ListDevicesRequest{})
	wantCode(t, err, codes.Unauthenticated, "not enabled")
	if _, err := s.Dial(t, s.Read).ListDevices(ctx, &pb.ListDevicesRequest{}); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkCertificateCall is BenchmarkAuthenticatedCall with an admin
// certificate instead of a token: chain check plus a record lookup.
func BenchmarkCertificateCall(b *testing.B) {
	s := admintest.Start(b, admintest.Options{})
	s.Device(b, "d1", "pc1", "10.0.0.1", domain.StatusNotProvisioned)
	c := s.DialCert(b, s.AdminCert(b, "bench", "read"))
	ctx := context.Background()
	for b.Loop() {
		if _, err := c.GetDevice(ctx, &pb.GetDeviceRequest{Id: "d1"}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
}
