package wsman_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/wsman"
)

func newClient(t *testing.T, hs *httptest.Server, user, pass string) *wsman.Client {
	t.Helper()
	c, err := wsman.New(wsman.Config{
		Address:  strings.TrimPrefix(hs.URL, "http://"),
		Username: user, Password: pass,
		Logger: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func readAll(r *http.Request) []byte {
	b, _ := io.ReadAll(r.Body)
	return b
}

func fixtureHandler(t *testing.T, rel string) func(http.ResponseWriter, []byte) {
	t.Helper()
	body := readFixture(t, rel)
	return func(w http.ResponseWriter, _ []byte) { reply(w, http.StatusOK, body) }
}

func TestDigest(t *testing.T) {
	tests := []struct {
		name      string
		password  string
		calls     int
		expire    bool // retire nonces between calls (device forgot them)
		wantErr   error
		wantAuths []bool // per HTTP request: was Authorization sent
	}{
		{"first request challenged then succeeds", "Secret-1!", 1, false, nil, []bool{false, true}},
		{"challenge cached across calls", "Secret-1!", 3, false, nil, []bool{false, true, true, true}},
		{"stale nonce retried with new nonce", "Secret-1!", 2, true, nil, []bool{false, true, true, true}},
		{"wrong password is unauthorized", "wrong", 1, false, wsman.ErrUnauthorized, []bool{false, true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newAMTServer("admin", "Secret-1!", fixtureHandler(t, "amt/general/get.xml"))
			hs := httptest.NewServer(srv)
			t.Cleanup(hs.Close)
			c := newClient(t, hs, "admin", tc.password)
			var err error
			for i := 0; i < tc.calls && err == nil; i++ {
				if tc.expire {
					srv.expireNonces()
				}
				var n *wsman.Node
				n, err = c.Get(context.Background(), gsURI)
				if err == nil && n.Get("HostName") != "Test Host Name" {
					t.Fatalf("HostName = %q", n.Get("HostName"))
				}
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil && wsman.Retryable(err) {
				t.Errorf("Retryable(%v) = true", err)
			}
			auths := srv.authHeaders()
			if len(auths) != len(tc.wantAuths) {
				t.Fatalf("device saw %d requests, want %d", len(auths), len(tc.wantAuths))
			}
			for i, a := range auths {
				if (a != "") != tc.wantAuths[i] {
					t.Errorf("request %d Authorization = %q", i, a)
				}
			}
		})
	}
}

// TestDigestNonceCount checks that a reused nonce is sent with an increasing
// nc, as RFC 7616 requires and AMT enforces for replay protection.
func TestDigestNonceCount(t *testing.T) {
	srv := newAMTServer("admin", "Secret-1!", fixtureHandler(t, "amt/general/get.xml"))
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	c := newClient(t, hs, "admin", "Secret-1!")
	for i := 0; i < 3; i++ {
		if _, err := c.Get(context.Background(), gsURI); err != nil {
			t.Fatal(err)
		}
	}
	auths := srv.authHeaders()
	for i, want := range []string{"nc=00000001", "nc=00000002", "nc=00000003"} {
		if !strings.Contains(auths[i+1], want) {
			t.Errorf("request %d: %q lacks %s", i+1, auths[i+1], want)
		}
	}
}

const faultBody = `<?xml version="1.0" encoding="UTF-8"?><a:Envelope xmlns:a="http://www.w3.org/2003/05/soap-envelope" xmlns:b="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:c="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:e="http://schemas.xmlsoap.org/ws/2004/09/transfer"><a:Header><b:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</b:To><b:RelatesTo>1</b:RelatesTo><b:Action a:mustUnderstand="true">http://schemas.dmtf.org/wbem/wsman/1/wsman/fault</b:Action><b:MessageID>uuid:00000000-8086-8086-8086-000000000001</b:MessageID></a:Header><a:Body><a:Fault><a:Code><a:Value>a:Sender</a:Value><a:Subcode><a:Value>e:AlreadyExists</a:Value></a:Subcode></a:Code><a:Reason><a:Text xml:lang="en-US">The sender attempted to create a resource which already exists.</a:Text></a:Reason><a:Detail><c:FaultDetail>http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/InvalidValue</c:FaultDetail></a:Detail></a:Fault></a:Body></a:Envelope>`

func TestReplyErrors(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		body      string
		check     func(t *testing.T, err error)
		retryable bool
	}{
		{"fault on 400", http.StatusBadRequest, faultBody, func(t *testing.T, err error) {
			var fe *wsman.FaultError
			if !errors.As(err, &fe) {
				t.Fatalf("err %v is not a FaultError", err)
			}
			want := wsman.FaultError{HTTPStatus: 400, Code: "Sender", Subcode: "AlreadyExists",
				Reason: "The sender attempted to create a resource which already exists.",
				Detail: "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/InvalidValue"}
			if *fe != want {
				t.Errorf("fault = %+v\nwant %+v", *fe, want)
			}
		}, false},
		{"timed-out fault is transient", http.StatusBadRequest, strings.Replace(faultBody, "e:AlreadyExists", "c:TimedOut", 1), nil, true},
		{"server error", http.StatusInternalServerError, "oops", func(t *testing.T, err error) {
			var he *wsman.HTTPError
			if !errors.As(err, &he) || he.StatusCode != 500 {
				t.Fatalf("err = %v", err)
			}
		}, true},
		{"not found", http.StatusNotFound, "", nil, false},
		{"garbage body", http.StatusOK, "<html>no</html>", func(t *testing.T, err error) {
			if !errors.Is(err, wsman.ErrMalformed) {
				t.Fatalf("err = %v", err)
			}
		}, false},
		{"too large", http.StatusOK, strings.Repeat("x", 5<<20), func(t *testing.T, err error) {
			if !errors.Is(err, wsman.ErrResponseTooLarge) {
				t.Fatalf("err = %v", err)
			}
		}, false},
		{"entity bomb", http.StatusOK, `<!DOCTYPE e [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><e>&b;</e>`, func(t *testing.T, err error) {
			if !errors.Is(err, wsman.ErrMalformed) || !strings.Contains(err.Error(), "document type declaration refused") {
				t.Fatalf("err = %v", err)
			}
		}, false},
		{"redirect is not followed", http.StatusTemporaryRedirect, "", func(t *testing.T, err error) {
			var he *wsman.HTTPError
			if !errors.As(err, &he) || he.StatusCode != http.StatusTemporaryRedirect {
				t.Fatalf("err = %v", err)
			}
		}, false},
		{"empty get body", http.StatusOK, string(must(readFixtureNoT("amt/publicprivate/delete.xml"))), func(t *testing.T, err error) {
			if !errors.Is(err, wsman.ErrMalformed) {
				t.Fatalf("err = %v", err)
			}
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newAMTServer("admin", "pw", func(w http.ResponseWriter, _ []byte) { reply(w, tc.status, []byte(tc.body)) })
			hs := httptest.NewServer(srv)
			t.Cleanup(hs.Close)
			_, err := newClient(t, hs, "admin", "pw").Get(context.Background(), gsURI)
			if err == nil {
				t.Fatal("no error")
			}
			if tc.check != nil {
				tc.check(t, err)
			}
			if got := wsman.Retryable(err); got != tc.retryable {
				t.Errorf("Retryable(%v) = %v, want %v", err, got, tc.retryable)
			}
		})
	}
}

func readFixtureNoT(rel string) ([]byte, error) {
	return readFixtureFile(rel)
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestReturnValue(t *testing.T) {
	srv := newAMTServer("admin", "pw", fixtureHandler(t, "ips/http/addproxyaccesspoint_2058.xml"))
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	c := newClient(t, hs, "admin", "pw")
	out, err := c.Invoke(context.Background(), wsman.IPSSchema+"IPS_HTTPProxyService", "AddProxyAccessPoint", nil, nil)
	var rve *wsman.ReturnValueError
	if !errors.As(err, &rve) {
		t.Fatalf("err = %v, want ReturnValueError", err)
	}
	if *rve != (wsman.ReturnValueError{Method: "AddProxyAccessPoint", Code: 2058, Name: "DUPLICATE"}) {
		t.Errorf("rve = %+v", *rve)
	}
	if out == nil || out.Get("ReturnValue") != "2058" {
		t.Errorf("output not returned with the error: %+v", out)
	}
	if wsman.Retryable(err) {
		t.Error("ReturnValueError must be permanent")
	}
	if _, err := c.Invoke(context.Background(), wsman.IPSSchema+"IPS_HTTPProxyService", "OtherMethod", nil, nil); !errors.Is(err, wsman.ErrMalformed) {
		t.Errorf("mismatched _OUTPUT: err = %v", err)
	}
}

// The names AMT-WSMAN.md gives: 2068 is NOT_FOUND, a duplicate is 2058.
func TestStatusNames(t *testing.T) {
	tests := []struct {
		code int
		name string
	}{
		{wsman.StatusDuplicate, "DUPLICATE"},
		{wsman.StatusInvalidKey, "INVALID_KEY"},
		{wsman.StatusInvalidCert, "INVALID_CERT"},
		{wsman.StatusCertKeyNotMatch, "CERT_KEY_NOT_MATCH"},
		{wsman.StatusNotFound, "NOT_FOUND"},
		{2068, "NOT_FOUND"},
		{2058, "DUPLICATE"},
		{4242, "UNKNOWN_4242"},
	}
	for _, tc := range tests {
		if got := wsman.StatusName(tc.code); got != tc.name {
			t.Errorf("StatusName(%d) = %s, want %s", tc.code, got, tc.name)
		}
	}
	notFound := fmt.Errorf("wrapped: %w", &wsman.ReturnValueError{Method: "Delete", Code: 2068, Name: "NOT_FOUND"})
	if wsman.IsReturnValue(notFound, wsman.StatusDuplicate) {
		t.Error("2068 (NOT_FOUND) taken for a duplicate")
	}
	if !wsman.IsReturnValue(notFound, wsman.StatusInvalidKey, wsman.StatusNotFound) {
		t.Error("IsReturnValue missed 2068 in its list")
	}
	if wsman.IsReturnValue(errors.New("plain"), wsman.StatusNotFound) {
		t.Error("IsReturnValue on an error without a ReturnValue")
	}
}

// TestEnumerateFollowsContext serves a Pull without EndOfSequence (as real
// devices do for CIM_Chip) and checks the client pulls again with the new
// context until EndOfSequence.
func TestEnumerateFollowsContext(t *testing.T) {
	replies := [][]byte{
		readFixture(t, "cim/chip/enumerate.xml"),
		readFixture(t, "cim/chip/pull.xml"),              // context D4020000…, no EndOfSequence
		readFixture(t, "cim/software/identity/pull.xml"), // EndOfSequence
	}
	i := 0
	srv := newAMTServer("admin", "pw", func(w http.ResponseWriter, _ []byte) {
		reply(w, http.StatusOK, replies[i])
		i++
	})
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	items, err := newClient(t, hs, "admin", "pw").Enumerate(context.Background(), wsman.CIMSchema+"CIM_Chip")
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 12 || items[0].Local != "CIM_Chip" || items[11].Get("InstanceID") != "AMT FW Core Version" {
		t.Fatalf("got %d items", len(items))
	}
	if !strings.Contains(string(srv.bodies[2]), "<EnumerationContext>D4020000-0000-0000-0000-000000000000</EnumerationContext>") {
		t.Errorf("second pull did not use the new context:\n%s", srv.bodies[2])
	}
}

func TestEnumerateNeverEnding(t *testing.T) {
	n := 0
	srv := newAMTServer("admin", "pw", func(w http.ResponseWriter, _ []byte) {
		n++
		if n == 1 {
			reply(w, http.StatusOK, readFixture(t, "cim/chip/enumerate.xml"))
			return
		}
		reply(w, http.StatusOK, []byte(`<a:Envelope xmlns:a="http://www.w3.org/2003/05/soap-envelope" xmlns:g="http://schemas.xmlsoap.org/ws/2004/09/enumeration"><a:Body><g:PullResponse><g:EnumerationContext>X</g:EnumerationContext><g:Items></g:Items></g:PullResponse></a:Body></a:Envelope>`))
	})
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	_, err := newClient(t, hs, "admin", "pw").Enumerate(context.Background(), wsman.CIMSchema+"CIM_Chip")
	if !errors.Is(err, wsman.ErrMalformed) || n != 4 {
		t.Fatalf("err = %v after %d requests", err, n)
	}
}

// TestOneRequestInFlight hammers one Client from several goroutines; the
// device must never see two requests at once.
func TestOneRequestInFlight(t *testing.T) {
	srv := newAMTServer("admin", "pw", fixtureHandler(t, "amt/general/get.xml"))
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	c := newClient(t, hs, "admin", "pw")
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				if _, err := c.Get(context.Background(), gsURI); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if m := srv.maxIn.Load(); m != 1 {
		t.Errorf("max requests in flight = %d, want 1", m)
	}
}

func TestContextCancel(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); hs.Close() })
	c := newClient(t, hs, "admin", "pw")
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-entered; cancel() }()
	_, err := c.Get(ctx, gsURI)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if wsman.Retryable(err) {
		t.Error("caller cancellation must not be retryable")
	}
}

func TestChunkedReply(t *testing.T) {
	body := readFixture(t, "cim/software/identity/pull.xml")
	srv := newAMTServer("admin", "pw", func(w http.ResponseWriter, b []byte) {
		if strings.Contains(string(b), "/Enumerate<") {
			reply(w, http.StatusOK, readFixture(t, "cim/software/identity/enumerate.xml"))
			return
		}
		// no Content-Length and explicit flushes: net/http sends chunks
		w.Header().Set("Content-Type", "application/soap+xml; charset=UTF-8")
		for i := 0; i < len(body); i += 100 {
			_, _ = w.Write(body[i:min(i+100, len(body))])
			w.(http.Flusher).Flush()
		}
	})
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	items, err := newClient(t, hs, "admin", "pw").Enumerate(context.Background(), wsman.CIMSchema+"CIM_SoftwareIdentity")
	if err != nil || len(items) != 11 {
		t.Fatalf("items %d err %v", len(items), err)
	}
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"unauthorized", fmt.Errorf("x: %w", wsman.ErrUnauthorized), false},
		{"fault", &wsman.FaultError{Subcode: "AlreadyExists"}, false},
		{"return value", &wsman.ReturnValueError{Code: 1}, false},
		{"5xx", &wsman.HTTPError{StatusCode: 503}, true},
		{"4xx", &wsman.HTTPError{StatusCode: 403}, false},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), true},
		{"canceled", context.Canceled, false},
		{"conn refused", &net.OpError{Op: "dial", Err: errors.New("connect: connection refused")}, true},
		{"eof", io.ErrUnexpectedEOF, true},
		{"unknown authority", x509.UnknownAuthorityError{}, false},
		{"pin", wsman.ErrPinMismatch, false},
		{"plain", errors.New("something"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := wsman.Retryable(tc.err); got != tc.want {
				t.Errorf("Retryable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestRefusedConnectionIsRetryable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, err := wsman.New(wsman.Config{Address: addr, Username: "admin", Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Get(context.Background(), gsURI)
	if err == nil || !wsman.Retryable(err) {
		t.Fatalf("err = %v, Retryable = false", err)
	}
}

func TestTLS(t *testing.T) {
	srv := newAMTServer("admin", "pw", fixtureHandler(t, "amt/general/get.xml"))
	hs := httptest.NewTLSServer(srv)
	t.Cleanup(hs.Close)
	leaf := hs.Certificate()
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	pin := sha256.Sum256(leaf.Raw)
	other := sha256.Sum256([]byte("another certificate"))
	addr := strings.TrimPrefix(hs.URL, "https://")
	tests := []struct {
		name    string
		tls     *wsman.TLSConfig
		wantErr bool
	}{
		{"root pool", &wsman.TLSConfig{RootCAs: pool, ServerName: "example.com"}, false},
		{"wrong server name", &wsman.TLSConfig{RootCAs: pool, ServerName: "amt.example.org"}, true},
		{"untrusted root", &wsman.TLSConfig{RootCAs: x509.NewCertPool()}, true},
		{"pinned leaf", &wsman.TLSConfig{PinSHA256: pin[:]}, false},
		{"pin mismatch", &wsman.TLSConfig{PinSHA256: other[:]}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := wsman.New(wsman.Config{Address: addr, TLS: tc.tls, Username: "admin", Password: "pw"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			if !strings.HasPrefix(c.URL(), "https://") {
				t.Errorf("URL = %s", c.URL())
			}
			_, err = c.Get(context.Background(), gsURI)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil && wsman.Retryable(err) {
				t.Errorf("TLS identity failure must be permanent: %v", err)
			}
		})
	}
}

func TestConfig(t *testing.T) {
	pin := make([]byte, 32)
	tests := []struct {
		name    string
		cfg     wsman.Config
		wantURL string
		wantErr bool
	}{
		{"default http port", wsman.Config{Address: "10.1.2.3"}, "http://10.1.2.3:16992/wsman", false},
		{"default https port", wsman.Config{Address: "amt.example", TLS: &wsman.TLSConfig{PinSHA256: pin}}, "https://amt.example:16993/wsman", false},
		{"explicit port", wsman.Config{Address: "127.0.0.1:8080"}, "http://127.0.0.1:8080/wsman", false},
		{"ipv6", wsman.Config{Address: "::1"}, "http://[::1]:16992/wsman", false},
		{"empty", wsman.Config{}, "", true},
		{"bad port", wsman.Config{Address: "h:99999"}, "", true},
		{"tls without trust", wsman.Config{Address: "h", TLS: &wsman.TLSConfig{}}, "", true},
		{"short pin", wsman.Config{Address: "h", TLS: &wsman.TLSConfig{PinSHA256: pin[:5]}}, "", true},
		{"pin and roots", wsman.Config{Address: "h", TLS: &wsman.TLSConfig{PinSHA256: pin, RootCAs: x509.NewCertPool()}}, "", true},
		{"first use", wsman.Config{Address: "h", TLS: &wsman.TLSConfig{TrustFirstUse: true}}, "https://h:16993/wsman", false},
		{"first use and pin", wsman.Config{Address: "h", TLS: &wsman.TLSConfig{TrustFirstUse: true, PinSHA256: pin}}, "", true},
		{"first use and roots", wsman.Config{Address: "h", TLS: &wsman.TLSConfig{TrustFirstUse: true, RootCAs: x509.NewCertPool()}}, "", true},
		{"max TLS 1.1", wsman.Config{Address: "h", TLS: &wsman.TLSConfig{TrustFirstUse: true, MaxVersion: tls.VersionTLS11}}, "", true},
		{"max TLS 1.2", wsman.Config{Address: "h", TLS: &wsman.TLSConfig{TrustFirstUse: true, MaxVersion: tls.VersionTLS12}}, "https://h:16993/wsman", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := wsman.New(tc.cfg)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if err == nil && c.URL() != tc.wantURL {
				t.Errorf("URL = %s, want %s", c.URL(), tc.wantURL)
			}
			if err == nil && c.ServerLeafSHA256() != nil {
				t.Error("a server fingerprint before any handshake")
			}
		})
	}
}

// A read that fails transiently is tried again; a write only when the
// device answered that it failed, since after a lost answer it may have
// been done.
func TestTransientFailuresAreRetried(t *testing.T) {
	ok := readFixture(t, "amt/general/get.xml")
	tests := []struct {
		name     string
		failures int
		call     func(c *wsman.Client) error
		calls    int
		wantErr  bool
	}{
		{"get after one 500", 1, func(c *wsman.Client) error { _, err := c.Get(context.Background(), gsURI); return err }, 2, false},
		{"get gives up after two retries", 5, func(c *wsman.Client) error { _, err := c.Get(context.Background(), gsURI); return err }, 3, true},
		{"put the device refused with a 500 is sent again", 1, func(c *wsman.Client) error {
			_, err := c.Put(context.Background(), wsman.Instance{ResourceURI: gsURI, Class: "AMT_GeneralSettings"})
			return err
		}, 2, false},
		{"put after a dropped connection is not sent again", -1, func(c *wsman.Client) error {
			_, err := c.Put(context.Background(), wsman.Instance{ResourceURI: gsURI, Class: "AMT_GeneralSettings"})
			return err
		}, 1, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			calls := 0
			srv := newAMTServer("admin", "pw", func(w http.ResponseWriter, _ []byte) {
				mu.Lock()
				calls++
				n := calls
				mu.Unlock()
				if tc.failures < 0 && n == 1 { // the write arrives, the answer is lost
					hj, _ := w.(http.Hijacker)
					conn, _, _ := hj.Hijack()
					conn.Close()
					return
				}
				if n <= tc.failures {
					reply(w, http.StatusInternalServerError, []byte("busy"))
					return
				}
				reply(w, http.StatusOK, ok)
			})
			hs := httptest.NewServer(srv)
			t.Cleanup(hs.Close)
			err := tc.call(newClient(t, hs, "admin", "pw"))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if calls != tc.calls {
				t.Fatalf("%d calls reached the device, want %d", calls, tc.calls)
			}
		})
	}
}

// A port where something other than AMT listens gets a permanent
// verdict: plain HTTP where TLS was expected, or a reply that is not HTTP.
func TestNotAnAMTListener(t *testing.T) {
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	t.Cleanup(plain.Close)
	garbage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		c, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = buf.WriteString("SSH-2.0-OpenSSH_9.2\r\n\r\n")
		_ = buf.Flush()
	}))
	t.Cleanup(garbage.Close)
	for _, tc := range []struct {
		name string
		cfg  wsman.Config
		want string
	}{
		{"plain HTTP on the TLS port", wsman.Config{Address: plain.Listener.Addr().String(), TLS: &wsman.TLSConfig{TrustFirstUse: true}},
			"server gave HTTP response to HTTPS client"},
		{"not HTTP", wsman.Config{Address: garbage.Listener.Addr().String()}, "malformed HTTP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.ReadRetries = -1
			c, err := wsman.New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			_, err = c.Get(context.Background(), gsURI)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to say %q", err, tc.want)
			}
			if wsman.Retryable(err) {
				t.Errorf("Retryable(%v) = true", err)
			}
		})
	}
}
