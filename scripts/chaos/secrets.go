package main

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/amtops/amtops/internal/fleet"
)

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
		if fleet.SealedMarker(name) {
			continue
		}
		if plain, err := r.st.GetSecret(ctx, name); err == nil {
			r.found.AddSealed(name, plain)
		}
	}
	if b, err := r.ca().Get(ctx, "ca"); err == nil {
		r.found.AddSealed("built-in CA", b)
	}
}

// readSecretFiles adds the site's secret files: the site key, the
// provisioning password and key, admin and enrollment tokens, and every
// private key the server and agents keep in their directories.
func (r *runState) readSecretFiles() {
	site := r.f.SiteDir()
	for _, n := range []string{"site.key", "provisioning.password"} {
		if b, err := os.ReadFile(filepath.Join(site, n)); err == nil {
			r.found.AddText("file "+n, string(b))
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
			r.found.AddSealed("file "+rel, b)
		case strings.HasSuffix(path, ".token"):
			r.found.AddText("file "+rel, string(b))
		}
		return nil
	})
}

// hit is one secret found somewhere it must not be.
type hit struct{ secret, where string }

// searcher finds any of many needles in a haystack in one pass: every
// needle is at least fleet.MinNeedle bytes, indexed by its first fleet.MinNeedle.
type searcher struct {
	byPrefix map[string][]needle
}

type needle struct {
	name string
	v    []byte
}

func newSearcher(s *fleet.Needles) *searcher {
	x := &searcher{byPrefix: map[string][]needle{}}
	for name, v := range s.All() {
		p := string(v[:fleet.MinNeedle])
		x.byPrefix[p] = append(x.byPrefix[p], needle{name, v})
	}
	return x
}

// find reports each needle in b once.
func (x *searcher) find(b []byte, where string, seen map[string]bool) []hit {
	var out []hit
	for i := 0; i+fleet.MinNeedle <= len(b); i++ {
		ns, ok := x.byPrefix[string(b[i:i+fleet.MinNeedle])]
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
	x := newSearcher(r.found)
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
