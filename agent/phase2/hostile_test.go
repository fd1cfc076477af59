package phase2_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/agent/phase2"
	amtopsv1 "github.com/amtops/amtops/proto/amtops/v1"
)

const soapNS = "http://www.w3.org/2003/05/soap-envelope"

// billionLaughs is the classic entity bomb: a billion "lol"s if expanded.
func billionLaughs() string {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">`)
	prev := "lol"
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, `<!ENTITY lol%d "%s">`, i, strings.Repeat("&"+prev+";", 10))
		prev = "lol" + strconv.Itoa(i)
	}
	b.WriteString(`]><a:Envelope xmlns:a="` + soapNS + `"><a:Body><g:AMT_SetupAndConfigurationService xmlns:g="x">` +
		`<g:ProvisioningState>&lol9;</g:ProvisioningState></g:AMT_SetupAndConfigurationService></a:Body></a:Envelope>`)
	return b.String()
}

// hostileDevice is one misbehaving "AMT" on the HTTP port; its TLS port
// refuses connections, as a factory device's does.
type hostileDevice struct {
	name      string
	handler   http.HandlerFunc
	want      string // in the recorded error
	permanent bool
}

func hostileDevices() []hostileDevice {
	return []hostileDevice{
		{"billion laughs", func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(billionLaughs()))
		}, "document type declaration refused", true},
		{"100 MB body", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/soap+xml")
			chunk := []byte(strings.Repeat("<x>lol</x>", 1<<16/10))
			for sent := 0; sent < 100<<20; sent += len(chunk) {
				if _, err := w.Write(chunk); err != nil {
					return // the client stopped reading: expected
				}
			}
		}, "response too large", true},
		{"slow loris", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			for i := 0; i < 200; i++ {
				if _, err := w.Write([]byte(" ")); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}, "deadline exceeded", false},
		{"wrong namespace", func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(`<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body/></s:Envelope>`))
		}, `want soap Envelope`, true},
		{"not HTTP", func(w http.ResponseWriter, _ *http.Request) {
			// Whatever the request, the port answers with something that is
			// not HTTP (another service on 16992).
			c, buf, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			_, _ = buf.WriteString("SSH-2.0-OpenSSH_9.2\r\n\x00\x01garbage\r\n\r\n")
			_ = buf.Flush()
		}, "malformed HTTP", true},
		{"redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://127.23.0.99/steal", http.StatusFound)
		}, "redirect to http://127.23.0.99/steal not followed", true},
	}
}

// Hostile devices, each behind its own address, run at the same time as a
// healthy one on one executor: every hostile device fails at connect with
// its own specific reason (never the closed TLS port's "connection
// refused"), classified as it should be, and the healthy device still
// provisions. Issue 14 item 2 and defect 6.
func TestHostileDevices(t *testing.T) {
	sim := startSim(t, 1, nil)
	c := newCA(t)
	ex := phase2.NewExecutor(phase2.Config{
		HTTPPort: sim.HTTPPort(), TLSPort: sim.TLSPort(),
		CallTimeout: 2 * time.Second, CommitWait: 40 * time.Millisecond,
		CommitDeadline: 5 * time.Second, PollInterval: 20 * time.Millisecond,
		Log: zerolog.Nop(),
	})
	devs := hostileDevices()
	jobs := make([]*amtopsv1.Phase2Job, len(devs))
	for i, d := range devs {
		ip := fmt.Sprintf("127.23.0.%d", i+1)
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(sim.HTTPPort())))
		if err != nil {
			t.Fatalf("%s: listen: %v", d.name, err)
		}
		srv := &http.Server{Handler: d.handler, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
		j := provisionJob(t, c, sim.Addrs()[0], fmt.Sprintf("hostile%d", i))
		j.Target.Ip = ip
		jobs[i] = j
	}
	healthy := provisionJob(t, c, sim.Addrs()[0], "healthy")

	results := make([]phase2.Result, len(devs)+1)
	var wg sync.WaitGroup
	start := time.Now()
	for i, j := range append(jobs, healthy) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			results[i] = ex.Run(ctx, j, nil)
		}()
	}
	wg.Wait()
	t.Logf("all devices done in %s", time.Since(start).Round(time.Millisecond))

	for i, d := range devs {
		t.Run(d.name, func(t *testing.T) {
			res := results[i]
			if res.Err == nil {
				t.Fatal("a hostile device provisioned")
			}
			msg := res.Err.Error()
			if res.ErrorStep != phase2.StepConnect || !strings.Contains(msg, d.want) {
				t.Errorf("step %q err %q; want a failure at %s saying %q", res.ErrorStep, msg, phase2.StepConnect, d.want)
			}
			if i := strings.Index(msg, "connection refused"); i >= 0 && i < strings.Index(msg, d.want) {
				t.Errorf("err %q leads with the TLS fallback's refusal", msg)
			}
			for _, pw := range []string{provPassword, newPassword} {
				if strings.Contains(msg, pw) {
					t.Error("the error carries a password")
				}
			}
			if res.Permanent != d.permanent {
				t.Errorf("permanent %t, want %t (%s)", res.Permanent, d.permanent, msg)
			}
		})
	}
	if res := results[len(devs)]; res.Err != nil {
		t.Fatalf("the healthy device beside the hostile ones: step %s: %v", res.ErrorStep, res.Err)
	}
	checkProvisioned(t, sim, healthy, results[len(devs)])
}
