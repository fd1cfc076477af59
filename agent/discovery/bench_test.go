package discovery_test

import (
	"context"
	"net/netip"
	"strconv"
	"testing"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/agent/discovery"
)

// BenchmarkSweep sweeps a /25 (126 addresses, 64 simulated devices, the
// rest refusing) on loopback with no rate limit to speak of: the cost of
// the probe and Identify path itself.
func BenchmarkSweep(b *testing.B) {
	for _, conc := range []int{8, 64} {
		b.Run("concurrency="+strconv.Itoa(conc), func(b *testing.B) {
			f := startFleet(b, 64, nil)
			sw, err := discovery.New(discovery.Config{HTTPPort: f.sim.HTTPPort(), TLSPort: f.sim.TLSPort(),
				Concurrency: conc, Limiter: discovery.NewLimiter(1_000_000, nil), Log: zerolog.Nop()})
			if err != nil {
				b.Fatal(err)
			}
			subnet := netip.PrefixFrom(f.subnet.Addr(), 25)
			var addrs, found int
			for b.Loop() {
				st, err := sw.Sweep(context.Background(), subnet, discovery.Options{}, func(context.Context, []discovery.Result, bool) error { return nil })
				if err != nil {
					b.Fatal(err)
				}
				if st.Identified != 64 {
					b.Fatalf("identified %d, want 64", st.Identified)
				}
				addrs += st.Addresses
				found += st.Found
			}
			b.ReportMetric(float64(addrs)/b.Elapsed().Seconds(), "addresses/s")
			b.ReportMetric(float64(found)/b.Elapsed().Seconds(), "devices/s")
		})
	}
}
