// Package testpeers gives tests the real peers they need: a private
// redis-server per test, and the Samba AD DC and step-ca that `make test`
// starts through scripts/ and announces in the environment.
//
// Without a peer a test skips with a message saying how to get it, unless
// AMTOPS_REQUIRE_PEERS=1 (set by `make test`), where a missing peer fails
// the test so that CI never passes by skipping.
package testpeers

import (
	"os"
	"testing"
)

// RequireEnv is set by `make test` so that missing peers fail tests.
const RequireEnv = "AMTOPS_REQUIRE_PEERS"

// Missing skips t, or fails it when peers are required.
func Missing(t testing.TB, peer, how string) {
	t.Helper()
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%s is required (%s=1) but not available: %s", peer, RequireEnv, how)
	}
	t.Skipf("%s not available: %s", peer, how)
}
