package amtsim

import (
	"bytes"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/hello"
)

func TestHelloSchedule(t *testing.T) {
	got := helloSchedule(time.Minute)
	if len(got) != 40 {
		t.Fatalf("%d Hellos, want 40 (1 + 5 minutely + 11 five-minutely + 23 hourly)", len(got))
	}
	for _, c := range []struct {
		i    int
		want time.Duration
	}{{0, 0}, {5, 5 * time.Minute}, {6, 10 * time.Minute}, {16, time.Hour}, {17, 2 * time.Hour}, {39, 24 * time.Hour}} {
		if got[c.i] != c.want {
			t.Errorf("Hello %d at %s, want %s", c.i, got[c.i], c.want)
		}
	}
	if s := helloSchedule(time.Second); s[39] != 24*time.Minute {
		t.Errorf("1s unit: last Hello at %s, want 24m", s[39])
	}
}

type received struct {
	from netip.Addr
	h    hello.Hello
	err  error
}

// helloSink accepts Hellos on a 127.83.x address, as an agent's 9971 would.
func helloSink(t *testing.T) (string, <-chan received) {
	t.Helper()
	ln, err := net.Listen("tcp4", base83(t).Next().String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	out := make(chan received, 256)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := io.ReadAll(io.LimitReader(c, hello.MaxSize+1))
			c.Close()
			r := received{from: c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()}
			if err == nil {
				r.h, r.err = hello.Parse(b)
			} else {
				r.err = err
			}
			select {
			case out <- r:
			default:
			}
		}
	}()
	return ln.Addr().String(), out
}

func next(t *testing.T, ch <-chan received) received {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("hello from %s: %v", r.from, r.err)
		}
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no Hello within 5s")
	}
	return received{}
}

// TestHelloSender: factory devices send Hellos from their own address on
// the compressed schedule, with their GetUuid UUID and trusted hashes; an
// in-band trigger restarts the cycle; provisioned devices send none.
func TestHelloSender(t *testing.T) {
	addr, ch := helloSink(t)
	extra := sha256Of([]byte("site root"))
	base := base83(t)
	mebx, _ := addrAdd(base, 1)
	s := startSim(t, Config{Devices: 2, BaseIP: base, Kind: KindFactory, Overrides: map[netip.Addr]Override{mebx: {Kind: KindMEBx}},
		Firmware: Firmware{HelloAddr: addr, HelloInterval: 20 * time.Millisecond, TrustHashes: [][]byte{extra}, TrustedDomain: provDomain}})
	a := s.Addrs()[0]
	var retries []uint32
	for range 4 {
		r := next(t, ch)
		if r.from != a {
			t.Fatalf("Hello from %s, want only the factory device %s", r.from, a)
		}
		retries = append(retries, r.h.RetryCount)
		if r.h.Flags != 0 {
			t.Errorf("flags %d on a factory device", r.h.Flags)
		}
		if len(r.h.Hashes) != len(defaultHashes())+1 || !bytes.Equal(r.h.Hashes[len(r.h.Hashes)-1].Sum, extra) ||
			r.h.Hashes[len(r.h.Hashes)-1].Alg != hello.SHA256 {
			t.Errorf("hashes %d, last %x; want the defaults and the added one", len(r.h.Hashes), r.h.Hashes[len(r.h.Hashes)-1].Sum)
		}
		d := s.device(a)
		d.mu.Lock()
		w := d.wireUUID()
		d.mu.Unlock()
		if r.h.UUID != hello.UUID(w) {
			t.Errorf("UUID %x, want GetUuid's %s", r.h.UUID, base64.StdEncoding.EncodeToString(w[:]))
		}
	}
	for i, n := range retries {
		if n != uint32(i) {
			t.Fatalf("retry counts %v, want 0,1,2,3", retries)
		}
	}
	if st, _ := s.Device(a); !st.HelloWindow || st.HellosSent < 4 {
		t.Errorf("window %v, sent %d", st.HelloWindow, st.HellosSent)
	}

	// In-band trigger over the state API: a new cycle from retry 0.
	api := httptest.NewServer(s.StateHandler())
	t.Cleanup(api.Close)
	for _, tc := range []struct {
		name string
		addr string
		want int
	}{
		{"factory device", a.String(), http.StatusAccepted},
		{"provisioned device", mebx.String(), http.StatusConflict},
		{"not in the fleet", "127.0.0.1", http.StatusNotFound},
		{"not an address", "pc1", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := http.Post(api.URL+"/devices/"+tc.addr+"/hello", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != tc.want {
				t.Errorf("HTTP %d, want %d", res.StatusCode, tc.want)
			}
		})
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case r := <-ch:
			if r.err == nil && r.h.RetryCount == 0 {
				return // the triggered cycle started over
			}
		case <-deadline:
			t.Fatal("no retry-0 Hello after the trigger")
		}
	}
}
