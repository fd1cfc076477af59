package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/amtops/amtops/internal/fleet"
)

// profileFleet waits until after has passed since the devices began, then
// takes a CPU profile of length from every server and agent at once into
// dir (<process>.cpu.pprof), then their heaps (<process>.heap.pprof), for
// `go tool pprof`. Errors are reported, the bench goes on.
func profileFleet(ctx context.Context, f *fleet.Fleet, dir string, after, length time.Duration, say func(string, ...any)) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(time.Until(f.T0.Add(after))):
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		say("profile: %v", err)
		return
	}
	client := &http.Client{Timeout: length + 30*time.Second}
	var wg sync.WaitGroup
	for name, addr := range f.ProfileAddrs {
		wg.Go(func() {
			cpu := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, int(length.Seconds()))
			if err := fetchProfile(ctx, client, cpu, filepath.Join(dir, name+".cpu.pprof")); err != nil {
				say("profile %s: %v", name, err)
			}
			// The heap as the CPU window ends, with the fleet still in work.
			heap := fmt.Sprintf("http://%s/debug/pprof/heap", addr)
			if err := fetchProfile(ctx, client, heap, filepath.Join(dir, name+".heap.pprof")); err != nil {
				say("heap profile %s: %v", name, err)
			}
		})
	}
	wg.Wait()
	say("  CPU profiles of %s written to %s", length, dir)
}

func fetchProfile(ctx context.Context, c *http.Client, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, resp.Body)
	return errors.Join(err, out.Close())
}
