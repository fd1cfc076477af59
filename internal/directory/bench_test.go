package directory_test

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/directory"
)

// BenchmarkPublish measures Publish (find the Windows computer, create or
// update the AMT account with a new password, replace the four SPNs, read
// back the kvno) against the Samba DC. Devices are drawn from a fixed set
// of 40, so after the first round every publish is an in-place update, the
// steady state of repeated provisioning.
func BenchmarkPublish(b *testing.B) {
	e := newEnv(b)
	const devices = 40
	var devs []directory.Device
	for range devices {
		n := uniqueName(b)
		e.addComputer(b, n, "", "")
		devs = append(devs, directory.Device{UUID: "bench-" + n, ComputerName: n, FQDN: strings.ToLower(n) + ".amt.test"})
	}
	for _, bc := range []struct {
		name    string
		pool    int
		workers int
	}{
		{"serial", 1, 1},
		{"pool4", 4, 4},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := e.client(b, func(c *directory.Config) { c.PoolSize = bc.pool })
			var next atomic.Int64
			b.SetParallelism(bc.workers)
			start := time.Now()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					d := devs[next.Add(1)%devices]
					if _, err := c.Publish(ctx(b), d); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "accounts/s")
		})
	}
}
