package agent_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/amtops/amtops/agent"
	"github.com/amtops/amtops/internal/hello"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/api"
	"github.com/amtops/amtops/server/api/apitest"
)

// helloServer is the real AgentService with ReportHellos recorded here
// (the server's own is another part of the work).
type helloServer struct {
	*api.AgentService
	mu   sync.Mutex
	reqs []*pb.ReportHellosRequest
}

func (h *helloServer) ReportHellos(_ context.Context, req *pb.ReportHellosRequest) (*pb.ReportHellosResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reqs = append(h.reqs, req)
	return &pb.ReportHellosResponse{Unknown: int32(len(req.GetHellos()))}, nil
}

func (h *helloServer) received() (hellos []*pb.Hello, subnets []string, drops drops) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.reqs {
		hellos = append(hellos, r.GetHellos()...)
		subnets = append(subnets, r.GetSubnet())
		drops.Malformed += r.GetDrops().GetMalformed()
		drops.Foreign += r.GetDrops().GetForeign()
	}
	return hellos, subnets, drops
}

type drops struct{ Malformed, Foreign int64 }

// serve runs impl (built on s's AgentService) with s's credentials and
// interceptor on its own port, and returns the address.
func serve(t *testing.T, s *apitest.Server, impl pb.AgentServiceServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := s.CA.ServerCertificate(lis.Addr().String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(api.ServerOptions(s.Svc, cert)...)
	pb.RegisterAgentServiceServer(gs, impl)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

// send writes b to addr from source and closes, as a device does.
func send(t *testing.T, source, addr string, b []byte) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// A Hello sent over TCP to the agent's provisioning port reaches
// ReportHellos for its subnet, converted; bad input and strangers are
// dropped and their counts follow as HelloDrops.
func TestHelloListenerReportsToServer(t *testing.T) {
	s := apitest.Start(t, apitest.Options{})
	hs := &helloServer{AgentService: s.Svc}
	addr := serve(t, s, hs)
	cfg := agentConfig(t, s)
	cfg.Server, cfg.Hello.Listen = addr, "127.86.0.1:0"
	cfg.Concurrency, cfg.LongPoll = 1, time.Second
	a, err := agent.New(cfg, zerolog.Nop(), agent.WithExecutor(&fakeExecutor{ran: map[string]int{}}),
		agent.WithBootstrapToken(s.Token(t, "127.86.1.0/24")), agent.WithBackoff(10*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	runUntilEnd(t, a)
	waitFor(t, "hello listener bound", func() bool { return a.HelloAddr() != "" })
	port := a.HelloAddr()

	send(t, "127.86.1.7", port, []byte("not a hello"))
	good := hello.Hello{Flags: 0, RetryCount: 2, UUID: hello.UUID{0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF},
		Hashes: []hello.Hash{{Alg: hello.SHA256, Sum: make([]byte, 32)}, {Alg: hello.SHA1, Sum: make([]byte, 20)}}}
	b, err := good.Encode()
	if err != nil {
		t.Fatal(err)
	}
	send(t, "127.86.2.9", port, b) // outside the authorised /24
	// Drops travel with the next report: send Hellos (a new device each
	// time, or they are de-duplicated) until the drops have arrived.
	var got []*pb.Hello
	var subnets []string
	var drops drops
	for i := range 20 {
		h := good
		h.UUID[15] = byte(i)
		b, err := h.Encode()
		if err != nil {
			t.Fatal(err)
		}
		send(t, "127.86.1.7", port, b)
		time.Sleep(300 * time.Millisecond)
		if got, subnets, drops = hs.received(); drops.Malformed >= 1 && drops.Foreign >= 1 {
			break
		}
	}
	if len(got) == 0 {
		t.Fatal("no Hello reached ReportHellos")
	}
	h := got[0]
	if h.GetIp() != "127.86.1.7" || h.GetUuid() != "00112233-4455-6677-8899-aabbccddee00" || h.GetVersion() != 3 ||
		h.GetRetryCount() != 2 || h.GetFlags() != 0 || h.GetReceivedAt() == nil || len(h.GetTrustedRoots()) != 2 ||
		h.GetTrustedRoots()[0].GetAlgorithm() != pb.HashAlgorithm_HASH_ALGORITHM_SHA256 ||
		h.GetTrustedRoots()[1].GetAlgorithm() != pb.HashAlgorithm_HASH_ALGORITHM_SHA1 || len(h.GetTrustedRoots()[1].GetHash()) != 20 {
		t.Errorf("hello %v", h)
	}
	if strings.Join(subnets, ",") != strings.Repeat("127.86.1.0/24,", len(subnets)-1)+"127.86.1.0/24" {
		t.Errorf("subnets %v, want only 127.86.1.0/24", subnets)
	}
	if drops.Malformed != 1 || drops.Foreign != 1 {
		t.Errorf("drops malformed %d foreign %d, want 1 and 1", drops.Malformed, drops.Foreign)
	}
	for _, x := range got {
		if netip.MustParseAddr(x.GetIp()) != netip.MustParseAddr("127.86.1.7") {
			t.Errorf("hello from %s reported", x.GetIp())
		}
	}
}
