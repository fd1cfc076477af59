package wsman_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/wsman"
)

func BenchmarkDecodePull(b *testing.B) {
	data := readFixture(b, "cim/software/identity/pull.xml")
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := wsman.Decode(data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetDigest measures one authenticated Get round trip over
// loopback HTTP with a cached digest challenge (the steady state).
func BenchmarkGetDigest(b *testing.B) {
	srv := newAMTServer("admin", "pw", nil)
	body := readFixture(b, "amt/general/get.xml")
	srv.handle = func(w http.ResponseWriter, _ []byte) { reply(w, 200, body) }
	hs := httptest.NewServer(srv)
	b.Cleanup(hs.Close)
	c, err := wsman.New(wsman.Config{Address: hs.Listener.Addr().String(), Username: "admin", Password: "pw"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	ctx := context.Background()
	start := time.Now()
	n := 0
	for b.Loop() {
		if _, err := c.Get(ctx, gsURI); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "calls/s")
}
