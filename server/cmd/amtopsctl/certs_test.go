package main

import (
	"crypto/tls"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/amtops/amtops/server/admin/admintest"
)

func TestCertsRequest(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	seed(t, s)
	dir := filepath.Join(t.TempDir(), "creds")

	r := cli(t, s, s.Operate, "certs", "request", "alice", "--role", "read", "--out", dir)
	r.want(t, 0)
	golden(t, "certs_request", strings.ReplaceAll(r.stdout, dir, "DIR"))
	crt, key := filepath.Join(dir, "alice.crt"), filepath.Join(dir, "alice.key")
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v (want mode 0600)", fi, err)
	}
	if _, err := tls.LoadX509KeyPair(crt, key); err != nil {
		t.Fatalf("written pair does not load: %v", err)
	}

	// The certificate alone authenticates, with its role.
	r = cli(t, s, "", "--cert", crt, "--key", key, "devices", "list", "-o", "json")
	r.want(t, 0)
	golden(t, "devices_list", r.stdout)
	cli(t, s, "", "--cert", crt, "--key", key, "provision", "d1").want(t, 1, "operate role")

	// An operate certificate may request more, and JSON names the files.
	r = cli(t, s, s.Operate, "certs", "request", "bob", "--role", "operate", "--out", dir, "-o", "json")
	r.want(t, 0)
	var v certView
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v.Key != filepath.Join(dir, "bob.key") || v.Role != "operate" || v.NotAfter == "" {
		t.Fatalf("json %q: %+v, %v", r.stdout, v, err)
	}
	bobCrt, bobKey := filepath.Join(dir, "bob.crt"), filepath.Join(dir, "bob.key")
	cli(t, s, "", "--cert", bobCrt, "--key", bobKey, "certs", "request", "carol", "--out", dir).want(t, 0)
	cli(t, s, "", "--cert", crt, "--key", key, "certs", "request", "dan", "--out", dir).want(t, 1, "operate role")

	// Revoking the name ends the certificate.
	cli(t, s, s.Operate, "tokens", "revoke", "alice").want(t, 0)
	cli(t, s, "", "--cert", crt, "--key", key, "devices", "list").want(t, 1, "not authenticated", "revoked")

	tokFile := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tokFile, []byte(s.Operate+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		token  string
		args   []string
		code   int
		stderr []string
	}{
		// The flags win over the environment: bob's operate certificate
		// is used, not the read token in $AMTOPS_TOKEN.
		{"certificate beats $AMTOPS_TOKEN", s.Read, []string{"--cert", bobCrt, "--key", bobKey, "collections", "create", "bobs"}, 0, nil},
		{"certificate and --token-file", "", []string{"--token-file", tokFile, "--cert", bobCrt, "--key", bobKey, "devices", "list"}, 2,
			[]string{"both given", "--token-file"}},
		{"cert without key", "", []string{"--cert", bobCrt, "devices", "list"}, 2, []string{"--cert and --key go together"}},
		{"key is not the certificate's", "", []string{"--cert", bobCrt, "--key", key, "devices", "list"}, 2, []string{"--cert", "private key does not match"}},
		{"missing certificate file", "", []string{"--cert", filepath.Join(dir, "nope.crt"), "--key", key, "devices", "list"}, 2, []string{"nope.crt"}},
		{"read token cannot request", s.Read, []string{"certs", "request", "erin", "--out", dir}, 1, []string{"operate role"}},
		{"bad role", s.Operate, []string{"certs", "request", "erin", "--role", "root", "--out", dir}, 2, []string{`--role "root"`}},
		{"bad name", s.Operate, []string{"certs", "request", "a:b", "--out", dir}, 2, []string{"bad input", "name"}},
		{"path as name", s.Operate, []string{"certs", "request", "../x", "--out", dir}, 2, []string{"plain name"}},
		{"no name", s.Operate, []string{"certs", "request", "--out", dir}, 2, []string{"NAME"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cli(t, s, c.token, c.args...).want(t, c.code, c.stderr...)
		})
	}
	for _, n := range []string{"erin", "a:b", "x"} {
		if _, err := os.Stat(filepath.Join(dir, n+".key")); err == nil {
			t.Fatalf("%s.key written for a refused request", n)
		}
	}
}
