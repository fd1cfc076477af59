package amt_test

import (
	"bytes"
	"crypto/rand"
	"strings"
	"testing"

	"github.com/amtops/amtops/internal/amt"
)

func TestValidatePassword(t *testing.T) {
	tests := []struct {
		name, pw string
		ok       bool
	}{
		{"good", "P@ssw0rd", true},
		{"max length", "Aa1!" + strings.Repeat("x", 28), true},
		{"too short", "P@ssw0r", false},
		{"too long", "Aa1!" + strings.Repeat("x", 29), false},
		{"no digit", "P@ssword", false},
		{"no lower", "P@SSW0RD", false},
		{"no upper", "p@ssw0rd", false},
		{"no symbol", "Passw0rd", false},
		{"underscore is not a symbol", "Pass_w0rd", false},
		{"underscore plus symbol", "Pass_w0rd!", true},
		{"colon forbidden", "P:ssw0rdA", false},
		{"comma forbidden", "P,ssw0rdA", false},
		{"quote forbidden", `P"ssw0rdA`, false},
		{"non-ascii", "Pässw0rd!", false},
		{"control char", "P@ssw0rd\t", false},
		{"space is a symbol", "Pass w0rd", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := amt.ValidatePassword(tc.pw)
			if (err == nil) != tc.ok {
				t.Fatalf("ValidatePassword = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && strings.Contains(err.Error(), tc.pw) {
				t.Errorf("error leaks the password: %v", err)
			}
		})
	}
}

func TestValidateUserName(t *testing.T) {
	tests := []struct {
		name, user string
		ok         bool
	}{
		{"admin", "admin", true},
		{"16 chars", strings.Repeat("u", 16), true},
		{"17 chars", strings.Repeat("u", 17), false},
		{"empty", "", false},
		{"system prefix", "$$uns", false},
		{"single dollar ok", "$admin", true},
		{"colon", "ad:min", false},
		{"space", "ad min", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := amt.ValidateUserName(tc.user); (err == nil) != tc.ok {
				t.Fatalf("ValidateUserName = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestGeneratePassword(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 500; i++ {
		p, err := amt.GeneratePassword(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if err := amt.ValidatePassword(p); err != nil {
			t.Fatalf("generated %q: %v", p, err)
		}
		if strings.ContainsAny(p, "'<>& :,\"\\`") {
			t.Fatalf("generated %q with a character to avoid", p)
		}
		if seen[p] {
			t.Fatalf("duplicate password %q", p)
		}
		seen[p] = true
	}
	if _, err := amt.GeneratePassword(bytes.NewReader(nil)); err == nil {
		t.Error("empty random source accepted")
	}
	if _, err := amt.GeneratePassword(bytes.NewReader(bytes.Repeat([]byte{255}, 5000))); err == nil {
		t.Error("constant random source accepted")
	}
}

func TestAdminDigestPassword(t *testing.T) {
	// HA1 = MD5("admin:Digest:F3EB…:P@ssw0rd"), base64 of the raw 16 bytes.
	got := amt.AdminDigestPassword("admin", "Digest:F3EB554784E729164447A89F60B641C5", "P@ssw0rd")
	if got != "CuCDARuuPYT8SGzkq0SuHQ==" { // computed independently with Python hashlib
		t.Fatalf("got %q", got)
	}
	if amt.AdminDigestPassword("other", "Digest:F3EB554784E729164447A89F60B641C5", "P@ssw0rd") == got {
		t.Error("user name not part of the hash")
	}
}

func BenchmarkGeneratePassword(b *testing.B) {
	for b.Loop() {
		if _, err := amt.GeneratePassword(rand.Reader); err != nil {
			b.Fatal(err)
		}
	}
}
