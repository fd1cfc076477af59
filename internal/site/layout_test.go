package site_test

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/amtops/amtops/"

// The arrows of the house point down: internal/ libraries serve both roles
// and know neither, except internal/site, the one composition root that
// puts a whole site in one process; and only the demo (and tests) may use
// that root. Test imports are free.
func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, module+"...").Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("go list: %v\n%s", err, stderr)
	}
	rules := []struct {
		name    string
		applies func(pkg string) bool
		denied  func(imp string) bool
	}{
		{"internal/ does not import the roles",
			func(p string) bool { return under(p, "internal") && !under(p, "internal/site") },
			func(i string) bool { return under(i, "server") || under(i, "agent") }},
		{"only the demo imports the composition root",
			func(p string) bool { return !under(p, "internal/site") && !under(p, "scripts/demo") },
			func(i string) bool { return under(i, "internal/site") }},
		{"the roles do not import each other",
			func(p string) bool { return under(p, "agent") },
			func(i string) bool { return under(i, "server") }},
		{"the server does not import the agent",
			func(p string) bool { return under(p, "server") },
			func(i string) bool { return under(i, "agent") }},
	}
	pkgs := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		pkg, imports := strings.TrimPrefix(fields[0], module), fields[1:]
		pkgs++
		for _, r := range rules {
			if !r.applies(pkg) {
				continue
			}
			for _, imp := range imports {
				if !strings.HasPrefix(imp, module) {
					continue
				}
				if imp = strings.TrimPrefix(imp, module); r.denied(imp) {
					t.Errorf("%s: %s imports %s", r.name, pkg, imp)
				}
			}
		}
	}
	if pkgs < 20 {
		t.Fatalf("go list named only %d packages: the rule checked nothing", pkgs)
	}
}

func under(pkg, dir string) bool { return pkg == dir || strings.HasPrefix(pkg, dir+"/") }
