package wsman_test

import (
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/icholy/digest"

	"github.com/amtops/amtops/internal/wsman/wsmantest"
)

// fixturesDir is the real-device reply corpus beside the repository.
func fixturesDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join("testdata", "responses")
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		t.Fatalf("fixtures folder %s missing (a copy of shared/fixtures/wsman-responses): %v", dir, err)
	}
	return dir
}

func readFixtureFile(rel string) ([]byte, error) {
	return os.ReadFile(filepath.Join("testdata", "responses", rel))
}

func readFixture(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixturesDir(t), rel))
	if err != nil {
		t.Fatalf("read fixture %s: %v", rel, err)
	}
	return b
}

// allFixtures lists every .xml fixture, relative to the fixtures folder.
func allFixtures(t testing.TB) []string {
	t.Helper()
	return slices.Sorted(maps.Keys(wsmantest.Fixtures(t)))
}

// amtServer challenges and verifies HTTP Digest like AMT firmware does
// (realm "Digest:<32 hex>", qop="auth", MD5, HTML body on 401) and hands
// authenticated requests to handle.
type amtServer struct {
	realm, user, pass string
	handle            func(w http.ResponseWriter, body []byte)

	mu       sync.Mutex
	valid    map[string]bool // nonces currently accepted
	expired  map[string]bool // nonces we issued and then retired
	seen     []string        // Authorization headers, in order ("" when absent)
	bodies   [][]byte
	inflight atomic.Int32
	maxIn    atomic.Int32
}

func newAMTServer(user, pass string, handle func(w http.ResponseWriter, body []byte)) *amtServer {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return &amtServer{
		realm: "Digest:" + strings.ToUpper(hex.EncodeToString(b[:])),
		user:  user, pass: pass, handle: handle,
		valid: map[string]bool{}, expired: map[string]bool{},
	}
}

// expireNonces retires every nonce issued so far, as AMT does after a while.
func (s *amtServer) expireNonces() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for n := range s.valid {
		s.expired[n] = true
	}
	s.valid = map[string]bool{}
}

func (s *amtServer) authHeaders() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}

func (s *amtServer) challenge(w http.ResponseWriter, stale bool) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	nonce := hex.EncodeToString(b[:])
	s.valid[nonce] = true
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Digest realm="%s", nonce="%s", stale="%t", qop="auth"`, s.realm, nonce, stale))
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = io.WriteString(w, "<html><head></head><body>Unauthorized</body></html>")
}

func md5hex(s string) string { h := md5.Sum([]byte(s)); return hex.EncodeToString(h[:]) }

func (s *amtServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := s.inflight.Add(1)
	defer s.inflight.Add(-1)
	for {
		m := s.maxIn.Load()
		if n <= m || s.maxIn.CompareAndSwap(m, n) {
			break
		}
	}
	body, _ := io.ReadAll(r.Body)
	if r.Method != http.MethodPost || r.URL.Path != "/wsman" {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	s.mu.Lock()
	auth := r.Header.Get("Authorization")
	s.seen = append(s.seen, auth)
	if auth == "" {
		s.challenge(w, false)
		s.mu.Unlock()
		return
	}
	cred, err := digest.ParseCredentials(auth)
	if err != nil || cred.Username != s.user || cred.Realm != s.realm || cred.QOP != "auth" {
		s.challenge(w, false)
		s.mu.Unlock()
		return
	}
	if !s.valid[cred.Nonce] {
		s.challenge(w, s.expired[cred.Nonce])
		s.mu.Unlock()
		return
	}
	ha1 := md5hex(s.user + ":" + s.realm + ":" + s.pass)
	ha2 := md5hex(r.Method + ":" + cred.URI)
	want := md5hex(fmt.Sprintf("%s:%s:%08x:%s:%s:%s", ha1, cred.Nonce, cred.Nc, cred.Cnonce, cred.QOP, ha2))
	if cred.Response != want {
		s.challenge(w, false)
		s.mu.Unlock()
		return
	}
	s.bodies = append(s.bodies, body)
	s.mu.Unlock()
	s.handle(w, body)
}

func reply(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/soap+xml; charset=UTF-8")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
