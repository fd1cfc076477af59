package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"math/big"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/server/admin/admintest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestMain doubles as the amtopsctl binary: with AMTOPSCTL_EXEC=1 the test
// binary runs main(), so tests can exec real command lines and see real
// exit codes.
func TestMain(m *testing.M) {
	if os.Getenv("AMTOPSCTL_EXEC") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

type result struct {
	stdout, stderr string
	code           int
}

// cli runs one amtopsctl command line in-process against s with token.
func cli(t *testing.T, s *admintest.Server, token string, args ...string) result {
	t.Helper()
	return cliTTY(t, s, token, false, "", args...)
}

func cliTTY(t *testing.T, s *admintest.Server, token string, tty bool, stdin string, args ...string) result {
	t.Helper()
	env := map[string]string{"AMTOPS_SERVER": s.Addr, "AMTOPS_CA_FILE": s.CAFile, "AMTOPS_TOKEN": token}
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &errOut, func(k string) string { return env[k] }, tty)
	return result{stdout: out.String(), stderr: errOut.String(), code: code}
}

func (r result) want(t *testing.T, code int, stderrContains ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	for _, s := range stderrContains {
		if !strings.Contains(r.stderr, s) {
			t.Fatalf("stderr does not mention %q:\n%s", s, r.stderr)
		}
	}
}

var (
	batchIDs = regexp.MustCompile(`b\d{8}-\d{6}-[0-9a-f]{8}`)
	times    = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)
)

// golden compares normalised output (batch IDs and times replaced) with
// testdata/name.golden.
func golden(t *testing.T, name, got string) {
	t.Helper()
	got = batchIDs.ReplaceAllString(got, "BATCH")
	got = times.ReplaceAllString(got, "TIME")
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Fatalf("%s differs from golden file:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func seed(t *testing.T, s *admintest.Server) {
	t.Helper()
	s.Device(t, "d1", "pc1", "10.0.0.1", domain.StatusNotProvisioned)
	s.Device(t, "d2", "pc2", "10.0.0.2", domain.StatusProvisioned)
	s.Device(t, "d3", "pc3", "10.0.0.3", domain.StatusNotSupported)
}

func TestDevices(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	seed(t, s)
	r := cli(t, s, s.Read, "devices", "list", "-o", "json")
	r.want(t, 0)
	golden(t, "devices_list", r.stdout)

	r = cli(t, s, s.Read, "devices", "list", "--status", "provisioned", "--output", "json")
	r.want(t, 0)
	golden(t, "devices_list_provisioned", r.stdout)

	r = cli(t, s, s.Read, "devices", "show", "PC1.amt.test", "-o", "json")
	r.want(t, 0)
	golden(t, "devices_show", r.stdout)

	r = cli(t, s, s.Read, "devices", "list")
	r.want(t, 0)
	golden(t, "devices_list_table", r.stdout)

	r = cli(t, s, s.Operate, "devices", "suppress-auto", "10.0.0.1", "-o", "json")
	r.want(t, 0)
	golden(t, "devices_suppress", r.stdout)
	r = cli(t, s, s.Read, "devices", "log", "d1", "-o", "json")
	r.want(t, 0)
	golden(t, "devices_log", r.stdout)

	for _, c := range []struct {
		name   string
		args   []string
		code   int
		stderr []string
	}{
		{"unknown device", []string{"devices", "show", "ghost"}, 2, []string{`not found: no device has the ID, FQDN, IP address or host name "ghost"`}},
		{"unknown device log", []string{"devices", "log", "ghost.amt.test"}, 2, []string{`unknown device "ghost.amt.test"`}},
		{"bad status", []string{"devices", "list", "--status", "bogus"}, 2, []string{`--status "bogus": want one of unknown, not-supported`}},
		{"bad subnet", []string{"devices", "list", "--subnet", "10.0.0.0/99"}, 2, []string{`bad input: subnet "10.0.0.0/99"`}},
		{"missing argument", []string{"devices", "show"}, 2, []string{"needs 1 argument(s): DEVICE", "--help"}},
		{"bad output", []string{"devices", "list", "-o", "xml"}, 2, []string{`--output "xml": want one of table, wide, json, yaml, csv`}},
		{"read role may not suppress", []string{"devices", "suppress-auto", "d1"}, 1, []string{"refused:", "operate role"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cli(t, s, s.Read, c.args...).want(t, c.code, c.stderr...)
		})
	}
}

const importCSV = `host_name,domain,ip,uuid
lab-1,amt.test,10.0.0.11,
lab-2,amt.test,10.0.0.12,8c2b2c4e-1f0a-4d5e-9b1c-2a3b4c5d6e7f
`

func TestCollections(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	seed(t, s)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.csv")
	bad := filepath.Join(dir, "bad.csv")
	if err := os.WriteFile(good, []byte(importCSV), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("host_name,domain,ip\nlab-3,amt.test,10.0.0.13\nlab_4,amt.test,10.0.0.14\nlab-5,amt.test,10.0.0.300\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := cli(t, s, s.Operate, "collections", "create", "lab", "--description", "the lab", "-o", "json")
	r.want(t, 0)
	golden(t, "collections_create", r.stdout)

	r = cli(t, s, s.Operate, "collections", "import", "lab", bad)
	r.want(t, 2, `csv line 3: host_name "lab_4"`, `csv line 4: ip "10.0.0.300": not an IP address`)
	if r.stdout != "" {
		t.Fatalf("a rejected import printed a result: %s", r.stdout)
	}

	r = cli(t, s, s.Operate, "collections", "import", "lab", good, "-o", "json")
	r.want(t, 0, "warning: csv line 2: no enrolled agent serves 10.0.0.11")
	golden(t, "collections_import", r.stdout)

	// The same file from standard input: everything is known now.
	r = cliTTY(t, s, s.Operate, false, importCSV, "collections", "import", "lab", "-")
	r.want(t, 0)
	if !strings.Contains(r.stdout, "0 created, 2 updated, 0 added to lab") {
		t.Fatalf("re-import from stdin: %s", r.stdout)
	}

	cli(t, s, s.Operate, "collections", "add", "lab", "d1", "pc2.amt.test").want(t, 0)
	cli(t, s, s.Operate, "collections", "add", "lab", "--subnet", "10.0.0.0/24", "--name-pattern", "PC*").want(t, 0)
	cli(t, s, s.Operate, "collections", "auto-provision", "lab", "on").want(t, 0)
	r = cli(t, s, s.Read, "collections", "list", "-o", "json")
	r.want(t, 0)
	golden(t, "collections_list", r.stdout)
	r = cli(t, s, s.Read, "devices", "list", "--collection", "lab", "-o", "json")
	r.want(t, 0)
	golden(t, "collections_members", r.stdout)

	for _, c := range []struct {
		name   string
		token  string
		args   []string
		code   int
		stderr []string
	}{
		{"unknown collection", s.Operate, []string{"collections", "import", "nope", good}, 2, []string{`unknown collection "nope"`}},
		{"missing file", s.Operate, []string{"collections", "import", "lab", filepath.Join(dir, "none.csv")}, 2, []string{"no such file"}},
		{"no members named", s.Operate, []string{"collections", "add", "lab"}, 2, []string{"name devices, or a rule"}},
		{"unknown device", s.Operate, []string{"collections", "add", "lab", "ghost"}, 2, []string{`unknown device "ghost"`}},
		{"bad auto value", s.Operate, []string{"collections", "auto-provision", "lab", "maybe"}, 2, []string{`want on or off`}},
		{"duplicate", s.Operate, []string{"collections", "create", "lab"}, 1, []string{`refused: collection "lab" already exists`}},
		{"read role", s.Read, []string{"collections", "create", "other"}, 1, []string{"operate role"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cli(t, s, c.token, c.args...).want(t, c.code, c.stderr...)
		})
	}
}

func TestBatches(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	seed(t, s)

	// A read-role token cannot start an operation.
	r := cli(t, s, s.Read, "provision", "d1")
	r.want(t, 1, "refused: admin: StartBatch needs the operate role", `token "viewer"`)
	if n, _ := s.Store.ListBatches(context.Background(), 10); len(n) != 0 {
		t.Fatalf("a refused call started batches: %v", n)
	}

	// d3 is not supported: refused at once and recorded, exit code 1.
	r = cli(t, s, s.Operate, "provision", "d1", "pc3.amt.test", "-o", "json")
	r.want(t, 1, "1 of 2 device(s) refused")
	golden(t, "provision_refused", r.stdout)
	id := batchIDs.FindString(r.stdout)

	// Watch while the jobs end: exact counters, exit 1 for the failure.
	done := make(chan result, 1)
	go func() { done <- cliTTY(t, s, s.Read, true, "", "jobs", "watch", id, "-o", "json") }()
	if _, err := s.Store.FinishJob(context.Background(), id, domain.JobID(id, "d1"), domain.JobSucceeded, "", ""); err != nil {
		t.Fatal(err)
	}
	r = <-done
	r.want(t, 1, "1 of 2 device(s) failed")
	if !strings.Contains(r.stderr, "100%") || !strings.Contains(r.stderr, "2/2") {
		t.Fatalf("no progress bar on a terminal:\n%s", r.stderr)
	}
	golden(t, "jobs_watch", r.stdout)

	r = cli(t, s, s.Read, "jobs", "show", id, "-o", "json")
	r.want(t, 0)
	golden(t, "jobs_show", r.stdout)
	r = cli(t, s, s.Read, "jobs", "show", id)
	r.want(t, 0)
	golden(t, "jobs_show_table", r.stdout) // devices by FQDN too

	// Update, then cancel: queued jobs end at once.
	r = cli(t, s, s.Operate, "update", "d2")
	r.want(t, 0)
	id2 := batchIDs.FindString(r.stdout)
	r = cli(t, s, s.Operate, "jobs", "cancel", id2, "-o", "json")
	r.want(t, 0)
	golden(t, "jobs_cancel", r.stdout)
	// Watching a cancelled batch ends at once, with plain lines off a terminal.
	r = cli(t, s, s.Read, "jobs", "watch", id2)
	r.want(t, 1, "1 of 1 device(s) cancelled", "1/1 done")

	r = cli(t, s, s.Read, "jobs", "list", "-o", "json")
	r.want(t, 0)
	golden(t, "jobs_list", r.stdout)

	for _, c := range []struct {
		name   string
		args   []string
		code   int
		stderr []string
	}{
		{"no selection", []string{"provision"}, 2, []string{"name devices"}},
		{"remove needs a choice", []string{"remove", "d2"}, 2, []string{"--keep-identity", "--all"}},
		{"remove both", []string{"remove", "d2", "--all", "--keep-identity"}, 2, []string{"choose one"}},
		{"unknown device", []string{"update", "d2", "ghost"}, 2, []string{`not found: unknown device "ghost"`}},
		{"unknown collection", []string{"provision", "--collection", "nope"}, 2, []string{`unknown collection "nope"`}},
		{"unknown batch", []string{"jobs", "watch", "b-nope"}, 2, []string{`unknown batch "b-nope"`}},
		{"remove refused", []string{"remove", "--keep-identity", "d1"}, 1, []string{"refused"}},
		{"rename not pending", []string{"rename", "complete", "d2", "new.amt.test"}, 1, []string{"refused:", "no rename pending"}},
		{"no sweeper", []string{"sweep", "now"}, 1, []string{"not supported by this server"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cli(t, s, s.Operate, c.args...).want(t, c.code, c.stderr...)
		})
	}
}

func TestRenameFlow(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	seed(t, s)
	r := cli(t, s, s.Operate, "rename", "begin", "pc2.amt.test", "--wait=false", "-o", "json")
	r.want(t, 0)
	golden(t, "rename_begin", r.stdout)
	id := batchIDs.FindString(r.stdout)
	cli(t, s, s.Operate, "rename", "complete", "d2", "renamed.corp.test").want(t, 1, "not removed yet")

	ctx := context.Background()
	if _, err := s.Store.FinishJob(ctx, id, domain.JobID(id, "d2"), domain.JobSucceeded, "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Store.UpdateDevice(ctx, "d2", func(d *domain.Device) error { d.Status = domain.StatusNotProvisioned; return nil }); err != nil {
		t.Fatal(err)
	}
	r = cli(t, s, s.Operate, "rename", "complete", "d2", "renamed.corp.test", "-o", "json")
	r.want(t, 0)
	golden(t, "rename_complete", r.stdout)
	cli(t, s, s.Read, "devices", "show", "renamed.corp.test").want(t, 0)
}

func TestTokensAndAgents(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	r := cli(t, s, s.Operate, "tokens", "create", "carol", "--role", "read")
	r.want(t, 0)
	carol := strings.TrimSpace(r.stdout)
	cli(t, s, carol, "devices", "list").want(t, 0)
	cli(t, s, carol, "tokens", "list").want(t, 1, "operate role")
	r = cli(t, s, s.Operate, "tokens", "list", "-o", "json")
	r.want(t, 0)
	golden(t, "tokens_list", r.stdout)
	cli(t, s, s.Operate, "tokens", "revoke", "carol").want(t, 0)
	cli(t, s, carol, "devices", "list").want(t, 1, "not authenticated")
	cli(t, s, s.Operate, "tokens", "create", "x", "--role", "root").want(t, 2, `--role "root"`)

	r = cli(t, s, s.Operate, "agents", "token", "--subnet", "10.0.0.0/24")
	r.want(t, 0)
	if len(strings.TrimSpace(r.stdout)) < 40 {
		t.Fatalf("enrollment token %q", r.stdout)
	}
	cli(t, s, s.Operate, "agents", "token", "--subnet", "nope").want(t, 2, `subnets "nope"`)
	cli(t, s, s.Operate, "agents", "authorize", "ghost", "--subnet", "10.0.0.0/24").want(t, 2, `unknown agent "ghost"`)

	if err := s.Store.PutAgent(context.Background(), domain.Agent{ID: "a1", EnrolledAt: admintest.Epoch,
		Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("10.0.1.0/24")}}); err != nil {
		t.Fatal(err)
	}
	cli(t, s, s.Read, "agents", "unauthorize", "a1", "--subnet", "10.0.1.0/24").want(t, 1, "operate role")
	r = cli(t, s, s.Operate, "agents", "unauthorize", "a1", "--subnet", "10.0.1.0/24")
	r.want(t, 0)
	if strings.TrimSpace(r.stdout) != "agent a1 serves 10.0.0.0/24" {
		t.Fatalf("unauthorize printed %q", r.stdout)
	}
	cli(t, s, s.Operate, "agents", "unauthorize", "a1", "--subnet", "10.0.1.0/24").want(t, 2, "does not serve")
	if r = cli(t, s, s.Operate, "agents", "revoke", "a1"); r.code != 0 || !strings.Contains(r.stdout, "agent a1 revoked") {
		t.Fatalf("revoke = %d %q %q", r.code, r.stdout, r.stderr)
	}
	cli(t, s, s.Operate, "agents", "revoke", "a1").want(t, 2, `unknown agent "a1"`)
}

func TestConnectionProblems(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	otherCA := filepath.Join(t.TempDir(), "other.pem")
	// A CA file holding some other certificate: TLS verification fails.
	if err := os.WriteFile(otherCA, otherCAPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	env := map[string]string{"AMTOPS_TOKEN": s.Operate}
	code := run(context.Background(), []string{"--server", s.Addr, "--ca-file", otherCA, "devices", "list"},
		strings.NewReader(""), &out, &errOut, func(k string) string { return env[k] }, false)
	if code != 1 || !strings.Contains(errOut.String(), "server unavailable") {
		t.Fatalf("wrong CA: code %d, stderr %s", code, errOut.String())
	}
	env = map[string]string{"AMTOPS_SERVER": s.Addr, "AMTOPS_CA_FILE": s.CAFile}
	errOut.Reset()
	code = run(context.Background(), []string{"devices", "list"}, strings.NewReader(""), &out, &errOut, func(k string) string { return env[k] }, false)
	if code != 2 || !strings.Contains(errOut.String(), "no admin token") {
		t.Fatalf("no token: code %d, stderr %s", code, errOut.String())
	}
	tokFile := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tokFile, []byte(s.Read+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	errOut.Reset()
	code = run(context.Background(), []string{"--token-file", tokFile, "devices", "list"}, strings.NewReader(""), &out, &errOut,
		func(k string) string { return env[k] }, false)
	if code != 0 {
		t.Fatalf("--token-file: code %d, stderr %s", code, errOut.String())
	}
}

// otherCAPEM makes a self-signed CA certificate from no amtops site.
func otherCAPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// Real processes: the test binary re-executed as amtopsctl.
func TestExec(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	seed(t, s)
	for _, c := range []struct {
		name  string
		token string
		args  []string
		code  int
		out   string
	}{
		{"list", s.Read, []string{"devices", "list", "-o", "json"}, 0, `"id": "d1"`},
		{"read role cannot provision", s.Read, []string{"provision", "d1"}, 1, "operate role"},
		{"bad usage", s.Operate, []string{"remove", "d1"}, 2, "--keep-identity"},
		{"completion", "", []string{"completion", "bash"}, 0, "bash completion"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], c.args...)
			cmd.Env = append(os.Environ(), "AMTOPSCTL_EXEC=1", "AMTOPS_SERVER="+s.Addr, "AMTOPS_CA_FILE="+s.CAFile, "AMTOPS_TOKEN="+c.token)
			var out, errOut bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errOut
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != c.code || !strings.Contains(out.String()+errOut.String(), c.out) {
				t.Fatalf("exit %d (want %d)\nstdout:\n%s\nstderr:\n%s", code, c.code, out.String(), errOut.String())
			}
		})
	}
}
