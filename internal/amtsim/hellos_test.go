package amtsim

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
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
	// The device counts a Hello once its write returned: poll briefly.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		st, _ := s.Device(a)
		if st.HelloWindow && st.HellosSent >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("window %v, sent %d; want open, at least 4", st.HelloWindow, st.HellosSent)
		}
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

// TestHelloLifecycle: Hellos stop once a remote configuration has begun;
// after a full unprovision, HelloAfterUnprovision starts a new cycle.
func TestHelloLifecycle(t *testing.T) {
	addr, ch := helloSink(t)
	root := newTestCA(t, "provisioning root", 2048)
	s := startSim(t, Config{Devices: 1, BaseIP: base83(t), Kind: KindFactory, Firmware: Firmware{HelloAddr: addr,
		HelloInterval: 20 * time.Millisecond, HelloAfterUnprovision: true, KeepHashesOnUnprovision: true,
		TrustedDomain: provDomain, TrustHashes: [][]byte{sha256Of(root.der)}}})
	a := s.Addrs()[0]
	next(t, ch)
	waitListening(t, a, s.TLSPort(), true)
	prov := provClient(provLeaf(t, root, "prov.amt.test", nil), root.der)
	c := tlsClient(t, s, a, "admin", "admin", prov)
	const admin = "Adm1n!pass"
	if rv := c.rv(amtPrefix+"AMT_AuthorizationService", "SetAdminAclEntryEx", `<h:Username>admin</h:Username><h:DigestPassword>`+
		digestB64(s, a, "admin", admin)+`</h:DigestPassword>`); rv != "0" {
		t.Fatalf("SetAdminAclEntryEx: %s", rv)
	}
	c = tlsClient(t, s, a, "admin", admin, prov)
	timeSync(t, c)
	// State 1 now: no more Hellos.
	time.Sleep(60 * time.Millisecond)
	for len(ch) > 0 {
		<-ch
	}
	time.Sleep(250 * time.Millisecond)
	if n := len(ch); n != 0 {
		t.Fatalf("%d Hellos during the remote configuration", n)
	}
	scs := amtPrefix + "AMT_SetupAndConfigurationService"
	if rv := c.rv(scs, "CommitChanges", ""); rv != "0" {
		t.Fatalf("CommitChanges: %s", rv)
	}
	waitListening(t, a, s.HTTPPort(), true) // 11.8 in ACM without TLS
	h := newClient(t, s, a, "admin", admin)
	if rv := h.rv(scs, "Unprovision", `<h:ProvisioningMode>1</h:ProvisioningMode>`); rv != "0" {
		t.Fatalf("Unprovision: %s", rv)
	}
	r := next(t, ch)
	if r.h.RetryCount != 0 || r.h.Flags != 0 {
		t.Errorf("first Hello after unprovision: retry %d flags %d, want 0 0", r.h.RetryCount, r.h.Flags)
	}
	waitListening(t, a, s.TLSPort(), true)
	if _, err := session(s, a, prov); err != nil {
		t.Errorf("provisioning session after the new Hello: %v", err)
	}
}

// TestFactoryHTTP: with FactoryHTTP, a state-0 device answers Identify on
// 16992 and refuses every login there, even the right MEBx password.
func TestFactoryHTTP(t *testing.T) {
	s := startSim(t, Config{Devices: 1, BaseIP: base83(t), Kind: KindFactory, Firmware: Firmware{FactoryHTTP: true}})
	a := s.Addrs()[0]
	id := `<?xml version="1.0"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:i="http://schemas.dmtf.org/wbem/wsman/identity/1/wsmanidentity.xsd"><s:Header/><s:Body><i:Identify/></s:Body></s:Envelope>`
	res, err := http.Post(fmt.Sprintf("http://%s:%d/wsman", a, s.HTTPPort()), "application/soap+xml", strings.NewReader(id))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Errorf("Identify: HTTP %d", res.StatusCode)
	}
	if code, _, err := newClient(t, s, a, "admin", "admin").post(envelope(actionGet, amtPrefix+"AMT_GeneralSettings", "1", nil, "")); err != nil || code != 401 {
		t.Errorf("login on 16992 in state 0: HTTP %d %v, want 401", code, err)
	}
}
