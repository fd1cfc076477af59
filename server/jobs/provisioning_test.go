package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/provcert"
)

// The provisioning certificate is loaded from its files, sealed in the
// site database, and never written to the log; the MEBx password comes
// from its file, the environment, or the factory default.
func TestLoadActivation(t *testing.T) {
	f := newFixture(t, nil, Site{})
	ctx := context.Background()
	pair, err := provcert.NewTestPair("amt.test")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rc := config.RemoteConfig{ChainFile: write("chain.pem", pair.ChainPEM), KeyFile: write("key.pem", pair.KeyPEM),
		TrustedDomain: "amt.test", Subnets: []config.RemoteConfigNet{{CIDR: "10.1.2.0/24", TrustedDomain: "lab.amt.test"}}}

	if a, err := LoadActivation(ctx, f.store, config.RemoteConfig{}, zerolog.Nop()); a != nil || err != nil {
		t.Fatalf("remote configuration off: %v %v", a, err)
	}
	t.Setenv("AMTOPS_MEBX_PASSWORD", "")
	var logs bytes.Buffer
	a, err := LoadActivation(ctx, f.store, rc, zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	if a.MEBxPassword != DefaultMEBxPassword || a.Identity.Chain().Leaf().Subject.CommonName != pair.LeafCN ||
		len(a.Subnets) != 1 || a.Subnets[0].Domain != "lab.amt.test" {
		t.Fatalf("activation: mebx %q leaf %q subnets %+v", a.MEBxPassword, a.Identity.Chain().Leaf().Subject.CommonName, a.Subnets)
	}
	if strings.Contains(logs.String(), "PRIVATE KEY") || !strings.Contains(logs.String(), pair.RootSHA256) {
		t.Fatalf("log: %s", logs.String())
	}
	b, err := f.store.GetSecret(ctx, provisioningSecret)
	if err != nil {
		t.Fatalf("provisioning certificate not sealed: %v", err)
	}
	var sealed sealedIdentity
	if err := json.Unmarshal(b, &sealed); err != nil {
		t.Fatal(err)
	}
	if _, err := provcert.LoadPEM(sealed.ChainPEM, sealed.KeyPEM); err != nil {
		t.Fatalf("sealed copy does not load: %v", err)
	}
	raw, _ := f.rdb.Keys(ctx, "*").Result()
	for _, k := range raw {
		if v, _ := f.rdb.Get(ctx, k).Bytes(); bytes.Contains(v, []byte("PRIVATE KEY")) {
			t.Fatalf("key %s holds the private key in the clear", k)
		}
	}

	t.Setenv("AMTOPS_MEBX_PASSWORD", "Mebx-0ld!pw")
	if a, err = LoadActivation(ctx, f.store, rc, zerolog.Nop()); err != nil || a.MEBxPassword != "Mebx-0ld!pw" {
		t.Fatalf("MEBx password from the environment: %v", err)
	}
	rc.KeyFile = write("other.pem", []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	if _, err := LoadActivation(ctx, f.store, rc, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "amt.remote_config.") {
		t.Fatalf("a bad key: %v", err)
	}
}
