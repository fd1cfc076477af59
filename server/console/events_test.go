package console_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/server/admin/admintest"
	"github.com/amtops/amtops/server/console"
)

// hubSite is an AdminService on real Redis with a hub served over TLS.
type hubSite struct {
	s   *admintest.Server
	hub *console.Hub
	ts  *httptest.Server
}

func startHub(t *testing.T, interval time.Duration) *hubSite {
	t.Helper()
	s := admintest.Start(t, admintest.Options{})
	s.Device(t, "d1", "pc1", "10.0.0.1", domain.StatusNotProvisioned)
	s.Device(t, "d2", "pc2", "10.0.0.2", domain.StatusProvisioned)
	hub := console.NewHub(s.Svc, console.HubOptions{Interval: interval})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = hub.Run(ctx) }()
	ts := httptest.NewTLSServer(hub)
	t.Cleanup(func() {
		cancel()
		<-done // streams end with the hub, so Close does not wait on them
		ts.Close()
	})
	return &hubSite{s: s, hub: hub, ts: ts}
}

// open starts a stream; events arrive on the returned channel until ctx ends.
func (h *hubSite) open(t *testing.T, ctx context.Context, token, device string) (int, <-chan [2]string) {
	t.Helper()
	url := h.ts.URL + "/api/v1/events"
	if device != "" {
		url += "?device=" + device
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := h.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan [2]string, 64)
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		close(ch)
		return resp.StatusCode, ch
	}
	go func() {
		defer resp.Body.Close()
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		name := ""
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				name = line[7:]
			case strings.HasPrefix(line, "data: "):
				select {
				case ch <- [2]string{name, line[6:]}:
				default:
				}
			}
		}
	}()
	return resp.StatusCode, ch
}

func next(t *testing.T, ch <-chan [2]string, name string) string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatalf("stream ended before a %s event", name)
			}
			if e[0] == name {
				return e[1]
			}
		case <-deadline:
			t.Fatalf("no %s event", name)
		}
	}
}

func TestEventsAuthAndContent(t *testing.T) {
	h := startHub(t, 100*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, c := range []struct {
		name, token string
		want        int
	}{{"no token", "", http.StatusUnauthorized}, {"wrong token", "nope", http.StatusUnauthorized}} {
		if code, _ := h.open(t, ctx, c.token, ""); code != c.want {
			t.Errorf("%s: %d, want %d", c.name, code, c.want)
		}
	}
	code, ch := h.open(t, ctx, h.s.Read, "d1")
	if code != http.StatusOK {
		t.Fatalf("read token: %d", code)
	}
	var sum []struct {
		Devices  string            `json:"devices"` // int64: a string in protojson
		ByStatus map[string]string `json:"byStatus"`
	}
	if err := json.Unmarshal([]byte(next(t, ch, "summary")), &sum); err != nil {
		t.Fatal(err)
	}
	if len(sum) != 1 || sum[0].Devices != "2" || sum[0].ByStatus["DEVICE_STATUS_PROVISIONED"] != "1" {
		t.Fatalf("summary = %+v", sum)
	}
	dev := next(t, ch, "device")
	if !strings.Contains(dev, `"id":"d1"`) || strings.Contains(dev, `"id":"d2"`) {
		t.Fatalf("device event = %s", dev)
	}
	// A change reaches the open stream without a reload.
	if _, err := h.s.Store.UpdateDevice(ctx, "d1", func(d *domain.Device) error { d.LastError = "boom"; return nil }); err != nil {
		t.Fatal(err)
	}
	for i := 0; !strings.Contains(next(t, ch, "device"), `"lastError":"boom"`); i++ {
		if i == 50 {
			t.Fatal("the failure never reached the stream")
		}
	}
}

// commands is how many commands Redis has processed.
func commands(t *testing.T, h *hubSite) int64 {
	t.Helper()
	info, err := h.s.RDB.Info(context.Background(), "stats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(l, "total_commands_processed:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatal("no total_commands_processed")
	return 0
}

// TestFanOutBounded: fifty consoles (on two device pages) cost Redis
// about what one does, since the hub reads once per tick for all.
func TestFanOutBounded(t *testing.T) {
	h := startHub(t, 100*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rate := func() float64 {
		time.Sleep(300 * time.Millisecond) // settle
		before, t0 := commands(t, h), time.Now()
		time.Sleep(1500 * time.Millisecond)
		return float64(commands(t, h)-before) / time.Since(t0).Seconds()
	}
	_, first := h.open(t, ctx, h.s.Read, "d1")
	next(t, first, "summary")
	one := rate()
	var wg sync.WaitGroup
	for i := range 49 {
		dev := []string{"", "d1"}[i%2]
		_, ch := h.open(t, ctx, h.s.Read, dev)
		wg.Add(1)
		go func() { defer wg.Done(); next(t, ch, "batches") }()
	}
	wg.Wait()
	if n := h.hub.Subscribers(); n != 50 {
		t.Fatalf("%d subscribers", n)
	}
	fifty := rate()
	t.Logf("redis commands/s: 1 console %.0f, 50 consoles %.0f", one, fifty)
	if fifty > one*1.5+20 {
		t.Fatalf("50 consoles cost %.0f commands/s, one %.0f: the fan-out is not shared", fifty, one)
	}
}
