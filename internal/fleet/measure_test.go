package fleet

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestPeak(t *testing.T) {
	at := func(s int) time.Time { return time.Unix(int64(s), 0) }
	for _, tc := range []struct {
		name  string
		spans []span
		want  int
	}{
		{"none", nil, 0},
		{"apart", []span{{at(0), at(1)}, {at(2), at(3)}}, 1},
		{"end meets start", []span{{at(0), at(2)}, {at(2), at(3)}}, 1},
		{"nested", []span{{at(0), at(10)}, {at(1), at(9)}, {at(2), at(3)}, {at(4), at(5)}}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := peak(tc.spans); got != tc.want {
				t.Errorf("peak = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestQuantile(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5}, {0.99, 10}, {0, 1}, {1, 10}} {
		if got := Quantile(ds, tc.q); got != tc.want {
			t.Errorf("Quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if Quantile(nil, 0.5) != 0 {
		t.Error("Quantile of nothing is not 0")
	}
}

func TestParseCommandStats(t *testing.T) {
	got := parseCommandStats("# Commandstats\r\ncmdstat_get:calls=12,usec=40,usec_per_call=3.33,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_evalsha:calls=3,usec=90,usec_per_call=30.00,rejected_calls=0,failed_calls=1\r\nnot a stat line\r\n")
	if got["get"] != (CommandStat{Calls: 12, Usec: 40}) || got["evalsha"] != (CommandStat{Calls: 3, Usec: 90}) || len(got) != 2 {
		t.Fatalf("parsed %+v", got)
	}
	d := got.Sub(CommandStats{"get": {Calls: 10, Usec: 30}, "evalsha": {Calls: 3, Usec: 90}})
	if d.Calls() != 2 || len(d) != 1 {
		t.Errorf("difference %+v, want 2 get calls only", d)
	}
}

// TestReadUsage reads this test process's own /proc entries.
func TestReadUsage(t *testing.T) {
	deadline := time.Now().Add(50 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	u := readUsage(os.Getpid())
	if !u.Exists || u.CPU <= 0 || u.RSS <= 0 || u.HWM < u.RSS {
		t.Errorf("usage of this process: %+v", u)
	}
	if readUsage(1 << 30).Exists {
		t.Error("a process that cannot exist was read")
	}
}

// procState is the state letter of /proc/<pid>/stat (R, S, T, …).
func procState(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return strings.Fields(s[i+1:])[0]
}

// TestProcControl drives a real process through what the chaos suite
// does to the fleet: pause, resume, kill -9, restart, stop.
func TestProcControl(t *testing.T) {
	bin, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep command")
	}
	p := newProc("sleeper", "test", t.TempDir(), bin, []string{"30"}, nil)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(time.Second) })
	wait := func(want string) {
		t.Helper()
		for range 100 {
			if procState(t, p.PID()) == want {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("pid %d in state %q, want %q", p.PID(), procState(t, p.PID()), want)
	}
	if err := p.Start(); err == nil {
		t.Error("a second Start of a running process succeeded")
	}
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	wait("T")
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	wait("S")
	first := p.PID()
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if p.Running() || p.Err() == nil {
		t.Fatalf("after kill -9: running %v, exit %v", p.Running(), p.Err())
	}
	if err := p.Restart(time.Second); err != nil {
		t.Fatal(err)
	}
	if !p.Running() || p.PID() == first {
		t.Fatalf("restart: running %v, pid %d (was %d)", p.Running(), p.PID(), first)
	}
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(2 * time.Second); err != nil || p.Running() {
		t.Fatalf("stop of a paused process: %v, running %v", err, p.Running())
	}
}
