package main

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/server/admin/admintest"
)

// fleet seeds devices whose IDs sort differently from their FQDNs, one
// that failed, and two that share a host name in different domains.
func fleet(t *testing.T, s *admintest.Server) {
	t.Helper()
	put := func(id, host, dom, ip string, st domain.Status, lastErr string) {
		a := netip.MustParseAddr(ip)
		d := domain.Device{ID: id, HostName: host, Domain: dom, IP: a, Subnet: netip.PrefixFrom(a, 24).Masked(), Status: st,
			LastError: lastErr}
		if lastErr != "" {
			d.LastErrorStep = "connect"
		}
		if err := s.Store.PutDevice(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	put("ffff-1", "pc-0-001", "amt.test", "10.0.0.1", domain.StatusProvisioned, "")
	put("aaaa-2", "pc-0-002", "amt.test", "10.0.0.2", domain.StatusNotProvisioned,
		`phase2: connect: tls: amt: get setup and configuration: wsman: post https://10.0.0.2:16993/wsman: dial tcp 10.0.0.2:16993: connect: connection refused`)
	put("cccc-3", "lab-1", "amt.test", "10.0.1.1", domain.StatusNotProvisioned, "")
	put("bbbb-4", "twin", "amt.test", "10.0.2.1", domain.StatusDetected, "")
	put("dddd-5", "twin", "lab.test", "10.0.2.2", domain.StatusDetected, "")
}

// ids returns the first column of a table, header skipped.
func ids(out string) []string {
	var got []string
	for i, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if i > 0 {
			got = append(got, strings.Fields(line)[0])
		}
	}
	return got
}

func TestDevicesListFiltersAndOrder(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	fleet(t, s)
	cases := []struct {
		name string
		args []string
		want []string // IDs in order
	}{
		{"sorted by fqdn", nil, []string{"cccc-3", "ffff-1", "aaaa-2", "bbbb-4", "dddd-5"}},
		{"status failed", []string{"--status", "failed"}, []string{"aaaa-2"}},
		{"status detected", []string{"--status", "detected"}, []string{"bbbb-4", "dddd-5"}},
		{"status with underscores and capitals", []string{"--status", "NOT_PROVISIONED"}, []string{"cccc-3", "aaaa-2"}},
		{"name glob", []string{"--name", "pc-0-*"}, []string{"ffff-1", "aaaa-2"}},
		{"name substring", []string{"--name", "LAB"}, []string{"cccc-3", "dddd-5"}},
		{"name with limit", []string{"--name", "pc-0-*", "--limit", "1"}, []string{"ffff-1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := cli(t, s, s.Read, append([]string{"devices", "list"}, c.args...)...)
			r.want(t, 0)
			if got := ids(r.stdout); strings.Join(got, " ") != strings.Join(c.want, " ") {
				t.Fatalf("devices = %v, want %v\n%s", got, c.want, r.stdout)
			}
		})
	}
	for _, status := range append(statusNames(), statusFailed) {
		cli(t, s, s.Read, "devices", "list", "--status", status).want(t, 0)
	}
	cli(t, s, s.Read, "devices", "list", "--name", "[").want(t, 2, `--name "[": bad pattern`)
}

func TestOutputFormats(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	fleet(t, s)
	for _, o := range []string{"csv", "yaml", "wide"} {
		r := cli(t, s, s.Read, "devices", "list", "--name", "pc-0-*", "-o", o)
		r.want(t, 0)
		golden(t, "devices_list_"+o, r.stdout)
	}
	r := cli(t, s, s.Read, "devices", "show", "pc-0-002", "-o", "csv")
	r.want(t, 0)
	golden(t, "devices_show_csv", r.stdout)
}

func TestDevicesShowByHostName(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	fleet(t, s)
	r := cli(t, s, s.Read, "devices", "show", "PC-0-001", "-o", "json")
	r.want(t, 0)
	if !strings.Contains(r.stdout, `"id": "ffff-1"`) {
		t.Fatalf("short name found the wrong device:\n%s", r.stdout)
	}
	r = cli(t, s, s.Read, "devices", "log", "pc-0-002", "-o", "json")
	r.want(t, 0)
	cli(t, s, s.Read, "devices", "log", "twin").want(t, 2, `device "twin" is ambiguous`)
	cli(t, s, s.Read, "devices", "show", "twin").want(t, 2, `device "twin" is ambiguous`, "twin.amt.test (bbbb-4)", "twin.lab.test (dddd-5)")
	cli(t, s, s.Read, "devices", "show", "pc-9").want(t, 2, `no device has the ID, FQDN, IP address or host name "pc-9"`)
}

func TestUnknownCommandsAndVersion(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	cases := []struct {
		name   string
		args   []string
		code   int
		stderr []string
		stdout string
	}{
		{"unknown subcommand", []string{"devices", "bogus"}, 2, []string{`unknown command "bogus" for "amtopsctl devices"`}, ""},
		{"typo of subcommand", []string{"jobs", "lst"}, 2, []string{`unknown command "lst" for "amtopsctl jobs"; did you mean list?`}, ""},
		{"typo of command on one line", []string{"devces"}, 2, []string{`unknown command "devces" for "amtopsctl"; did you mean devices?`}, ""},
		{"bare group prints help", []string{"devices"}, 0, nil, "Available Commands"},
		{"version", []string{"--version"}, 0, nil, "amtopsctl "},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := cli(t, s, s.Read, c.args...)
			r.want(t, c.code, c.stderr...)
			if !strings.Contains(r.stdout, c.stdout) {
				t.Fatalf("stdout lacks %q:\n%s", c.stdout, r.stdout)
			}
		})
	}
}

// Failures show one short line; -v adds the whole chain.
func TestErrorSummary(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	args := []string{"--server", "127.0.0.1:1", "devices", "list"}
	r := cli(t, s, s.Read, args...)
	r.want(t, 1, "amtopsctl: server unavailable: unreachable: 127.0.0.1:1 refused the connection\n", "-v shows the whole error")
	if strings.Contains(r.stderr, "transport:") {
		t.Fatalf("the chain is shown without -v:\n%s", r.stderr)
	}
	r = cli(t, s, s.Read, append([]string{"-v"}, args...)...)
	r.want(t, 1, "unreachable: 127.0.0.1:1 refused", "detail: server unavailable: connection error:", "dial tcp 127.0.0.1:1")

	// A job's long error is summarised in tables, whole in JSON.
	for _, c := range []struct{ msg, want string }{
		{"phase2: connect: tls: wsman: post https://10.0.0.5:16993/wsman: dial tcp 10.0.0.5:16993: connect: connection refused",
			"unreachable: 10.0.0.5:16993 refused the connection"},
		{"phase2: dial tcp [fd00::5]:16993: i/o timeout", "unreachable: [fd00::5]:16993 did not answer (timeout)"},
		{"tls: failed to verify certificate: x509: certificate signed by unknown authority", "TLS: certificate not trusted (signed by an unknown CA)"},
		{"x509: certificate is valid for pc1.amt.test, not pc2.amt.test", "TLS: certificate is for pc1.amt.test, not pc2.amt.test"},
		{`amt: put tls settings pc1: field "x" refused`, `amt: put tls settings pc1: field "x" refused`},
	} {
		if got := summarize(c.msg); got != c.want {
			t.Errorf("summarize(%q) = %q, want %q", c.msg, got, c.want)
		}
	}
}

// Completion offers the site's devices, batches and collections.
func TestCompletionOfNames(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	fleet(t, s)
	cli(t, s, s.Operate, "collections", "create", "lab").want(t, 0)
	cli(t, s, s.Operate, "collections", "create", "library").want(t, 0)
	b := cli(t, s, s.Operate, "provision", "pc-0-001.amt.test", "-o", "json")
	id := batchIDs.FindString(b.stdout)
	if id == "" {
		t.Fatalf("no batch ID in %s", b.stdout)
	}
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"device", []string{"devices", "show", "pc-0"}, []string{"pc-0-001.amt.test", "pc-0-002.amt.test"}},
		{"more devices", []string{"devices", "suppress-auto", "pc-0-001.amt.test", "TW"}, []string{"twin.amt.test", "twin.lab.test"}},
		{"collection then devices", []string{"collections", "add", "lab", "lab-"}, []string{"lab-1.amt.test"}},
		{"collection", []string{"collections", "delete", "lib"}, []string{"library"}},
		{"collection flag", []string{"provision", "--collection", "la"}, []string{"lab"}},
		{"batch", []string{"jobs", "show", id[:3]}, []string{id}},
		{"nothing after the last argument", []string{"devices", "show", "pc-0-001.amt.test", ""}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := cli(t, s, s.Read, append([]string{"__complete"}, c.args...)...)
			r.want(t, 0)
			var got []string
			for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
				if !strings.HasPrefix(l, ":") && l != "" {
					got = append(got, l)
				}
			}
			if strings.Join(got, " ") != strings.Join(c.want, " ") {
				t.Fatalf("completions = %q, want %q\n%s", got, c.want, r.stdout)
			}
		})
	}
}

// rename begin waits for the removal by default, so rename complete can
// follow it directly.
func TestRenameBeginWaits(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	seed(t, s)
	done := make(chan result, 1)
	go func() { done <- cli(t, s, s.Operate, "rename", "begin", "pc2.amt.test") }()
	var id string
	for range 200 {
		if id = batchIDs.FindString(cli(t, s, s.Read, "jobs", "list", "-o", "json").stdout); id != "" {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	select {
	case r := <-done:
		t.Fatalf("rename begin returned before the removal finished:\n%s%s", r.stdout, r.stderr)
	case <-time.After(300 * time.Millisecond):
	}
	ctx := context.Background()
	if _, err := s.Store.FinishJob(ctx, id, domain.JobID(id, "d2"), domain.JobSucceeded, "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Store.UpdateDevice(ctx, "d2", func(d *domain.Device) error { d.Status = domain.StatusNotProvisioned; return nil }); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		r.want(t, 0)
		if !strings.Contains(r.stdout, "1 succeeded") {
			t.Fatalf("stdout:\n%s", r.stdout)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("rename begin did not return after the removal finished")
	}
	cli(t, s, s.Operate, "rename", "complete", "d2", "renamed.corp.test", "--wait=false").want(t, 0)
}

// remove --all on a whole collection is confirmed; --dry-run shows what
// it would touch.
func TestRemoveAllCollectionConfirmation(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	fleet(t, s)
	cli(t, s, s.Operate, "collections", "create", "lab").want(t, 0)
	cli(t, s, s.Operate, "collections", "add", "lab", "pc-0-001.amt.test", "lab-1.amt.test").want(t, 0)
	batches := func() int { return strings.Count(cli(t, s, s.Read, "jobs", "list", "-o", "json").stdout, `"kind"`) }

	r := cli(t, s, s.Operate, "remove", "--all", "--collection", "lab", "--dry-run")
	r.want(t, 0)
	golden(t, "remove_dry_run", r.stdout)
	cli(t, s, s.Operate, "remove", "--all", "--collection", "lab").want(t, 2, "2 device(s) of collection lab", "--yes")
	r = cliTTY(t, s, s.Operate, true, "n\n", "remove", "--all", "--collection", "lab")
	r.want(t, 1, "[y/N]", "not confirmed")
	if n := batches(); n != 0 {
		t.Fatalf("%d batches started without confirmation", n)
	}
	// Confirmed: the batch starts (lab-1 is refused: it is not provisioned).
	cliTTY(t, s, s.Operate, true, "y\n", "remove", "--all", "--collection", "lab", "-o", "json").want(t, 1, "1 of 2 device(s) refused")
	if n := batches(); n != 1 {
		t.Fatalf("%d batches, want 1", n)
	}
	cli(t, s, s.Operate, "remove", "--all", "--collection", "lab", "--yes", "-o", "json").want(t, 1, "refused")
	if n := batches(); n != 2 {
		t.Fatalf("%d batches after --yes, want 2", n)
	}
	// Named devices need no confirmation: the batch starts (and the
	// detected device is refused by the server).
	cli(t, s, s.Operate, "remove", "--all", "twin.amt.test", "-o", "json").want(t, 1, "1 of 1 device(s) failed or were refused")
}

// agents list says which agents are online, by heartbeat age.
func TestAgentsOnline(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	ctx := context.Background()
	for id, hb := range map[string]time.Time{"b-live": time.Now().Add(-10 * time.Second), "a-gone": time.Now().Add(-time.Hour), "c-never": {}} {
		if err := s.Store.PutAgent(ctx, domain.Agent{ID: id, EnrolledAt: admintest.Epoch, LastHeartbeat: hb,
			Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Store.RecordLoad(ctx, "b-live", domain.AgentLoad{InFlight: 3, Capacity: 256, Version: "v1.4.0", Address: "127.0.0.1:5151"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Store.CountHellos(ctx, "b-live", 12); err != nil {
		t.Fatal(err)
	}
	r := cli(t, s, s.Read, "agents", "list", "-o", "csv")
	r.want(t, 0)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	col := map[string]int{}
	for i, h := range strings.Split(lines[0], ",") {
		col[h] = i
	}
	var got []string
	for _, line := range lines[1:] {
		f := strings.Split(line, ",")
		got = append(got, f[col["AGENT"]]+"="+f[col["ONLINE"]]+"/"+f[col["VERSION"]]+"/"+f[col["ADDRESS"]]+"/"+f[col["JOBS"]]+"/"+f[col["HELLOS"]])
	}
	if want := "a-gone=no///0/0/0 b-live=yes/v1.4.0/127.0.0.1:5151/3/256/12 c-never=no///0/0/0"; strings.Join(got, " ") != want {
		t.Fatalf("agents = %v, want %s\n%s", got, want, r.stdout)
	}
	r = cli(t, s, s.Read, "agents", "list", "--online-within", "2h", "-o", "json")
	r.want(t, 0)
	if strings.Count(r.stdout, `"online": true`) != 2 {
		t.Fatalf("with --online-within 2h:\n%s", r.stdout)
	}
}

// jobs retry runs a batch again for its failed devices only, with the
// batch's options.
func TestJobsRetry(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	seed(t, s)
	ctx := context.Background()
	// d1 succeeds, d3 (not supported) is refused.
	r := cli(t, s, s.Operate, "provision", "d1", "pc3.amt.test", "-o", "json")
	id := batchIDs.FindString(r.stdout)
	if _, err := s.Store.FinishJob(ctx, id, domain.JobID(id, "d1"), domain.JobSucceeded, "", ""); err != nil {
		t.Fatal(err)
	}
	r = cli(t, s, s.Operate, "jobs", "retry", id, "-o", "json")
	r.want(t, 1, "1 of 1 device(s) failed or were refused")
	if !strings.Contains(r.stdout, `"total": 1`) || !strings.Contains(r.stdout, `"device_id": "d3"`) || batchIDs.FindString(r.stdout) == id {
		t.Fatalf("retry did not run d3 alone in a new batch:\n%s", r.stdout)
	}

	// An update's options come along.
	r = cli(t, s, s.Operate, "update", "d2", "--confirm-8021x", "-o", "json")
	r.want(t, 0)
	upd := batchIDs.FindString(r.stdout)
	if _, err := s.Store.FinishJob(ctx, upd, domain.JobID(upd, "d2"), domain.JobFailed, "connect", "dial tcp 10.0.0.2:16993: connect: connection refused"); err != nil {
		t.Fatal(err)
	}
	r = cli(t, s, s.Operate, "jobs", "retry", upd, "-o", "json")
	r.want(t, 0)
	if !strings.Contains(r.stdout, `"confirm_8021x": "true"`) || !strings.Contains(r.stdout, `"kind": "update"`) {
		t.Fatalf("retry lost the update's options:\n%s", r.stdout)
	}
	next := batchIDs.FindString(r.stdout)
	if _, err := s.Store.FinishJob(ctx, next, domain.JobID(next, "d2"), domain.JobSucceeded, "", ""); err != nil {
		t.Fatal(err)
	}
	cli(t, s, s.Operate, "jobs", "retry", next).want(t, 1, "no failed devices")
	cli(t, s, s.Read, "jobs", "retry", upd).want(t, 1, "operate role")
}

// discoverer records what amtopsctl discover asked for; the agents'
// side of discovery is tested in server/discover and agent.
type discoverer struct{ asked [][]netip.Prefix }

func (d *discoverer) Discover(_ context.Context, subnets []netip.Prefix) ([]string, error) {
	d.asked = append(d.asked, subnets)
	if len(subnets) == 1 && subnets[0].String() == "10.9.0.0/24" {
		return nil, nil // no agent serves it
	}
	return []string{"sweep-1", "sweep-2"}, nil
}

func TestDiscover(t *testing.T) {
	d := &discoverer{}
	s := admintest.Start(t, admintest.Options{Discoverer: d})
	r := cli(t, s, s.Operate, "discover")
	r.want(t, 0)
	if !strings.Contains(r.stdout, "2 sweep(s) queued") {
		t.Fatalf("stdout %q", r.stdout)
	}
	cli(t, s, s.Operate, "discover", "--subnet", "10.1.2.0/24,10.1.3.0/24", "-o", "json").want(t, 0)
	cli(t, s, s.Operate, "discover", "--subnet", "10.9.0.0/24").want(t, 1, "no agent serves 10.9.0.0/24")
	cli(t, s, s.Operate, "discover", "--subnet", "bogus").want(t, 2, "not a CIDR prefix")
	cli(t, s, s.Read, "discover").want(t, 1, "operate role")
	if len(d.asked) != 3 || len(d.asked[0]) != 0 || len(d.asked[1]) != 2 || d.asked[1][1].String() != "10.1.3.0/24" {
		t.Fatalf("asked = %v", d.asked)
	}
}
