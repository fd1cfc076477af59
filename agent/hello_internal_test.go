package agent

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/amtops/amtops/agent/hellolisten"
	"github.com/amtops/amtops/internal/hello"
	pb "github.com/amtops/amtops/proto/amtops/v1"
)

func TestHelloConversion(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	u, err := hello.ParseUUID("8C1F2A3B-0001-4D5E-8F90-A1B2C3D4E5F6")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		in   hello.Hello
		want func(*pb.Hello) bool
	}{
		{"uuid lower case", hello.Hello{UUID: u}, func(h *pb.Hello) bool { return h.GetUuid() == "8c1f2a3b-0001-4d5e-8f90-a1b2c3d4e5f6" }},
		{"flags and retries", hello.Hello{Flags: 1, RetryCount: 7}, func(h *pb.Hello) bool {
			return h.GetFlags() == 1 && h.GetRetryCount() == 7 && h.GetVersion() == 3
		}},
		{"hash algorithms", hello.Hello{Hashes: []hello.Hash{{Alg: hello.SHA1, Sum: make([]byte, 20)},
			{Alg: hello.SHA256, Sum: make([]byte, 32)}, {Alg: hello.SHA384, Sum: make([]byte, 48)}, {Alg: 9, Sum: []byte{1}}}},
			func(h *pb.Hello) bool {
				r := h.GetTrustedRoots()
				return len(r) == 4 && r[0].GetAlgorithm() == pb.HashAlgorithm_HASH_ALGORITHM_SHA1 &&
					r[1].GetAlgorithm() == pb.HashAlgorithm_HASH_ALGORITHM_SHA256 && r[2].GetAlgorithm() == pb.HashAlgorithm_HASH_ALGORITHM_SHA384 &&
					r[3].GetAlgorithm() == pb.HashAlgorithm_HASH_ALGORITHM_UNSPECIFIED && len(r[2].GetHash()) == 48
			}},
		{"address and time", hello.Hello{}, func(h *pb.Hello) bool {
			return h.GetIp() == "10.1.0.9" && h.GetReceivedAt().AsTime().Equal(at)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := helloToPB(hellolisten.Report{Addr: netip.MustParseAddr("10.1.0.9"), Hello: tc.in, At: at}); !tc.want(got) {
				t.Errorf("got %v", got)
			}
		})
	}
}

// reports are split by subnet; drops go once, with the first call, and
// again after a failed call.
func TestHelloReporter(t *testing.T) {
	subnets := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24"), netip.MustParsePrefix("10.2.0.0/24")}
	var calls []*pb.ReportHellosRequest
	fail := false
	stats := hellolisten.Stats{Malformed: 2, Foreign: 1}
	h := &helloReporter{subnets: func() []netip.Prefix { return subnets }, stats: func() hellolisten.Stats { return stats },
		report: func(_ context.Context, r *pb.ReportHellosRequest, _ ...grpc.CallOption) (*pb.ReportHellosResponse, error) {
			if fail {
				return nil, errors.New("unavailable")
			}
			calls = append(calls, r)
			return &pb.ReportHellosResponse{}, nil
		}}
	rep := func(ip string) hellolisten.Report { return hellolisten.Report{Addr: netip.MustParseAddr(ip)} }
	ctx := context.Background()
	if err := h.ReportHello(ctx, []hellolisten.Report{rep("10.2.0.5"), rep("10.1.0.5"), rep("10.2.0.6"), rep("10.9.0.1")}); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 2 || calls[0].GetSubnet() != "10.2.0.0/24" || len(calls[0].GetHellos()) != 2 ||
		calls[1].GetSubnet() != "10.1.0.0/24" || len(calls[1].GetHellos()) != 1 {
		t.Fatalf("calls %v, want 10.2 with two Hellos then 10.1 with one; 10.9 left out", calls)
	}
	if d := calls[0].GetDrops(); d.GetMalformed() != 2 || d.GetForeign() != 1 || calls[1].GetDrops() != nil {
		t.Errorf("drops %v / %v, want 2 malformed 1 foreign on the first call only", d, calls[1].GetDrops())
	}
	calls = nil
	if err := h.ReportHello(ctx, nil); err != nil || len(calls) != 0 {
		t.Errorf("nothing new: %d calls, %v; want none", len(calls), err)
	}
	stats.Timeouts = 3
	fail = true
	if err := h.ReportHello(ctx, nil); err == nil {
		t.Fatal("a failed call reported success")
	}
	fail = false
	if err := h.ReportHello(ctx, nil); err != nil || len(calls) != 1 || calls[0].GetDrops().GetTimedOut() != 3 ||
		calls[0].GetSubnet() != "10.1.0.0/24" || calls[0].GetDrops().GetMalformed() != 0 {
		t.Errorf("after the failure: calls %v, %v; want the 3 timeouts once, on the first subnet", calls, err)
	}
}
