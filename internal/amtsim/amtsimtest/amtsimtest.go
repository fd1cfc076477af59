// Package amtsimtest runs AMT simulator fleets for tests: on a random
// loopback range and random ports, so that packages testing in parallel
// do not collide, retrying when a port is taken.
package amtsimtest

import (
	"context"
	"crypto/rand"
	"math/big"
	"net/netip"
	"testing"

	"github.com/amtops/amtops/internal/amtsim"
)

// Start runs a simulator with cfg until t ends. A zero BaseIP gets a
// random 127.100-249.x.1, zero ports a random pair from 20000; overrides
// are keyed by device index (0 is the first device) and join
// cfg.Overrides.
func Start(t testing.TB, cfg amtsim.Config, overrides map[int]amtsim.Override) *amtsim.Sim {
	t.Helper()
	pickBase, pickPorts := !cfg.BaseIP.IsValid(), cfg.HTTPPort == 0
	var lastErr error
	for range 8 {
		n, err := rand.Int(rand.Reader, big.NewInt(1<<20))
		if err != nil {
			t.Fatal(err)
		}
		v := n.Int64()
		if pickBase {
			cfg.BaseIP = netip.AddrFrom4([4]byte{127, byte(100 + v%150), byte(v >> 8 % 250), 1})
		}
		if pickPorts {
			cfg.HTTPPort = 20000 + int(v%20000)
			cfg.TLSPort = cfg.HTTPPort + 1
		}
		c := cfg
		c.Overrides = map[netip.Addr]amtsim.Override{}
		for a, o := range cfg.Overrides {
			c.Overrides[a] = o
		}
		for i, o := range overrides {
			a := cfg.BaseIP
			for range i {
				a = a.Next()
			}
			c.Overrides[a] = o
		}
		sim, err := amtsim.New(c)
		if err != nil {
			t.Fatalf("amtsim.New: %v", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- sim.Run(ctx) }()
		select {
		case <-sim.Ready():
			t.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("simulator: %v", err)
				}
			})
			return sim
		case err := <-done:
			cancel()
			lastErr = err
			if !pickBase && !pickPorts {
				t.Fatalf("simulator did not start: %v", err) // nothing to vary
			}
		}
	}
	t.Fatalf("simulator did not start: %v", lastErr)
	return nil
}
