package admin_test

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/admin/admintest"
	"github.com/amtops/amtops/server/api/apitest"
)

// enrollAgent enrolls an agent through the server's AgentService with a
// token an administrator made, and returns a client with its certificate.
func enrollAgent(t *testing.T, s *admintest.Server, subnets ...string) (pb.AgentServiceClient, string) {
	t.Helper()
	ctx := context.Background()
	tok, err := s.Dial(t, s.Operate).CreateEnrollmentToken(ctx, &pb.CreateEnrollmentTokenRequest{Subnets: subnets})
	if err != nil {
		t.Fatal(err)
	}
	key, csr := apitest.Key(t)
	resp, err := dialAgent(t, s, nil).Enroll(ctx, &pb.EnrollRequest{BootstrapToken: tok.GetToken(), CsrDer: csr})
	if err != nil {
		t.Fatal(err)
	}
	return dialAgent(t, s, &tls.Certificate{Certificate: [][]byte{resp.GetCertificateDer()}, PrivateKey: key}), resp.GetAgentId()
}

func dialAgent(t *testing.T, s *admintest.Server, cert *tls.Certificate) pb.AgentServiceClient {
	t.Helper()
	tc := &tls.Config{RootCAs: s.CA.Pool(), ServerName: "127.0.0.1"}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(s.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return pb.NewAgentServiceClient(conn)
}

func TestUnauthorizeAndRevokeAgent(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	ctx := context.Background()
	ops, viewer := s.Dial(t, s.Operate), s.Dial(t, s.Read)
	ag, id := enrollAgent(t, s, "10.5.0.0/24", "10.6.0.0/24")
	other, _ := enrollAgent(t, s, "10.7.0.0/24")
	discover := func(c pb.AgentServiceClient, subnet string) error {
		_, err := c.ReportDiscovery(ctx, &pb.ReportDiscoveryRequest{Subnet: subnet})
		return err
	}
	if err := discover(ag, "10.6.0.0/24"); err != nil {
		t.Fatalf("before: %v", err)
	}

	t.Run("read role refused", func(t *testing.T) {
		_, err := viewer.UnauthorizeAgent(ctx, &pb.AuthorizeAgentRequest{AgentId: id, Subnets: []string{"10.6.0.0/24"}})
		wantCode(t, err, codes.PermissionDenied)
		_, err = viewer.RevokeAgent(ctx, &pb.RevokeAgentRequest{AgentId: id})
		wantCode(t, err, codes.PermissionDenied)
	})
	t.Run("bad input names the field", func(t *testing.T) {
		_, err := ops.UnauthorizeAgent(ctx, &pb.AuthorizeAgentRequest{AgentId: id, Subnets: []string{"10.9.0.0/24"}})
		wantCode(t, err, codes.InvalidArgument, "subnets", "does not serve")
		_, err = ops.UnauthorizeAgent(ctx, &pb.AuthorizeAgentRequest{AgentId: id})
		wantCode(t, err, codes.InvalidArgument, "subnets")
		_, err = ops.RevokeAgent(ctx, &pb.RevokeAgentRequest{})
		wantCode(t, err, codes.InvalidArgument, "agent_id")
		_, err = ops.RevokeAgent(ctx, &pb.RevokeAgentRequest{AgentId: "ghost"})
		wantCode(t, err, codes.NotFound, `unknown agent "ghost"`)
	})
	t.Run("subnet taken away", func(t *testing.T) {
		got, err := ops.UnauthorizeAgent(ctx, &pb.AuthorizeAgentRequest{AgentId: id, Subnets: []string{"10.6.0.0/24"}})
		if err != nil || len(got.GetSubnets()) != 1 || got.GetSubnets()[0] != "10.5.0.0/24" {
			t.Fatalf("unauthorize = %v, %v", got, err)
		}
		wantCode(t, discover(ag, "10.6.0.0/24"), codes.PermissionDenied)
		if err := discover(ag, "10.5.0.0/24"); err != nil {
			t.Fatalf("the remaining subnet: %v", err)
		}
		hb, err := ag.Heartbeat(ctx, &pb.HeartbeatRequest{})
		if err != nil || len(hb.GetSubnets()) != 1 {
			t.Fatalf("heartbeat = %v, %v; want one subnet", hb, err)
		}
	})
	t.Run("revoked", func(t *testing.T) {
		if _, err := ops.RevokeAgent(ctx, &pb.RevokeAgentRequest{AgentId: id}); err != nil {
			t.Fatal(err)
		}
		for name, call := range map[string]func() error{
			"heartbeat": func() error { _, err := ag.Heartbeat(ctx, &pb.HeartbeatRequest{}); return err },
			"lease": func() error {
				_, err := ag.Lease(ctx, &pb.LeaseRequest{MaxJobs: 1, Wait: durationpb.New(10 * time.Millisecond)})
				return err
			},
			"discovery": func() error { return discover(ag, "10.5.0.0/24") },
		} {
			t.Run(name, func(t *testing.T) { wantCode(t, call(), codes.PermissionDenied) })
		}
		list, err := ops.ListAgents(ctx, &pb.ListAgentsRequest{})
		if err != nil || len(list.GetAgents()) != 1 {
			t.Fatalf("agents after revoke = %v, %v; want the other one", list.GetAgents(), err)
		}
		// The other agent is untouched.
		if err := discover(other, "10.7.0.0/24"); err != nil {
			t.Fatalf("other agent: %v", err)
		}
	})
}
