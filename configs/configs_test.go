// Package configs_test checks the files operators copy from configs/: the
// example configurations load, the alert rules pass promtool, and the
// dashboard and rules query only metrics amtops exports.
package configs_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/amtops/amtops/internal/config"
)

func TestExamplesLoad(t *testing.T) {
	if _, err := config.LoadServer("server.example.yaml"); err != nil {
		t.Errorf("server.example.yaml: %v", err)
	}
	if _, err := config.LoadAgent("agent.example.yaml"); err != nil {
		t.Errorf("agent.example.yaml: %v", err)
	}
}

func TestAlertRulesPassPromtool(t *testing.T) {
	promtool := tool(t, "promtool")
	out, err := exec.Command(promtool, "check", "rules", "prometheus/alerts.yml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

// TestQueriesNameExportedMetrics: every amtops_ or grpc_server_ series a
// rule or panel queries is one the code registers, so a renamed metric
// cannot leave a dashboard silently empty.
func TestQueriesNameExportedMetrics(t *testing.T) {
	exported := exportedMetrics(t)
	var exprs []string
	rules, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	exprs = append(exprs, string(rules))
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	b, err := os.ReadFile("grafana/amtops.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("grafana/amtops.json: %v", err)
	}
	if len(dash.Panels) == 0 {
		t.Fatal("dashboard has no panels")
	}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q queries nothing", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	used := regexp.MustCompile(`\b(amtops_[a-z0-9_]+|grpc_server_[a-z_]+)`)
	for _, e := range exprs {
		for _, m := range used.FindAllString(e, -1) {
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_count"), "_sum")
			if !exported[base] && !exported[m] {
				t.Errorf("queries %s, which amtops does not export", m)
			}
		}
	}
}

// exportedMetrics reads the metric names registered in the code.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{"grpc_server_handled_total": true, "grpc_server_handling_seconds": true,
		"grpc_server_started_total": true, "grpc_server_msg_received_total": true, "grpc_server_msg_sent_total": true}
	decl := regexp.MustCompile(`(?:Name:\s*|NewDesc\()"(amtops_[a-z0-9_]+)"`)
	for _, dir := range []string{"../server", "../agent"} {
		err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range decl.FindAllStringSubmatch(string(b), -1) {
				names[m[1]] = true
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if !names["amtops_devices"] || !names["amtops_agent_wsman_calls_total"] {
		t.Fatalf("metric declarations not found in the code: %v", names)
	}
	return names
}

// TestSystemdUnitsVerify runs systemd-analyze verify on each unit, with
// its binary pointed at one that exists; any complaint fails.
func TestSystemdUnitsVerify(t *testing.T) {
	analyze := tool(t, "systemd-analyze")
	units, err := filepath.Glob("systemd/*.service")
	if err != nil || len(units) < 2 {
		t.Fatalf("units %v %v, want the server's and the agent's", units, err)
	}
	bin := regexp.MustCompile(`/usr/local/bin/amtops-[a-z]+`)
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		if !bin.Match(b) {
			t.Errorf("%s: no ExecStart of an amtops binary", u)
			continue
		}
		tmp := filepath.Join(t.TempDir(), filepath.Base(u))
		if err := os.WriteFile(tmp, bin.ReplaceAll(b, []byte("/bin/true")), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(analyze, "verify", "--man=no", tmp).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", u, err, out)
		}
	}
}

// tool finds a program the test needs: missing, the test skips, unless
// the run requires its peers (make test, after scripts/deps.sh test).
func tool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("AMTOPS_REQUIRE_PEERS") != "" {
			t.Fatalf("%s not installed (scripts/deps.sh test installs it)", name)
		}
		t.Skipf("%s not installed; scripts/deps.sh test installs it", name)
	}
	return path
}
