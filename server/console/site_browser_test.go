package console_test

import (
	"context"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/amtops/amtops/internal/amtsim"
	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/site"
)

// siteNet is the loopback range of the simulated subnets: the first two
// octets in $AMTOPS_BROWSER_NET, else 127.64 (no other test uses it).
func siteNet(t *testing.T) [2]byte {
	t.Helper()
	s := os.Getenv("AMTOPS_BROWSER_NET")
	if s == "" {
		s = "127.64"
	}
	a, err := netip.ParseAddr(s + ".0.0")
	if err != nil || !a.IsLoopback() {
		t.Fatalf("AMTOPS_BROWSER_NET %q: want two octets of a loopback address", s)
	}
	b := a.As4()
	return [2]byte{b[0], b[1]}
}

// longPoll waits up to d for expr to be true in the page.
func longPoll(t *testing.T, ctx context.Context, expr string, d time.Duration) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(d), chromedp.WithPollingInterval(500*time.Millisecond))); err != nil {
		page, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("main").innerText`))
		t.Fatalf("waiting for %s: %v; the page shows:\n%s", expr, err, page)
	}
}

// A whole simulated site of 200 devices — server, two agents, the AMT
// simulator — provisioned by a batch started from the console, followed
// there to 100%; the one device with an admin password set by hand that
// the site does not know fails, and its page shows the step and reason.
func TestBrowserProvisionsASite(t *testing.T) {
	ctx := browserWithin(t, 6*time.Minute)
	sctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	s, err := site.Start(sctx, site.Config{Devices: 200, Subnets: 2, Profile: amtsim.KindMEBx, Strangers: 1,
		Net: siteNet(t), Dir: t.TempDir(),
		// The demo's timings: the stranger's retries take seconds, not minutes.
		Server: func(c *config.Server) { c.Phase2.RetryDelay, c.Phase2.ReapEvery = 2*time.Second, time.Second }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if _, err := s.Discover(sctx); err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(s.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	base := "https://" + s.Server.ConsoleAddr()
	dir := shots(t)

	login(t, ctx, base, strings.TrimSpace(string(tok)))
	if got := text(t, ctx, "#total-devices"); got != "200" {
		t.Fatalf("overview shows %q devices", got)
	}
	shot(t, ctx, dir, "site-overview")
	goTo(t, ctx, "#/batches")
	do(t, ctx, "start the provisioning batch",
		chromedp.WaitVisible(chromedp.CSS("#batch-start")),
		chromedp.SendKeys(chromedp.CSS("#batch-collection"), site.Collection),
		chromedp.Click(chromedp.CSS("#batch-start")),
		chromedp.WaitVisible(chromedp.CSS("#batch-progress")))
	// The page follows the batch live (server-sent events) to its end.
	longPoll(t, ctx, `/100% 199 ok · 1 failed · 0 cancelled of 200 — done/.test(document.getElementById("batch-progress").textContent)`, 4*time.Minute)
	shot(t, ctx, dir, "site-batch-done")

	// The failure is grouped by step and reason, one click from the device.
	longPoll(t, ctx, `(document.querySelector("#failures") || {}).textContent.includes("401 from device: admin password not accepted")`, 20*time.Second)
	do(t, ctx, "open the failed device", chromedp.Click(chromedp.CSS("#failures a")), chromedp.WaitVisible(chromedp.CSS("#device-error")))
	if got := text(t, ctx, "#device-error"); got != "Failed at connect: 401 from device: admin password not accepted" {
		t.Fatalf("device page: %q", got)
	}
	shot(t, ctx, dir, "site-device-failed")
	goTo(t, ctx, "#/overview")
	longPoll(t, ctx, `(document.querySelector("#overview .error a") || {}).textContent === "1"`, 20*time.Second)
}
