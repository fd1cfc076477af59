package console_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/redis/go-redis/v9"

	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/server/rest/resttest"
	"github.com/amtops/amtops/server/store"
)

// startBrowserSite runs a server with devices put through the REST API
// and returns it with a read-role token.
func startBrowserSite(t *testing.T, devices int) (*resttest.Site, string) {
	t.Helper()
	site := resttest.Start(t)
	var ds []string
	for i := range devices {
		ds = append(ds, fmt.Sprintf(`{"id":"dev%03d","hostName":"pc%03d","domain":"corp.test","ip":"10.20.%d.%d","subnet":"10.20.%d.0/24"}`,
			i, i, i/250, i%250+1, i/250))
	}
	site.MustCall(t, site.Operate, "POST", "/api/v1/devices", `{"devices":[`+strings.Join(ds, ",")+`]}`, nil)
	return site, site.ReadToken(t, "viewer")
}

// fail records a failed operation on a device, as phase 1 or 2 would.
func fail(t *testing.T, redisAddr, id, step, reason string) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	st := store.New(rdb, nil, store.Options{Prefix: config.DefaultServer().Redis.KeyPrefix})
	_, err := st.UpdateDevice(context.Background(), id, func(d *domain.Device) error {
		d.LastErrorStep, d.LastError = step, reason
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// record stores a certificate record and an AD account for a device, as
// phase 1 would.
func record(t *testing.T, redisAddr, id, serial string) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	st := store.New(rdb, nil, store.Options{Prefix: config.DefaultServer().Redis.KeyPrefix})
	ctx := context.Background()
	now := time.Now().UTC()
	err := st.PutCertificate(ctx, domain.CertificateRecord{Serial: serial, DeviceID: id, Purpose: domain.PurposeServerAuth,
		Status: domain.CertRevoked, Reason: domain.ReasonSuperseded, RevokedAt: now, Subject: id + ".corp.test",
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0), CA: "builtin", Profile: "server-auth"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.UpdateDevice(ctx, id, func(d *domain.Device) error {
		d.ADAccountDN, d.SPNs = "CN="+id+",OU=AMT,DC=corp,DC=test", []string{"HTTP/" + id + ".corp.test:16993"}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// agentWith stores an agent that heartbeats now, as the API would record it.
func agentWith(t *testing.T, redisAddr, id, version, addr string, hellos int) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	st := store.New(rdb, nil, store.Options{Prefix: config.DefaultServer().Redis.KeyPrefix})
	ctx := context.Background()
	if err := st.PutAgent(ctx, domain.Agent{ID: id, Name: id, LastHeartbeat: time.Now(), Subnets: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/24")}}); err != nil {
		t.Fatal(err)
	}
	if err := st.RecordLoad(ctx, id, domain.AgentLoad{InFlight: 1, Capacity: 64, Version: version, Address: addr}); err != nil {
		t.Fatal(err)
	}
	if err := st.CountHellos(ctx, id, hellos); err != nil {
		t.Fatal(err)
	}
}

// browser starts headless Chromium, or skips when it is not installed
// (fails when AMTOPS_REQUIRE_PEERS asks for every peer).
func browser(t *testing.T) context.Context {
	t.Helper()
	return browserWithin(t, 2*time.Minute)
}

// browserWithin is browser with the whole session bounded by d.
func browserWithin(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("AMTOPS_REQUIRE_PEERS") != "" {
			t.Fatal("chromium not installed (scripts/deps.sh test installs it) and AMTOPS_REQUIRE_PEERS is set")
		}
		t.Skip("chromium not installed: scripts/deps.sh test installs Debian's chromium")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path),
		chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.WindowSize(1280, 900),
		// The site's own CA signs the console's certificate; the browser
		// under test does not have it installed.
		chromedp.Flag("ignore-certificate-errors", true))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	ctx, cancelC := context.WithTimeout(ctx, d)
	t.Cleanup(func() { cancelC(); cancelB(); cancelA() })
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[int](`1`)); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	// Accept the console's confirm() dialogs, from another goroutine than
	// the one receiving the events.
	opening := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for _, err := range opening {
			if err != nil {
				return
			}
			go func() {
				_ = chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
					_, err := cdp.Call(ctx, tg, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
					return err
				}))
			}()
		}
	}()
	return ctx
}

// shots is where screenshots go: $AMTOPS_SCREENSHOT_DIR, or the test's
// temporary directory.
func shots(t *testing.T) string {
	if d := os.Getenv("AMTOPS_SCREENSHOT_DIR"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

func shot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Sleep(300*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s", p)
}

func login(t *testing.T, ctx context.Context, base, token string) {
	t.Helper()
	err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("#login-token")))
	if err != nil {
		t.Fatalf("login: %v", err)
	}
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(sel))); err != nil {
		t.Fatalf("wait for %s: %v", sel, err)
	}
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// do runs steps or fails the test.
func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, steps...); err != nil {
		msg, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.getElementById("page-error") || {}).textContent || ""`))
		t.Fatalf("%s: %v (page error: %q)", what, err, msg)
	}
}

// poll waits until the expression is true in the page.
func poll(t *testing.T, ctx context.Context, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		page, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("main").innerText`))
		t.Fatalf("waiting for %s: %v; the page shows:\n%s", expr, err, page)
	}
}

func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// goTo changes the console's page as its links do (a hash change loads
// nothing, so Navigate would wait for a load forever).
func goTo(t *testing.T, ctx context.Context, hash string) {
	t.Helper()
	eval[string](t, ctx, `location.hash = "`+hash+`"`)
}

const firstDevice = `document.querySelector("#device-table .device-link").textContent`

func TestBrowser(t *testing.T) {
	ctx := browser(t)
	b, read := startBrowserSite(t, 120)
	dir := shots(t)

	t.Run("wrong token refused", func(t *testing.T) {
		login(t, ctx, b.Base, "not-a-token")
		poll(t, ctx, `document.getElementById("login-error").textContent.includes("refused")`)
		shot(t, ctx, dir, "login-refused")
	})

	t.Run("operate: overview, devices, device, batch", func(t *testing.T) {
		login(t, ctx, b.Base, b.Operate)
		if got := text(t, ctx, "#total-devices"); got != "120" {
			t.Fatalf("overview shows %q devices", got)
		}
		if got := text(t, ctx, "#overview"); !strings.Contains(got, "By AMT generation") || !strings.Contains(got, "unknown\t120") {
			t.Fatalf("overview: %s", got)
		}
		// Bars are sized through CSSOM: the page's CSP refuses style attributes.
		if w := eval[int](t, ctx, `document.querySelector("#overview .bar").offsetWidth`); w == 0 {
			t.Error("count bars have no width")
		}
		shot(t, ctx, dir, "overview")

		goTo(t, ctx, "#/devices")
		do(t, ctx, "devices", chromedp.WaitVisible(chromedp.CSS("#device-table .device-link")))
		rows := eval[int](t, ctx, `document.querySelectorAll("#device-table .device-link").length`)
		if first := eval[string](t, ctx, firstDevice); rows != 50 || first != "dev000" {
			t.Fatalf("first page: %d rows from %q", rows, first)
		}
		shot(t, ctx, dir, "devices-page1")
		do(t, ctx, "next page", chromedp.Click(chromedp.CSS("#next-page")))
		poll(t, ctx, firstDevice+` === "dev050"`)
		do(t, ctx, "previous page", chromedp.Click(chromedp.CSS("#prev-page")))
		poll(t, ctx, firstDevice+` === "dev000"`)

		// Search narrows the list by part of a name: pc110–pc119.
		goTo(t, ctx, "#/devices?query=pc11")
		poll(t, ctx, `document.querySelectorAll("#device-table .device-link").length === 10 && `+firstDevice+` === "dev110"`)
		shot(t, ctx, dir, "devices-search")

		do(t, ctx, "open device", chromedp.Click(chromedp.CSS("#device-table .device-link")), chromedp.WaitVisible(chromedp.CSS("#device-log")))
		if got := text(t, ctx, "#device h1"); got != "pc110.corp.test" {
			t.Fatalf("device page title %q", got)
		}
		shot(t, ctx, dir, "device")

		// A failure arriving while the device page is open shows there
		// without a reload (the hub's event stream), then on the overview
		// and under the failed filter.
		record(t, b.Redis, "dev007", "424242")
		goTo(t, ctx, "#/device/dev007")
		do(t, ctx, "device dev007", chromedp.WaitVisible(chromedp.CSS("#device-log")))
		if got := text(t, ctx, "#device-certs"); !strings.Contains(got, "424242") || !strings.Contains(got, "yes (superseded") {
			t.Fatalf("device certificates: %q", got)
		}
		if got := text(t, ctx, "#device table"); !strings.Contains(got, "CN=dev007,OU=AMT") || !strings.Contains(got, "HTTP/dev007.corp.test:16993") {
			t.Fatalf("device AD account and SPNs: %q", got)
		}
		// Stored as the server stores reasons: a summary line, the chain after.
		fail(t, b.Redis, "dev007", "S4", "directory: create account: insufficient access rights\nphase1: b1:dev007: publish-account: LDAP Result Code 50")
		poll(t, ctx, `(document.getElementById("device-error") || {}).textContent === "Failed at S4: directory: create account: insufficient access rights"`)
		if got := eval[string](t, ctx, `document.querySelector("#device-error-details pre").textContent`); got != "phase1: b1:dev007: publish-account: LDAP Result Code 50" {
			t.Fatalf("error details %q", got)
		}
		shot(t, ctx, dir, "device-failed")
		goTo(t, ctx, "#/overview")
		poll(t, ctx, `(document.querySelector("#overview .error a") || {}).textContent === "1"`)
		do(t, ctx, "failed link", chromedp.Click(chromedp.CSS("#overview .error a")))
		poll(t, ctx, `document.querySelectorAll("#device-table .device-link").length === 1 && `+firstDevice+` === "dev007"`)
		shot(t, ctx, dir, "devices-failed")

		// A collection's page lists its suppressed members; Allow lifts it.
		b.MustCall(t, b.Operate, "POST", "/api/v1/collections", `{"name":"lab","autoProvision":true}`, nil)
		b.MustCall(t, b.Operate, "POST", "/api/v1/collections/lab/members", `{"deviceIds":["dev003","dev004"]}`, nil)
		b.MustCall(t, b.Operate, "POST", "/api/v1/auto-provision/suppressed", `{"deviceIds":["dev004","dev005"],"suppressed":true}`, nil)
		goTo(t, ctx, "#/collections")
		do(t, ctx, "open collection", chromedp.WaitVisible(chromedp.CSS(".collection-link")), chromedp.Click(chromedp.CSS(".collection-link")),
			chromedp.WaitVisible(chromedp.CSS("#suppressed-table")))
		if got := text(t, ctx, "#suppressed-table"); !strings.Contains(got, "dev004") || strings.Contains(got, "dev003") || strings.Contains(got, "dev005") {
			t.Fatalf("suppressed members: %q", got)
		}
		shot(t, ctx, dir, "collection")
		do(t, ctx, "allow", chromedp.Click(chromedp.CSS("#suppressed-table button")), chromedp.WaitVisible(chromedp.CSS("#no-suppressed")))

		agentWith(t, b.Redis, "lab-agent", "v7.1.0", "127.0.0.1:40404", 33)
		goTo(t, ctx, "#/agents")
		poll(t, ctx, `/lab-agent\tv7\.1\.0\t127\.0\.0\.1:40404\t10\.20\.0\.0\/24\t.*\tonline\t1 of 64\t33\t/.test(document.getElementById("agent-table").innerText)`)
		shot(t, ctx, dir, "agents")

		goTo(t, ctx, "#/batches")
		do(t, ctx, "start batch",
			chromedp.WaitVisible(chromedp.CSS("#batch-start")),
			chromedp.SendKeys(chromedp.CSS("#batch-devices"), "dev001 dev002"),
			chromedp.Click(chromedp.CSS("#batch-start")),
			chromedp.WaitVisible(chromedp.CSS("#batch-progress")))
		if got := text(t, ctx, "#batch-progress"); !strings.Contains(got, "of 2") {
			t.Fatalf("batch progress %q", got)
		}
		// Jobs not started are cancelled at once; ones in phase 1 stop at
		// their next step. No agent runs here, so the batch may stay open.
		do(t, ctx, "cancel", chromedp.Click(chromedp.CSS("#batch-cancel")))
		poll(t, ctx, `/done|cancel requested/.test(document.getElementById("batch-progress").textContent)`)
		shot(t, ctx, dir, "batch")
	})

	t.Run("read role cannot start a batch", func(t *testing.T) {
		eval[bool](t, ctx, `sessionStorage.clear(), true`) // as Log out does, without its reload
		login(t, ctx, b.Base, read)
		do(t, ctx, "overview", chromedp.WaitVisible(chromedp.CSS("#total-devices")))
		goTo(t, ctx, "#/batches")
		do(t, ctx, "batches", chromedp.WaitVisible(chromedp.CSS("#batch-start")))
		if !eval[bool](t, ctx, `document.getElementById("batch-start").disabled`) {
			t.Fatal("start button enabled for the read role")
		}
		shot(t, ctx, dir, "batches-read-role")
	})
}
