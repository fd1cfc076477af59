package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readmeSections are the README sections whose sh blocks must run as
// written against a demo started with --serve.
var readmeSections = []string{"## Administering a site: amtopsctl", "## REST API and web console"}

// readmeLine is one command line of the README with its line number.
type readmeLine struct {
	n    int
	text string
}

// readmeCommands returns the lines of the sh code blocks in sections.
func readmeCommands(t *testing.T, readme string, sections []string) []readmeLine {
	t.Helper()
	var out []readmeLine
	in, block := false, false
	for i, l := range strings.Split(readme, "\n") {
		switch {
		case strings.HasPrefix(l, "## "):
			in, block = false, false
			for _, s := range sections {
				in = in || l == s
			}
		case in && l == "```sh":
			block = true
		case block && l == "```":
			block = false
		case block && strings.TrimSpace(l) != "":
			out = append(out, readmeLine{i + 1, l})
		}
	}
	if len(out) < 20 {
		t.Fatalf("found %d command lines in the README's admin sections; the test would prove little", len(out))
	}
	return out
}

var exportLine = regexp.MustCompile(`^\s*export ((?:AMTOPS_SERVER|CONSOLE_URL)=.*)$`)

// startDemo runs the demo with --serve and returns the export lines it
// prints for another shell; it is stopped (SIGINT, by PID) when t ends.
func startDemo(t *testing.T, bin, dir, net string) []string {
	t.Helper()
	cmd := exec.Command(bin, "--serve", "--devices", "20", "--dir", dir, "--net", net)
	cmd.Dir = repoRoot(t)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		done <- cmd.Wait()
	}()
	var exports []string
	deadline := time.After(4 * time.Minute)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("demo ended before printing its export lines:\n%s", stderr.String())
			}
			if m := exportLine.FindStringSubmatch(l); m != nil {
				exports = append(exports, "export "+m[1])
			}
			if strings.Contains(l, "Ctrl-C stops the site") {
				go func() {
					for range lines { // keep the pipe drained
					}
				}()
				if len(exports) != 2 {
					t.Fatalf("demo printed %d export lines, want AMTOPS_SERVER… and CONSOLE_URL: %q", len(exports), exports)
				}
				return exports
			}
		case <-deadline:
			t.Fatalf("demo did not come up in 4 minutes:\n%s", stderr.String())
		}
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// TestREADME runs the README's administration examples literally, in
// order, in bash, against `demo --serve` (20 devices), with the export
// lines the demo prints (the pasted `make build` line is this test's own
// build of amtopsctl): a README line that no longer runs fails here,
// naming it.
func TestREADME(t *testing.T) {
	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (scripts/deps.sh test installs curl)", tool)
		}
	}
	root := repoRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	cmds := readmeCommands(t, string(readme), readmeSections)

	bin := t.TempDir()
	for pkg, name := range map[string]string{"./server/cmd/amtopsctl": "amtopsctl", "./scripts/demo": "demo"} {
		build := exec.Command("go", "build", "-o", filepath.Join(bin, name), pkg)
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, out)
		}
	}
	// The simulated subnets' loopback range: the demo's own (the
	// sample inventory names its addresses; internal/site's tests use
	// other ports there), or AMTOPS_README_NET.
	net := os.Getenv("AMTOPS_README_NET")
	if net == "" {
		net = "127.61"
	}
	exports := startDemo(t, filepath.Join(bin, "demo"), t.TempDir(), net)

	// The script: the pasted lines, then each README line; a failing one
	// reports its README line number.
	var script strings.Builder
	script.WriteString("set -eE -o pipefail\n")
	fmt.Fprintf(&script, "export PATH=%s:$PATH\n", bin)
	for _, e := range exports {
		script.WriteString(e + "\n")
	}
	for _, c := range cmds {
		fmt.Fprintf(&script, "README_LINE=%d\n%s\n", c.n, c.text)
	}
	script.WriteString("echo README-OK\n")
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	sh := exec.CommandContext(ctx, "bash", "-c", `trap 'echo "README line $README_LINE failed (exit $?)" >&2' ERR`+"\n"+script.String())
	sh.Dir = root
	home := t.TempDir()
	sh.Env = append(os.Environ(), "HOME="+home, "NO_COLOR=1")
	var out bytes.Buffer
	sh.Stdout, sh.Stderr = &out, &out
	err = sh.Run()
	if err != nil || !strings.Contains(out.String(), "README-OK") {
		t.Fatalf("the README's examples do not run as written: %v\n%s", err, tail(out.String(), 60))
	}
	t.Logf("%d README lines ran; output:\n%s", len(cmds), tail(out.String(), 30))
	if n := strings.Count(out.String(), "\n"); n < len(cmds) {
		t.Errorf("only %d lines of output for %d commands", n, len(cmds))
	}
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
