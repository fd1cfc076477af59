package admin_test

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/admin/admintest"
)

const benchDevices = 100_000

// benchFleet is a server with 100,000 devices in Redis (16 writers).
func benchFleet(b *testing.B) (*admintest.Server, pb.AdminServiceClient) {
	b.Helper()
	s := admintest.Start(b, admintest.Options{SummaryMaxAge: time.Nanosecond})
	ctx := context.Background()
	statuses := domain.Statuses
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < benchDevices; i = next.Add(1) - 1 {
				ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
				d := domain.Device{ID: fmt.Sprintf("dev%06d", i), HostName: fmt.Sprintf("pc%06d", i), Domain: "corp.test",
					IP: ip, Subnet: netip.PrefixFrom(ip, 24).Masked(), Status: statuses[int(i)%len(statuses)],
					AMTVersion: fmt.Sprintf("%d.0.1", 11+i%8), ControlMode: domain.ControlMode(i % 3)}
				if i%50 == 0 {
					d.LastError, d.LastErrorStep = "injected", "S4"
				}
				if err := s.Store.PutDevice(ctx, d); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.Logf("%d devices stored in %v", benchDevices, time.Since(start).Round(time.Millisecond))
	return s, s.Dial(b, s.Read)
}

// heapMB reports the process's live heap (server and client share it).
func heapMB(b *testing.B) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	b.ReportMetric(float64(m.HeapInuse)/(1<<20), "heap-MB")
}

// BenchmarkFleet100k: one device page (50, from a cursor anywhere in the
// fleet), a search that reads the whole fleet, and the overview's summary,
// over gRPC against real Redis. Run with a bounded count, e.g.
// -benchtime=20x.
func BenchmarkFleet100k(b *testing.B) {
	_, c := benchFleet(b)
	ctx := context.Background()
	b.Run("device-page", func(b *testing.B) {
		for i := range b.N {
			cursor := fmt.Sprintf("dev%06d", (i*7919)%benchDevices)
			page, err := c.ListDevices(ctx, &pb.ListDevicesRequest{Limit: 50, Cursor: cursor})
			if err != nil || len(page.Devices) == 0 {
				b.Fatalf("page: %v %d", err, len(page.GetDevices()))
			}
		}
		heapMB(b)
	})
	b.Run("failed-page", func(b *testing.B) {
		for range b.N {
			page, err := c.ListDevices(ctx, &pb.ListDevicesRequest{Limit: 50, Failed: true})
			if err != nil || len(page.Devices) != 50 {
				b.Fatalf("failed page: %v %d", err, len(page.GetDevices()))
			}
		}
	})
	b.Run("search-whole-fleet", func(b *testing.B) {
		for range b.N {
			page, err := c.ListDevices(ctx, &pb.ListDevicesRequest{Limit: 50, Query: "pc099999"})
			if err != nil || len(page.Devices) != 1 {
				b.Fatalf("search: %v %d", err, len(page.GetDevices()))
			}
		}
	})
	b.Run("summary", func(b *testing.B) {
		for range b.N {
			sum, err := c.FleetSummary(ctx, &pb.FleetSummaryRequest{})
			if err != nil || sum.Devices != benchDevices {
				b.Fatalf("summary: %v %d", err, sum.GetDevices())
			}
		}
		heapMB(b)
	})
}
