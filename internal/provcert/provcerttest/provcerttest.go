// Package provcerttest gives tests a provisioning certificate made for the
// run (provcert.NewTestPair) already loaded as the server would load it.
package provcerttest

import (
	"testing"

	"github.com/amtops/amtops/internal/provcert"
)

// Identity makes a provisioning root and leaf for domain and loads them;
// the pair holds the PEM and the root hash devices should trust.
func Identity(t testing.TB, domain string) (*provcert.Identity, *provcert.TestPair) {
	t.Helper()
	pair, err := provcert.NewTestPair(domain)
	if err != nil {
		t.Fatal(err)
	}
	id, err := provcert.LoadPEM(pair.ChainPEM, pair.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return id, pair
}
