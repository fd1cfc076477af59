package amtsim

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/icholy/digest"
	"github.com/rs/zerolog"
)

const testPassword = "P@ssw0rd1"

// startSim runs a simulator on a random private 127.x range and random
// ports (packages run in parallel), retrying on address collisions.
func startSim(t testing.TB, cfg Config) *Sim {
	t.Helper()
	if cfg.Password == "" {
		cfg.Password = testPassword
	}
	if cfg.CommitDelay == 0 {
		cfg.CommitDelay = 30 * time.Millisecond
	}
	cfg.Log = zerolog.Nop()
	fixedBase := cfg.BaseIP.IsValid()
	var lastErr error
	for attempt := 0; attempt < 8; attempt++ {
		n, _ := rand.Int(rand.Reader, big.NewInt(1<<20))
		v := n.Int64()
		if !fixedBase {
			cfg.BaseIP = netip.AddrFrom4([4]byte{127, byte(100 + v%150), byte(v >> 8 % 250), 1})
			if cfg.Overrides != nil {
				t.Fatal("startSim: Overrides need a fixed BaseIP")
			}
		}
		cfg.HTTPPort = 20000 + int(v%20000)
		cfg.TLSPort = cfg.HTTPPort + 1
		s, err := New(cfg)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		select {
		case <-s.Ready():
			t.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run: %v", err)
				}
			})
			return s
		case err := <-done:
			cancel()
			lastErr = err
		}
	}
	t.Fatalf("simulator did not start: %v", lastErr)
	return nil
}

func fixedBase(t testing.TB) netip.Addr {
	t.Helper()
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<16))
	v := n.Int64()
	return netip.AddrFrom4([4]byte{127, byte(100 + v%150), byte(v >> 8), 1})
}

// wsman is a minimal hand-written WS-Man client for the tests.
type wsman struct {
	t      testing.TB
	client *http.Client
	url    string
	msg    int
}

func newClient(t testing.TB, s *Sim, a netip.Addr, user, password string) *wsman {
	t.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: 1}
	t.Cleanup(tr.CloseIdleConnections)
	return &wsman{t: t, url: fmt.Sprintf("http://%s:%d/wsman", a, s.HTTPPort()),
		client: &http.Client{Timeout: 20 * time.Second, Transport: &digest.Transport{Username: user, Password: password, Transport: tr}}}
}

func envelope(action, uri, msgID string, sels map[string]string, body string) string {
	var ss string
	if len(sels) > 0 {
		ss = "<w:SelectorSet>"
		for k, v := range sels {
			ss += fmt.Sprintf(`<w:Selector Name="%s">%s</w:Selector>`, k, v)
		}
		ss += "</w:SelectorSet>"
	}
	return `<?xml version="1.0" encoding="utf-8"?><Envelope xmlns="http://www.w3.org/2003/05/soap-envelope" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd">` +
		`<Header><a:Action>` + action + `</a:Action><a:To>/wsman</a:To><w:ResourceURI>` + uri + `</w:ResourceURI><a:MessageID>` + msgID +
		`</a:MessageID><a:ReplyTo><a:Address>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo><w:OperationTimeout>PT60S</w:OperationTimeout>` +
		ss + `</Header><Body>` + body + `</Body></Envelope>`
}

func (c *wsman) post(body string) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodPost, c.url, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/soap+xml; charset=utf-8")
	res, err := c.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, err
}

// do sends one operation and fails the test on transport errors.
func (c *wsman) do(action, uri string, sels map[string]string, body string) (int, []byte) {
	c.t.Helper()
	c.msg++
	st, b, err := c.post(envelope(action, uri, fmt.Sprint(c.msg), sels, body))
	if err != nil {
		c.t.Fatalf("%s %s: %v", action, uri, err)
	}
	return st, b
}

func (c *wsman) ok(action, uri string, sels map[string]string, body string) []byte {
	c.t.Helper()
	st, b := c.do(action, uri, sels, body)
	if st != http.StatusOK {
		c.t.Fatalf("%s %s: HTTP %d: %s", action, uri, st, b)
	}
	return b
}

func (c *wsman) get(uri string, sels map[string]string) []byte {
	return c.ok(actionGet, uri, sels, "")
}

func (c *wsman) enumerate(uri string) []byte {
	return c.ok(actionEnumerate, uri, nil, `<n:Enumerate xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration"/>`)
}

// pull enumerates and pulls; it returns the PullResponse document.
func (c *wsman) pull(uri string) []byte {
	c.t.Helper()
	ctx := textOf(c.t, c.enumerate(uri), "EnumerationContext")
	return c.ok(actionPull, uri, nil, `<n:Pull xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration"><n:EnumerationContext>`+ctx+`</n:EnumerationContext><n:MaxElements>999</n:MaxElements></n:Pull>`)
}

// invoke calls a method with raw parameter XML (elements in prefix h).
func (c *wsman) invoke(uri, method string, sels map[string]string, params string) []byte {
	c.t.Helper()
	return c.ok(uri+"/"+method, uri, sels, `<h:`+method+`_INPUT xmlns:h="`+uri+`">`+params+`</h:`+method+`_INPUT>`)
}

// rv invokes and returns ReturnValue.
func (c *wsman) rv(uri, method string, params string) string {
	c.t.Helper()
	return textOf(c.t, c.invoke(uri, method, nil, params), "ReturnValue")
}

func (c *wsman) put(uri string, sels map[string]string, class, props string) []byte {
	c.t.Helper()
	return c.ok(actionPut, uri, sels, `<h:`+class+` xmlns:h="`+uri+`">`+props+`</h:`+class+`>`)
}

// textOf returns the text of the first element with that local name.
func textOf(t testing.TB, doc []byte, local string) string {
	t.Helper()
	v, ok := findText(doc, local)
	if !ok {
		t.Fatalf("no <%s> in %s", local, doc)
	}
	return v
}

func findText(doc []byte, local string) (string, bool) {
	dec := xml.NewDecoder(bytes.NewReader(doc))
	for {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == local {
			var s string
			if err := dec.DecodeElement(&s, &se); err != nil {
				return "", false
			}
			return strings.TrimSpace(s), true
		}
	}
}

func allTexts(doc []byte, local string) []string {
	var out []string
	dec := xml.NewDecoder(bytes.NewReader(doc))
	for {
		tok, err := dec.Token()
		if err != nil {
			return out
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == local {
			var s string
			if dec.DecodeElement(&s, &se) == nil {
				out = append(out, strings.TrimSpace(s))
			}
		}
	}
}

// elementPaths lists distinct element paths ({ns}local/…) in document order.
func elementPaths(t testing.TB, doc []byte, sub string) []string {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(doc))
	var stack, out []string
	seen := map[string]bool{}
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("parse: %v\n%s", err, doc)
		}
		switch x := tok.(type) {
		case xml.StartElement:
			stack = append(stack, "{"+x.Name.Space+"}"+x.Name.Local)
			p := strings.Join(stack, "/")
			if !seen[p] && (sub == "" || strings.Contains(p, sub)) {
				seen[p] = true
				out = append(out, p)
			}
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		}
	}
	return out
}

var challengeRE = regexp.MustCompile(`^Digest realm="(Digest:[0-9A-F]{32})", nonce="([^"]+)", stale="(true|false)", qop="auth"$`)

// digestAuth computes an Authorization header by hand (qop=auth, MD5).
func digestAuth(user, realm, password, nonce, uri string) string {
	h1 := md5.Sum([]byte(user + ":" + realm + ":" + password))
	h2 := md5.Sum([]byte("POST:" + uri))
	cnonce, nc := "0a4f113b", "00000001"
	r := md5.Sum([]byte(hex.EncodeToString(h1[:]) + ":" + nonce + ":" + nc + ":" + cnonce + ":auth:" + hex.EncodeToString(h2[:])))
	return fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", qop=auth, nc=%s, cnonce="%s", response="%s", algorithm=MD5`,
		user, realm, nonce, uri, nc, cnonce, hex.EncodeToString(r[:]))
}

// waitListening polls until addr:port accepts (restart after commit).
func waitListening(t testing.TB, a netip.Addr, port int, want bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(a, uint16(port)).String(), time.Second)
		if err == nil {
			c.Close()
		}
		if (err == nil) == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s:%d listening=%v never happened", a, port, !want)
}

// fakeClock is a settable clock for Config.Now.
func fakeClock() (now func() time.Time, advance func(time.Duration)) {
	t0 := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	return func() time.Time { mu.Lock(); defer mu.Unlock(); return t0 },
		func(d time.Duration) { mu.Lock(); t0 = t0.Add(d); mu.Unlock() }
}

// rawGet returns a sender of one AMT_GeneralSettings Get to a's 16992 with
// the given Authorization header (none if empty); bodies are closed.
func rawGet(t *testing.T, s *Sim, a netip.Addr) func(auth string) *http.Response {
	url := fmt.Sprintf("http://%s:%d/wsman", a, s.HTTPPort())
	body := envelope(actionGet, amtPrefix+"AMT_GeneralSettings", "1", nil, "")
	return func(auth string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { res.Body.Close() })
		return res
	}
}
