package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/amtops/amtops/internal/fleet"
)

// secretSet is every secret the run made, each under a name for the
// report (never the value), in the encodings a leak would take: as is,
// base64, hex and JSON-escaped for text; for private keys, 24-byte
// windows at multiples of 48 bytes (so that their base64 lies inside one
// PEM line), raw, base64 and hex.
type secretSet struct {
	mu sync.Mutex
	m  map[string][]byte // name → needle
}

func newSecretSet() *secretSet { return &secretSet{m: map[string][]byte{}} }

// minNeedle is the shortest value searched for: shorter ones would hit
// by chance.
const minNeedle = 8

func (s *secretSet) put(name string, v []byte) {
	if len(v) < minNeedle {
		return
	}
	s.mu.Lock()
	s.m[name] = v
	s.mu.Unlock()
}

// addText adds a password or token.
func (s *secretSet) addText(name, v string) {
	v = strings.TrimSpace(v)
	s.put(name, []byte(v))
	s.put(name+" (base64)", []byte(base64.StdEncoding.EncodeToString([]byte(v))))
	s.put(name+" (hex)", []byte(hex.EncodeToString([]byte(v))))
	// As a JSON string: zerolog escapes quotes and backslashes only,
	// encoding/json HTML characters too.
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if enc.Encode(v) == nil {
		if q := bytes.TrimSpace(b.Bytes()); string(q[1:len(q)-1]) != v {
			s.put(name+" (JSON)", q[1:len(q)-1])
		}
	}
	if q, err := json.Marshal(v); err == nil && string(q[1:len(q)-1]) != v {
		s.put(name+" (JSON, HTML-escaped)", q[1:len(q)-1])
	}
}

// addKey adds raw private key bytes.
func (s *secretSet) addKey(name string, der []byte) {
	for off := 0; off+minNeedle <= len(der) && off < 48*8; off += 48 {
		w := der[off:min(off+24, len(der))]
		n := fmt.Sprintf("%s[%d:]", name, off)
		s.put(n, w)
		s.put(n+" (base64)", []byte(base64.StdEncoding.EncodeToString(w)))
		s.put(n+" (hex)", []byte(hex.EncodeToString(w)))
	}
}

// addSealed adds what a sealed value holds: a JSON record's private
// fields (certificates and serials are public), PEM private keys, text,
// or raw key bytes.
func (s *secretSet) addSealed(name string, plain []byte) {
	var rec map[string]any
	if json.Unmarshal(plain, &rec) == nil {
		for k, v := range rec {
			str, ok := v.(string)
			lk := strings.ToLower(k)
			if !ok || !(strings.Contains(lk, "key") || strings.Contains(lk, "password") ||
				strings.Contains(lk, "secret") || strings.Contains(lk, "passphrase")) {
				continue
			}
			if b, err := base64.StdEncoding.DecodeString(str); err == nil {
				s.addSealed(name+"."+k, b)
			} else {
				s.addText(name+"."+k, str)
			}
		}
		return
	}
	rest, found := plain, false
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		found = true
		if strings.Contains(blk.Type, "PRIVATE KEY") {
			s.addKey(name+" "+blk.Type, blk.Bytes)
		}
	}
	switch {
	case found:
	case isText(plain):
		s.addText(name, string(plain))
	default:
		s.addKey(name, plain)
	}
}

func isText(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return len(b) > 0
}

// marker reports a sealed record that only marks a job (it holds the
// device ID or FQDN): sealed to bind it to its key, not secret.
func marker(name string) bool {
	return strings.HasSuffix(name, "/activation") || strings.HasSuffix(name, "/sign-on-device")
}

// collectSecrets reads every sealed secret in Redis every 2 s until
// stopped (secrets come and go: pending passwords, job keys), once more
// at the stop, and the site's secret files.
func (r *runState) collectSecrets(ctx context.Context) (stop func()) {
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			r.readSealed(cctx)
			if sleep(cctx, 2*time.Second) != nil {
				return
			}
		}
	}()
	return func() {
		cancel()
		<-done
		r.readSealed(ctx)
		r.readSecretFiles()
	}
}

// readSealed opens every <prefix>:secret:<name> and the built-in CA's
// bundle; errors (Redis down during a fault) wait for the next round.
func (r *runState) readSealed(ctx context.Context) {
	iter := r.f.Redis().Scan(ctx, 0, "amtops:secret:*", 1000).Iterator()
	for iter.Next(ctx) {
		name := strings.TrimPrefix(iter.Val(), "amtops:secret:")
		if marker(name) {
			continue
		}
		if plain, err := r.st.GetSecret(ctx, name); err == nil {
			r.found.addSealed(name, plain)
		}
	}
	if b, err := r.ca().Get(ctx, "ca"); err == nil {
		r.found.addSealed("built-in CA", b)
	}
}

// readSecretFiles adds the site's secret files: the site key, the
// provisioning password and key, admin and enrollment tokens, and every
// private key the server and agents keep in their directories.
func (r *runState) readSecretFiles() {
	site := r.f.SiteDir()
	for _, n := range []string{"site.key", "provisioning.password"} {
		if b, err := os.ReadFile(filepath.Join(site, n)); err == nil {
			r.found.addText("file "+n, string(b))
		}
	}
	_ = filepath.WalkDir(r.f.Dir(), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(r.f.Dir(), path)
		top := strings.Split(rel, string(filepath.Separator))[0]
		if top == "log" || top == "bin" || top == "redis" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil || len(b) > 1<<20 {
			return nil
		}
		switch {
		case bytes.Contains(b, []byte("PRIVATE KEY")):
			r.found.addSealed("file "+rel, b)
		case strings.HasSuffix(path, ".token"):
			r.found.addText("file "+rel, string(b))
		}
		return nil
	})
}

// hit is one secret found somewhere it must not be.
type hit struct{ secret, where string }

// searcher finds any of many needles in a haystack in one pass: every
// needle is at least minNeedle bytes, indexed by its first minNeedle.
type searcher struct {
	byPrefix map[string][]needle
}

type needle struct {
	name string
	v    []byte
}

func (s *secretSet) searcher() *searcher {
	s.mu.Lock()
	defer s.mu.Unlock()
	x := &searcher{byPrefix: map[string][]needle{}}
	for name, v := range s.m {
		p := string(v[:minNeedle])
		x.byPrefix[p] = append(x.byPrefix[p], needle{name, v})
	}
	return x
}

// find reports each needle in b once.
func (x *searcher) find(b []byte, where string, seen map[string]bool) []hit {
	var out []hit
	for i := 0; i+minNeedle <= len(b); i++ {
		ns, ok := x.byPrefix[string(b[i:i+minNeedle])]
		if !ok {
			continue
		}
		for _, n := range ns {
			if !seen[n.name+where] && bytes.HasPrefix(b[i:], n.v) {
				seen[n.name+where] = true
				out = append(out, hit{n.name, where})
			}
		}
	}
	return out
}

// scanFigures say what the search covered.
type scanFigures struct {
	needles, logs, values, aofFiles int
	bytes                           int64
}

// scanSecrets searches every process log, every Redis value and the
// append-only file for every secret.
func (r *runState) scanSecrets(ctx context.Context) ([]hit, scanFigures, error) {
	x := r.found.searcher()
	fig := scanFigures{needles: len(x.all())}
	seen := map[string]bool{}
	var hits []hit
	files := func(dir, kind string, count *int) error {
		return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			*count++
			fig.bytes += int64(len(b))
			rel, _ := filepath.Rel(r.f.Dir(), path)
			hits = append(hits, x.find(b, kind+" "+rel, seen)...)
			return nil
		})
	}
	if err := files(r.f.LogDir(), "log", &fig.logs); err != nil {
		return nil, fig, err
	}
	if err := files(r.f.RedisDir(), "redis file", &fig.aofFiles); err != nil {
		return nil, fig, err
	}
	vals, err := fleet.RedisValues(ctx, r.f.Redis())
	if err != nil {
		return nil, fig, err
	}
	fig.values = len(vals)
	keys := make([]string, 0, len(vals))
	for k := range vals {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fig.bytes += int64(len(vals[k]))
		hits = append(hits, x.find(vals[k], "redis value "+k, seen)...)
	}
	return hits, fig, nil
}

func (x *searcher) all() []needle {
	var out []needle
	for _, ns := range x.byPrefix {
		out = append(out, ns...)
	}
	return out
}
