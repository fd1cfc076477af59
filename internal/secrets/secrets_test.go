package secrets

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func testSealer(t *testing.T) *Sealer {
	t.Helper()
	s, err := New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSealOpen(t *testing.T) {
	s := testSealer(t)
	pt := []byte("P@ssw0rd-secret")
	blob, err := s.Seal(pt, []byte("dev:1"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(blob, pt) {
		t.Fatal("sealed blob contains the plaintext")
	}
	got, err := s.Open(blob, []byte("dev:1"))
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	cases := map[string]struct {
		blob []byte
		ad   string
	}{
		"other associated data": {blob, "dev:2"},
		"truncated":             {blob[:10], "dev:1"},
		"flipped bit":           {append(append([]byte{}, blob[:len(blob)-1]...), blob[len(blob)-1]^1), "dev:1"},
		"empty":                 {nil, "dev:1"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := s.Open(c.blob, []byte(c.ad)); err != ErrOpen {
				t.Fatalf("Open = %v, want ErrOpen", err)
			}
		})
	}
	other, _ := New(bytes.Repeat([]byte{8}, 32))
	if _, err := other.Open(blob, []byte("dev:1")); err != ErrOpen {
		t.Fatalf("other key opened the blob: %v", err)
	}
}

func TestLoadKey(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "site.key")
	if err := WriteNewKey(good); err != nil {
		t.Fatal(err)
	}
	if err := WriteNewKey(good); err == nil {
		t.Fatal("WriteNewKey overwrote an existing key")
	}
	open := filepath.Join(dir, "open.key")
	b, _ := os.ReadFile(good)
	if err := os.WriteFile(open, b, 0o644); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short.key")
	if err := os.WriteFile(short, []byte("abcd"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, path, env string
		ok              bool
	}{
		{"file", good, "", true},
		{"world readable file", open, "", false},
		{"short key", short, "", false},
		{"missing file", filepath.Join(dir, "none"), "", false},
		{"env hex", "", "0707070707070707070707070707070707070707070707070707070707070707", true},
		{"env missing", "", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(KeyEnv, c.env)
			_, err := LoadKey(c.path)
			if (err == nil) != c.ok {
				t.Fatalf("LoadKey(%q) err = %v, want ok=%v", c.path, err, c.ok)
			}
			if err != nil && bytes.Contains([]byte(err.Error()), []byte("0707")) {
				t.Fatalf("error reveals the key: %v", err)
			}
		})
	}
}

func TestRedacted(t *testing.T) {
	r := Redacted("hunter2")
	j, _ := json.Marshal(struct{ P Redacted }{r})
	for _, s := range []string{fmt.Sprint(r), fmt.Sprintf("%v %s %#v", r, r, r), string(j)} {
		if bytes.Contains([]byte(s), []byte("hunter2")) {
			t.Fatalf("secret printed: %s", s)
		}
	}
	if r.Reveal() != "hunter2" {
		t.Fatal("Reveal lost the value")
	}
}
