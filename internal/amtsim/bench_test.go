package amtsim

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkIdleDevices reports memory per idle device for a 10,000-device
// fleet (listener, accept goroutine, device struct; NVRAM is lazy).
func BenchmarkIdleDevices(b *testing.B) {
	const n = 10000
	{
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		s := startSim(b, Config{Devices: n, Kind: KindMEBx})
		runtime.GC()
		runtime.ReadMemStats(&after)
		used := (after.HeapInuse + after.StackInuse) - (before.HeapInuse + before.StackInuse)
		b.ReportMetric(float64(used)/n, "bytes/device")
		b.ReportMetric(float64(len(s.Addrs())), "devices")
		runtime.KeepAlive(s)
	}
	// One fleet is the measurement (bounded in time and count); b.N is unused.
}

// BenchmarkRequests measures authenticated Get requests per second across
// 64 devices, one connection per device as real clients do.
func BenchmarkRequests(b *testing.B) {
	s := startSim(b, Config{Devices: 64, Kind: KindMEBx})
	addrs := s.Addrs()
	var next atomic.Int64
	body := envelope(actionGet, amtPrefix+"AMT_GeneralSettings", "1", nil, "")
	b.SetParallelism(16)
	start := time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		a := addrs[int(next.Add(1)-1)%len(addrs)]
		c := newClient(b, s, a, "admin", testPassword)
		for pb.Next() {
			if st, _, err := c.post(body); err != nil || st != 200 {
				panic(fmt.Sprintf("request: %v %d", err, st))
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}
