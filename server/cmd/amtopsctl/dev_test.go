package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/hello"
	"github.com/amtops/amtops/internal/provcert"
)

func TestDevtoolsProvisioningCert(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "prov")
	runLocal := func(args ...string) (string, string, int) {
		var out, errOut bytes.Buffer
		code := run(context.Background(), args, strings.NewReader(""), &out, &errOut, func(string) string { return "" }, false)
		return out.String(), errOut.String(), code
	}
	stdout, stderr, code := runLocal("devtools", "provisioning-cert", "--domain", "amt.test", "--out", dir, "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var v provCertView
	if err := json.Unmarshal([]byte(stdout), &v); err != nil {
		t.Fatalf("json %q: %v", stdout, err)
	}
	if fi, err := os.Stat(v.Key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v, %v (want mode 0600)", fi, err)
	}
	id, err := provcert.LoadPEMFiles(v.Chain, v.Key)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := hex.DecodeString(v.RootSHA256)
	if err != nil {
		t.Fatal(err)
	}
	dev := provcert.Device{Hashes: []hello.Hash{{Alg: hello.SHA256, Sum: sum}}, DomainSuffix: "amt.test"}
	if r := id.Chain().Check(dev, time.Now(), provcert.Options{}); !r.Ready() {
		t.Fatalf("written pair not ready for a device trusting its root: %v", r.Err())
	}
	if v.LeafCN != "prov.amt.test" {
		t.Errorf("leaf cn %q", v.LeafCN)
	}
	if _, stderr, code := runLocal("devtools", "provisioning-cert", "--domain", "single", "--out", dir); code != exitUsage || !strings.Contains(stderr, "--domain") {
		t.Errorf("bad domain: exit %d, %s", code, stderr)
	}
}
