package logging

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// openPTY returns the terminal side of a new pseudo-terminal, so the
// colour decision sees a real TTY.
func openPTY(t *testing.T) *os.File {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Skipf("ptsname: %v", err)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("open pts: %v", err)
	}
	t.Cleanup(func() { tty.Close() })
	return tty
}

func TestColourOnlyOnATerminal(t *testing.T) {
	file, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	tty := openPTY(t)
	env := func(v string, set bool) func(string) (string, bool) {
		return func(string) (string, bool) { return v, set }
	}
	cases := []struct {
		name string
		w    any
		env  func(string) (string, bool)
		want bool
	}{
		{"terminal", tty, env("", false), true},
		{"terminal with NO_COLOR", tty, env("1", true), false},
		{"terminal with empty NO_COLOR", tty, env("", true), true},
		{"file", file, env("", false), false},
		{"buffer", &bytes.Buffer{}, env("", false), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w, _ := c.w.(interface{ Write([]byte) (int, error) })
			if got := colour(w, c.env); got != c.want {
				t.Fatalf("colour = %v, want %v", got, c.want)
			}
		})
	}
}

// A console log written to a file has the date and no escape codes.
func TestConsoleToFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "server.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	log, err := New(f, "console", "info")
	if err != nil {
		t.Fatal(err)
	}
	log.Warn().Str("device", "pc-1").Msg("certificate issued")
	f.Close()
	b, _ := os.ReadFile(path)
	line := string(b)
	if strings.Contains(line, "\x1b[") {
		t.Fatalf("colour codes in a file: %q", line)
	}
	if !regexp.MustCompile(`^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}`).MatchString(line) {
		t.Fatalf("no date at the start: %q", line)
	}
	if !strings.Contains(line, "certificate issued") || !strings.Contains(line, "device=pc-1") {
		t.Fatalf("line = %q", line)
	}
}

// On a terminal the console format is coloured.
func TestConsoleColourOnTerminal(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger(&buf, "console", "info", true)
	if err != nil {
		t.Fatal(err)
	}
	log.Info().Msg("hello")
	if !strings.Contains(buf.String(), "\x1b[") {
		t.Fatalf("no colour with colour on: %q", buf.String())
	}
}

// Library loggers arrive as zerolog events with a static message.
func TestAdapters(t *testing.T) {
	var buf bytes.Buffer
	log := zerolog.New(&buf).Level(zerolog.InfoLevel)
	Std(log, "http server").Printf("http: TLS handshake error from %s: EOF", "10.0.0.1:5")
	g := GRPC(log)
	g.Infof("[core] channel %d idle", 1) // debug: dropped at info
	g.Warningf("[transport] closing: %v", "EOF")
	want := `{"level":"warn","detail":"http: TLS handshake error from 10.0.0.1:5: EOF","message":"http server"}
{"level":"warn","component":"grpc","detail":"[transport] closing: EOF","message":"grpc"}
`
	if buf.String() != want {
		t.Fatalf("events:\n%s\nwant:\n%s", buf.String(), want)
	}
}
