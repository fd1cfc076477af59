package admin_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"slices"
	"testing"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/admin/admintest"
	"github.com/amtops/amtops/server/api/apitest"
)

// readOnlyRPCs are the AdminService calls that change nothing, decided
// here independently of the server's own list: a new RPC is mutating
// (and refused to readers) until it is added here on purpose.
var readOnlyRPCs = []string{
	"ListDevices", "GetDevice", "GetDeviceLog", "DeviceReadiness", "ListCollections",
	"GetBatch", "ListBatches", "WatchBatch", "ListBatchJobs", "ListAgents", "FleetSummary", "WhoAmI",
	"ListCertificates",
}

// rpcs lists a service's methods from the proto descriptor.
func rpcs(t *testing.T, fd protoreflect.FileDescriptor, service string) []protoreflect.MethodDescriptor {
	t.Helper()
	sd := fd.Services().ByName(protoreflect.Name(service))
	if sd == nil {
		t.Fatalf("no service %s in %s", service, fd.Path())
	}
	var out []protoreflect.MethodDescriptor
	for i := 0; i < sd.Methods().Len(); i++ {
		out = append(out, sd.Methods().Get(i))
	}
	return out
}

// call invokes m with an empty request (a stream is opened and read
// once), as any client could: authorisation must not depend on the
// request being sensible.
func call(ctx context.Context, conn *grpc.ClientConn, m protoreflect.MethodDescriptor) error {
	full := fmt.Sprintf("/%s/%s", m.Parent().FullName(), m.Name())
	newMsg := func(d protoreflect.MessageDescriptor) proto.Message {
		mt, err := protoregistry.GlobalTypes.FindMessageByName(d.FullName())
		if err != nil {
			panic(err)
		}
		return mt.New().Interface()
	}
	in, out := newMsg(m.Input()), newMsg(m.Output())
	if !m.IsStreamingServer() && !m.IsStreamingClient() {
		return conn.Invoke(ctx, full, in, out)
	}
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: m.IsStreamingServer(), ClientStreams: m.IsStreamingClient()}, full)
	if err != nil {
		return err
	}
	if err := st.SendMsg(in); err != nil {
		return err
	}
	if err := st.CloseSend(); err != nil {
		return err
	}
	return st.RecvMsg(out)
}

// redisState is every key and its serialised value.
func redisState(t *testing.T, rdb redis.UniversalClient) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	iter := rdb.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		v, err := rdb.Dump(ctx, iter.Val()).Result()
		if err != nil {
			t.Fatalf("dump %s: %v", iter.Val(), err)
		}
		out[iter.Val()] = v
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// Every AdminService RPC, enumerated from the descriptor: a read token
// reaches the read-only ones and is refused on every other before it
// changes anything in Redis; an agent's certificate and a caller without
// credentials are refused on all.
func TestEveryAdminRPCAuthorisation(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	s.Device(t, "d1", "pc1", "10.0.0.1", domain.StatusNotProvisioned)
	ctx := context.Background()
	read := s.Conn(t, s.Read, nil)
	agent := s.Conn(t, "", agentCert(t, s, "agent-1"))
	anon := s.Conn(t, "", nil)
	methods := rpcs(t, pb.File_amtops_v1_admin_proto, "AdminService")
	if len(methods) < 30 {
		t.Fatalf("%d AdminService methods in the descriptor; expected the full service", len(methods))
	}
	before := redisState(t, s.RDB)
	for _, m := range methods {
		t.Run(string(m.Name()), func(t *testing.T) {
			err := call(ctx, read, m)
			switch c := status.Code(err); {
			case slices.Contains(readOnlyRPCs, string(m.Name())):
				if c == codes.PermissionDenied || c == codes.Unauthenticated {
					t.Errorf("read token refused on a read-only RPC: %v", err)
				}
			case c != codes.PermissionDenied:
				t.Errorf("read token on a mutating RPC: %v, want PermissionDenied", err)
			}
			for who, conn := range map[string]*grpc.ClientConn{"agent certificate": agent, "no credentials": anon} {
				if c := status.Code(call(ctx, conn, m)); c != codes.Unauthenticated {
					t.Errorf("%s: code %s, want Unauthenticated", who, c)
				}
			}
		})
	}
	after := redisState(t, s.RDB)
	for k, v := range after {
		if before[k] != v {
			t.Errorf("redis key %s written by refused or read-only calls", k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			t.Errorf("redis key %s deleted by refused or read-only calls", k)
		}
	}
}

// Every AgentService RPC, enumerated from the descriptor, refuses an
// administrator (by token, by admin certificate; an admin token offered
// as a bootstrap token does not enroll) and a revoked agent.
func TestEveryAgentRPCRefusesAdministrators(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	ctx := context.Background()
	creds := map[string]*grpc.ClientConn{
		"operate token":      s.Conn(t, s.Operate, nil),
		"admin certificate":  s.Conn(t, "", s.AdminCert(t, "alice", "operate")),
		"operate token+cert": s.Conn(t, s.Operate, s.AdminCert(t, "bob", "operate")),
	}
	// A revoked agent's certificate: refused on the next call of any RPC.
	tok, err := s.Dial(t, s.Operate).CreateEnrollmentToken(ctx, &pb.CreateEnrollmentTokenRequest{Subnets: []string{"10.8.0.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	key, csr := apitest.Key(t)
	enr, err := pb.NewAgentServiceClient(s.Conn(t, "", nil)).Enroll(ctx, &pb.EnrollRequest{BootstrapToken: tok.GetToken(), CsrDer: csr})
	if err != nil {
		t.Fatal(err)
	}
	revoked := s.Conn(t, "", &tls.Certificate{Certificate: [][]byte{enr.GetCertificateDer()}, PrivateKey: key})
	if _, err := pb.NewAgentServiceClient(revoked).Heartbeat(ctx, &pb.HeartbeatRequest{}); err != nil {
		t.Fatalf("agent before revocation: %v", err)
	}
	if _, err := s.Dial(t, s.Operate).RevokeAgent(ctx, &pb.RevokeAgentRequest{AgentId: enr.GetAgentId()}); err != nil {
		t.Fatal(err)
	}
	creds["revoked agent certificate"] = revoked
	for _, m := range rpcs(t, pb.File_amtops_v1_agent_proto, "AgentService") {
		for who, conn := range creds {
			t.Run(string(m.Name())+"/"+who, func(t *testing.T) {
				err := call(ctx, conn, m)
				if m.Name() == "Enroll" {
					// Enroll needs no certificate; it needs a bootstrap token.
					_, err = pb.NewAgentServiceClient(conn).Enroll(ctx, &pb.EnrollRequest{BootstrapToken: s.Operate, CsrDer: csrDER(t)})
				}
				if c := status.Code(err); c != codes.PermissionDenied && c != codes.Unauthenticated {
					t.Fatalf("%v; want the administrator refused", err)
				}
			})
		}
	}
	list, err := s.Dial(t, s.Operate).ListAgents(ctx, &pb.ListAgentsRequest{})
	if err != nil || len(list.GetAgents()) != 0 {
		t.Fatalf("agents = %v, %v; want none enrolled (the revoked one gone)", list.GetAgents(), err)
	}
}

func csrDER(t *testing.T) []byte {
	t.Helper()
	_, csr := keyCSR(t)
	return csr
}
