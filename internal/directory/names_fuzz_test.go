package directory

import (
	"testing"
	"unicode/utf8"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
)

const fuzzOU = "OU=AMT Devices,DC=corp,DC=example"

var injections = []string{"PC01", "*)(", "*)(objectClass=*", "a,b", `a\b`, "a\x00b", "a+b=c", "#x", " x ", `"q"`, "<>;=", "é ü", ")(|(cn=*"}

// checkEquality: the compiled filter is one equality on attr whose
// value is exactly want: nothing in the value became filter syntax.
func checkEquality(t *testing.T, p *ber.Packet, attr, want string) {
	t.Helper()
	if p.Tag != ldap.FilterEqualityMatch || len(p.Children) != 2 {
		t.Fatalf("filter for %q is %s with %d parts, want one equality", want, ldap.FilterMap[uint64(p.Tag)], len(p.Children))
	}
	if got := p.Children[0].Data.String(); got != attr {
		t.Fatalf("filter for %q tests %q, want %q", want, got, attr)
	}
	if got := p.Children[1].Data.String(); got != want {
		t.Fatalf("filter value %q, want %q", got, want)
	}
}

// FuzzFilters: an injected "*)(", ",", "\" or NUL never changes a
// search filter's structure, parsed back with go-ldap's own parser.
func FuzzFilters(f *testing.F) {
	for _, s := range injections {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		for _, attr := range []string{"servicePrincipalName", "sAMAccountName", "member"} {
			p, err := ldap.CompileFilter(equalityFilter(attr, v))
			if err != nil {
				t.Fatalf("%s filter for %q does not compile: %v", attr, v, err)
			}
			checkEquality(t, p, attr, v)
		}
		for i, fl := range computerFilters(v) {
			p, err := ldap.CompileFilter(fl)
			if err != nil {
				t.Fatalf("computer filter for %q does not compile: %v", v, err)
			}
			if p.Tag != ldap.FilterAnd || len(p.Children) != 2 {
				t.Fatalf("computer filter %q: %d parts, want an AND of two", fl, len(p.Children))
			}
			checkEquality(t, p.Children[0], "objectClass", "computer")
			attr, want := "sAMAccountName", v+"$"
			if i == 1 {
				attr, want = "cn", v
			}
			checkEquality(t, p.Children[1], attr, want)
		}
	})
}

// FuzzAccountDN: whatever the Windows computer name, the AMT account's
// DN has exactly one RDN more than its OU, a single CN whose value is the
// account's cn exactly, and the OU's RDNs after it.
func FuzzAccountDN(f *testing.F) {
	for _, s := range injections {
		f.Add(s)
	}
	ou, err := ldap.ParseDN(fuzzOU)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, name string) {
		cns := []string{}
		if utf8.ValidString(name) {
			cns = append(cns, name) // EscapeRDNValue on its own
		}
		if cn, _, err := AccountNames(name, "-amt"); err == nil {
			cns = append(cns, cn)
		}
		for _, cn := range cns {
			dn := accountDN(cn, fuzzOU)
			got, err := ldap.ParseDN(dn)
			if err != nil {
				t.Fatalf("DN %q for cn %q does not parse: %v", dn, cn, err)
			}
			if len(got.RDNs) != len(ou.RDNs)+1 {
				t.Fatalf("DN %q for cn %q has %d RDNs, want %d", dn, cn, len(got.RDNs), len(ou.RDNs)+1)
			}
			first := got.RDNs[0].Attributes
			if len(first) != 1 || first[0].Type != "CN" || first[0].Value != cn {
				t.Fatalf("DN %q: first RDN %+v, want CN=%q alone", dn, first, cn)
			}
			rest := &ldap.DN{RDNs: got.RDNs[1:]}
			if !rest.Equal(ou) {
				t.Fatalf("DN %q: below %s, want %s", dn, rest, fuzzOU)
			}
		}
	})
}
