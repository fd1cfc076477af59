package api_test

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/api/apitest"
)

// An agent's version comes with its enrollment and each heartbeat, the
// address from the heartbeat's connection, and every Hello it reports
// is counted.
func TestAgentVersionAddressHellos(t *testing.T) {
	e := newProvEnv(t)
	ctx := context.Background()
	const subnet = "10.9.11.0/24"
	key, csr := apitest.Key(t)
	enr, err := e.srv.Dial(t, nil).Enroll(ctx, &pb.EnrollRequest{BootstrapToken: e.srv.Token(t, subnet), CsrDer: csr,
		AgentName: "site-a", AgentVersion: "v1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	a, err := e.srv.Store.GetAgent(ctx, enr.GetAgentId())
	if err != nil || a.Version != "v1.2.3" || a.Address != "" || a.Hellos != 0 {
		t.Fatalf("after enrollment: %+v %v", a, err)
	}
	c := e.srv.Dial(t, &tls.Certificate{Certificate: [][]byte{enr.GetCertificateDer()}, PrivateKey: key})
	// A long poll is a sign of life before the first heartbeat is due.
	if _, err := c.Lease(ctx, &pb.LeaseRequest{MaxJobs: 1, Wait: durationpb.New(10 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	if a, err = e.srv.Store.GetAgent(ctx, enr.GetAgentId()); err != nil || a.LastHeartbeat.IsZero() {
		t.Fatalf("after a long poll the agent was not seen: %+v %v", a, err)
	}
	if _, err := c.Heartbeat(ctx, &pb.HeartbeatRequest{InFlight: 1, Capacity: 8, AgentVersion: "v1.3.0"}); err != nil {
		t.Fatal(err)
	}
	report(t, c, subnet, helloOf("10.9.11.7", uuid.NewString(), 0), helloOf("10.9.11.8", uuid.NewString(), 0))
	report(t, c, subnet, helloOf("10.9.11.7", uuid.NewString(), 1))
	a, err = e.srv.Store.GetAgent(ctx, enr.GetAgentId())
	if err != nil {
		t.Fatal(err)
	}
	if a.Version != "v1.3.0" || !strings.HasPrefix(a.Address, "127.0.0.1:") || a.Address == "127.0.0.1:0" || a.Hellos != 3 ||
		a.InFlight != 1 || a.Capacity != 8 {
		t.Fatalf("after a heartbeat and 3 Hellos: version %q address %q hellos %d load %d/%d", a.Version, a.Address, a.Hellos, a.InFlight, a.Capacity)
	}
	// A version that is no printable short string is not kept.
	if _, err := c.Heartbeat(ctx, &pb.HeartbeatRequest{AgentVersion: "bad\x00version"}); err != nil {
		t.Fatal(err)
	}
	if a, _ = e.srv.Store.GetAgent(ctx, enr.GetAgentId()); a.Version != "v1.2.3" {
		t.Fatalf("version after a malformed one: %q (want the enrolled one)", a.Version)
	}
	_, csr2 := apitest.Key(t)
	_, err = e.srv.Dial(t, nil).Enroll(ctx, &pb.EnrollRequest{BootstrapToken: e.srv.Token(t, subnet), CsrDer: csr2, AgentVersion: strings.Repeat("x", 65)})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("enrollment with a 65-character version: %v", err)
	}
}
