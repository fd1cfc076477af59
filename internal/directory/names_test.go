package directory

import (
	"errors"
	"strings"
	"testing"

	"github.com/amtops/amtops/internal/domain"
	"github.com/go-ldap/ldap/v3"
)

func TestAccountNames(t *testing.T) {
	tests := []struct {
		name, computer, suffix string
		cn, sam                string
		wantErr                string
	}{
		{name: "short", computer: "PC01", suffix: "-amt", cn: "PC01-amt", sam: "PC01-AMT"},
		{name: "lower case", computer: "pc01", suffix: "-amt", cn: "pc01-amt", sam: "PC01-AMT"},
		{name: "exactly 15", computer: "ABCDEFGHIJK", suffix: "-amt", cn: "ABCDEFGHIJK-amt", sam: "ABCDEFGHIJK-AMT"},
		{name: "16 is shortened", computer: "ABCDEFGHIJKL", suffix: "-amt", cn: "ABCDEFGHIJKL-amt", sam: "ABCDE" + "??????" + "-AMT"},
		{name: "special characters hashed", computer: "a,b", suffix: "-amt", cn: "a,b-amt", sam: "A-B??????-AMT"},
		{name: "empty name", computer: "", suffix: "-amt", wantErr: "computer_name"},
		{name: "control character", computer: "a\nb", suffix: "-amt", wantErr: "computer_name"},
		{name: "empty suffix", computer: "PC01", suffix: "", wantErr: "account_suffix"},
		{name: "suffix too long", computer: "PC01", suffix: "-amtamtamt", wantErr: "account_suffix"},
		{name: "suffix with comma", computer: "PC01", suffix: ",amt", wantErr: "account_suffix"},
		{name: "name too long", computer: strings.Repeat("x", 64), suffix: "-amt", wantErr: "computer_name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cn, sam, err := AccountNames(tc.computer, tc.suffix)
			if tc.wantErr != "" {
				var fe *domain.FieldError
				if !errors.As(err, &fe) || !strings.Contains(fe.Field, tc.wantErr) {
					t.Fatalf("err = %v, want a field error on %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cn != tc.cn || len(sam) > 15 || !matchWild(sam, tc.sam) {
				t.Errorf("AccountNames = %q, %q; want %q, %q (? = hex)", cn, sam, tc.cn, tc.sam)
			}
		})
	}
}

func TestAccountNamesUnique(t *testing.T) {
	// Long names with a common prefix, and names differing only by a
	// character that sanitising maps to "-", still get distinct names;
	// case variants of one name get the same one.
	seen := map[string]string{}
	for _, n := range []string{"WORKSTATION-0001", "WORKSTATION-0002", "WORKSTATION-0003", "a,b", "a;b", "a b", "a-b"} {
		_, sam, err := AccountNames(n, "-amt")
		if err != nil {
			t.Fatal(err)
		}
		if other, dup := seen[sam]; dup {
			t.Errorf("%q and %q both map to %s", n, other, sam)
		}
		seen[sam] = n
	}
	_, a, _ := AccountNames("Workstation-0001", "-amt")
	_, b, _ := AccountNames("WORKSTATION-0001", "-amt")
	if a != b {
		t.Errorf("case variants differ: %s %s", a, b)
	}
}

func matchWild(got, pattern string) bool {
	if len(got) != len(pattern) {
		return false
	}
	for i := range pattern {
		if pattern[i] == '?' {
			if !strings.ContainsRune("0123456789ABCDEF", rune(got[i])) {
				return false
			}
		} else if pattern[i] != got[i] {
			return false
		}
	}
	return true
}

func TestEscapeRDNValue(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"plain", "PC01-amt", "PC01-amt"},
		{"comma", "a,b", `a\,b`},
		{"plus", "a+b", `a\+b`},
		{"quote", `a"b`, `a\"b`},
		{"backslash", `a\b`, `a\\b`},
		{"angles", "a<b>", `a\<b\>`},
		{"semicolon", "a;b", `a\;b`},
		{"equals", "a=b", `a\=b`},
		{"leading hash", "#a", `\#a`},
		{"inner hash", "a#b", "a#b"},
		{"leading and trailing space", " a ", `\ a\ `},
		{"inner space", "a b", "a b"},
		{"control", "a\x01b", `a\01b`},
		{"utf8 kept", "ü", "ü"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := EscapeRDNValue(tc.in)
			if got != tc.want {
				t.Fatalf("EscapeRDNValue(%q) = %q, want %q", tc.in, got, tc.want)
			}
			dn, err := ldap.ParseDN("CN=" + got + ",DC=amt,DC=test")
			if err != nil {
				t.Fatalf("escaped value does not parse: %v", err)
			}
			if v := dn.RDNs[0].Attributes[0].Value; v != tc.in {
				t.Errorf("round trip = %q, want %q", v, tc.in)
			}
			if len(dn.RDNs) != 3 {
				t.Errorf("escaped value split the DN into %d RDNs", len(dn.RDNs))
			}
		})
	}
}

func TestNewPassword(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		p, err := NewPassword()
		if err != nil {
			t.Fatal(err)
		}
		if len(p) != pwLength || seen[p] {
			t.Fatalf("password length %d, repeated %v", len(p), seen[p])
		}
		seen[p] = true
		for _, class := range []string{pwUpper, pwLower, pwDigits, pwSymbols} {
			if !strings.ContainsAny(p, class) {
				t.Fatalf("password lacks one of %q", class)
			}
		}
		if strings.ContainsAny(p, `:,"'<>& \`) {
			t.Fatalf("password has a forbidden character")
		}
	}
}

func TestUnicodePwd(t *testing.T) {
	got := unicodePwd("aé")
	want := "\"\x00a\x00\xe9\x00\"\x00"
	if got != want {
		t.Errorf("unicodePwd = %q, want %q", got, want)
	}
}

func TestSPNs(t *testing.T) {
	got := SPNs("PC01.AMT.test.")
	want := []string{"HTTP/pc01.amt.test:16992", "HTTP/pc01.amt.test:16993", "HTTP/pc01.amt.test:16994", "HTTP/pc01.amt.test:16995"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("SPNs = %v, want %v", got, want)
	}
}

func TestRealmFromDN(t *testing.T) {
	for in, want := range map[string]string{"DC=amt,DC=test": "AMT.TEST", "OU=x,DC=corp,DC=example,DC=com": "CORP.EXAMPLE.COM", "O=x": ""} {
		if got := RealmFromDN(in); got != want {
			t.Errorf("RealmFromDN(%q) = %q, want %q", in, got, want)
		}
	}
}
