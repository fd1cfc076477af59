package admin

import (
	"net/netip"
	"strings"
	"testing"
)

// maxCSVReply bounds the error text of one import: maxCSVErrors problems
// and the count of the rest, each naming its line, field and a value cut
// short, so a hostile file cannot grow the reply past gRPC's limit.
const maxCSVReply = (maxCSVErrors + 1) * 400

// FuzzParseCSV: whatever the file, parseCSV never panics, answers rows or
// an error (never both, never neither), keeps its error text bounded, and
// every row it accepts is valid and unique within the file.
func FuzzParseCSV(f *testing.F) {
	for _, s := range []string{
		"host_name,domain,ip\npc1,amt.test,10.0.0.1\n",
		"\xef\xbb\xbfIP, Domain ,host_name,subnet\n10.0.0.1,amt.test.,pc1,10.0.0.0/24\n",
		"host_name,domain,ip,uuid,subnet\npc1,amt.test,10.0.0.1,55e3ae13-bfd2-61bb-17a0-88aedd7037ea,10.0.0.0/24\n# comment\npc2,amt.test,::ffff:10.0.0.2,,\n",
		"host_name,domain,ip\npc1,amt.test,10.0.0.1\npc1,AMT.test,10.0.0.2\n",
		"host_name,domain,ip\n\"pc1,amt.test,10.0.0.1\n",
		"host_name,host_name,ip\n",
		"host_name,domain,ip\npc1,amt.test,fe80::1%eth0\n",
		"host_name,domain,ip,subnet\npc1,amt.test,10.0.0.1,10.1.0.0/16\n",
		"host_name,domain,ip\n" + strings.Repeat(strings.Repeat("x", 5000)+",amt.test,10.0.0.1\n", 25),
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rows, err := parseCSV(data)
		if (err == nil) == (len(rows) == 0) {
			t.Fatalf("rows %d err %v: want exactly one of them", len(rows), err)
		}
		if err != nil {
			if n := len(err.Error()); n > maxCSVReply {
				t.Fatalf("error text of %d bytes, want at most %d", n, maxCSVReply)
			}
			return
		}
		names, ips := map[string]bool{}, map[netip.Addr]bool{}
		for _, r := range rows {
			if r.host == "" || checkDomain(r.domain) != "" || !r.ip.IsValid() || r.ip.Zone() != "" || r.ip.Is4In6() {
				t.Fatalf("line %d accepted with bad fields: %+v", r.line, r)
			}
			if r.subnet.IsValid() && !r.subnet.Contains(r.ip) {
				t.Fatalf("line %d: subnet %s without ip %s", r.line, r.subnet, r.ip)
			}
			if names[r.fqdn()] || ips[r.ip] {
				t.Fatalf("line %d repeats a name or address", r.line)
			}
			names[r.fqdn()], ips[r.ip] = true, true
		}
	})
}
