package phase2_test

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/agent/phase2"
	"github.com/amtops/amtops/internal/failure"
)

// What a person reads first about a failed job, from real failures of
// the executor: a device whose ports refuse, and one that refuses the
// admin password.
func TestFailureSummaries(t *testing.T) {
	c := newCA(t)
	t.Run("ports refused", func(t *testing.T) {
		// Two loopback ports nothing listens on.
		var ports [2]int
		for i := range ports {
			l, err := net.Listen("tcp", "127.23.0.2:0")
			if err != nil {
				t.Fatal(err)
			}
			ports[i] = l.Addr().(*net.TCPAddr).Port
			l.Close()
		}
		ex := phase2.NewExecutor(phase2.Config{HTTPPort: ports[0], TLSPort: ports[1], CallTimeout: 2 * time.Second,
			CommitWait: 40 * time.Millisecond, CommitDeadline: 2 * time.Second, PollInterval: 20 * time.Millisecond, Log: zerolog.Nop()})
		res := ex.Run(context.Background(), provisionJob(t, c, netip.MustParseAddr("127.23.0.2"), "pc-dark"), nil)
		if res.Err == nil {
			t.Fatal("a device whose ports refuse was provisioned")
		}
		sum, details := failure.Split(failure.Text(res.Err))
		// Both transports were tried; each port is named.
		if want1, want2 := "unreachable: "+strconv.Itoa(ports[0])+" and "+strconv.Itoa(ports[1])+" refused",
			"unreachable: "+strconv.Itoa(ports[1])+" and "+strconv.Itoa(ports[0])+" refused"; sum != want1 && sum != want2 {
			t.Errorf("summary %q, want %q", sum, want1)
		}
		if details != res.Err.Error() {
			t.Errorf("details %q, want the chain %q", details, res.Err.Error())
		}
	})
	t.Run("admin password refused", func(t *testing.T) {
		sim := startSim(t, 1, nil)
		job := provisionJob(t, c, sim.Addrs()[0], "pc-locked")
		job.Credentials.Password = "not-the-password-1A!"
		res := newExecutor(sim).Run(context.Background(), job, nil)
		if res.Err == nil {
			t.Fatal("a wrong admin password logged in")
		}
		if sum, _ := failure.Split(failure.Text(res.Err)); sum != "401 from device: admin password not accepted" {
			t.Errorf("summary %q (chain %q)", sum, res.Err.Error())
		}
	})
}
