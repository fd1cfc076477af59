package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// fields lists the field of every *Error in err.
func fields(err error) []string {
	var out []string
	for _, e := range unjoin(err) {
		var ce *Error
		if errors.As(e, &ce) {
			out = append(out, ce.Field)
		}
	}
	return out
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadServer(t *testing.T) {
	cases := []struct {
		name, yaml string
		env        map[string]string
		field      string // "" means valid
		check      func(t *testing.T, c Server)
	}{
		{name: "empty file is defaults", yaml: "", check: func(t *testing.T, c Server) {
			if c.Redis.Addr != "" || c.Phase2.LeaseTTL != 2*time.Minute || c.CA.Backend != "builtin" {
				t.Fatalf("defaults not applied: %+v", c)
			}
		}},
		{name: "values", yaml: "redis:\n  addr: 127.0.0.1:6390\nphase2:\n  lease_ttl: 30s\n", check: func(t *testing.T, c Server) {
			if c.Redis.Addr != "127.0.0.1:6390" || c.Phase2.LeaseTTL != 30*time.Second {
				t.Fatalf("values not read: %+v", c.Redis)
			}
		}},
		{name: "env overrides file", yaml: "redis:\n  addr: 127.0.0.1:6390\n",
			env: map[string]string{"AMTOPS_REDIS_ADDR": "127.0.0.1:7000", "AMTOPS_PHASE1_CONCURRENCY": "3",
				"AMTOPS_DIRECTORY_GROUPS_8021X": "a, b"},
			check: func(t *testing.T, c Server) {
				if c.Redis.Addr != "127.0.0.1:7000" || c.Phase1.Concurrency != 3 || len(c.Directory.Groups8021X) != 2 {
					t.Fatalf("env not applied: %+v %+v", c.Redis, c.Directory.Groups8021X)
				}
			}},
		{name: "unknown key", yaml: "redis:\n  adress: x\n", field: "redis.adress"},
		{name: "duplicate key", yaml: "redis:\n  addr: 127.0.0.1:1\n  addr: 127.0.0.1:2\n", field: "redis.addr"},
		{name: "duplicate section", yaml: "phase1:\n  concurrency: 2\nphase1:\n  concurrency: 3\n", field: "phase1"},
		{name: "bad yaml duration", yaml: "phase2:\n  lease_ttl: banana\n", field: "phase2.lease_ttl"},
		{name: "list of structs", yaml: "networks:\n  wireless:\n  - {name: a, ssid: \"\"}\n", field: "networks.wireless[0].ssid"},
		{name: "bad env duration", env: map[string]string{"AMTOPS_PHASE2_LEASE_TTL": "soon"}, field: "phase2.lease_ttl"},
		{name: "bad redis addr", yaml: "redis:\n  addr: localhost\n", field: "redis.addr"},
		{name: "short lease", yaml: "phase2:\n  lease_ttl: 1s\n", field: "phase2.lease_ttl"},
		{name: "unserved deadline under the lease", yaml: "phase2:\n  unserved_deadline: 30s\n", field: "phase2.unserved_deadline"},
		{name: "negative unserved deadline", env: map[string]string{"AMTOPS_PHASE2_UNSERVED_DEADLINE": "-1m"}, field: "phase2.unserved_deadline"},
		{name: "plain ldap", yaml: "directory:\n  url: ldap://dc1:389\n  bind_dn: a\n  base_dn: b\n  account_ou: c\n  realm: R\n", field: "directory.url"},
		{name: "directory needs base", yaml: "directory:\n  url: ldaps://dc1\n  bind_dn: a\n  account_ou: c\n  realm: R\n", field: "directory.base_dn"},
		{name: "bad backend", yaml: "ca:\n  backend: vault\n", field: "ca.backend"},
		{name: "step-ca needs url", yaml: "ca:\n  backend: step-ca\n", field: "ca.step_ca.url"},
		{name: "remote config chain without key", yaml: "amt:\n  remote_config:\n    chain_file: /etc/hostname\n", field: "amt.remote_config.key_file"},
		{name: "remote config both forms", yaml: "amt:\n  remote_config:\n    chain_file: /etc/hostname\n    key_file: /etc/hostname\n    pkcs12_file: /etc/hostname\n", field: "amt.remote_config.pkcs12_file"},
		{name: "remote config missing file", yaml: "amt:\n  remote_config:\n    pkcs12_file: /nonexistent/prov.p12\n", field: "amt.remote_config.pkcs12_file"},
		{name: "remote config bad domain", yaml: "amt:\n  remote_config:\n    trusted_domain: \"corp example\"\n", field: "amt.remote_config.trusted_domain"},
		{name: "remote config bad subnet", yaml: "amt:\n  remote_config:\n    subnets:\n    - {cidr: 10.1.2.3/24, trusted_domain: corp.example.test}\n", field: "amt.remote_config.subnets[0].cidr"},
		{name: "remote config subnet domain", yaml: "amt:\n  remote_config:\n    subnets:\n    - {cidr: 10.1.2.0/24, trusted_domain: \"\"}\n", field: "amt.remote_config.subnets[0].trusted_domain"},
		{name: "crl on every interface", yaml: "http:\n  listen: 0.0.0.0:7080\n", field: "ca.crl_url"},
		{name: "crl on no host", yaml: "http:\n  listen: \":7080\"\n", field: "ca.crl_url"},
		{name: "crl url not http", yaml: "ca:\n  crl_url: ldap://ca/crl\n", field: "ca.crl_url"},
		{name: "crl url with any listen", yaml: "http:\n  listen: 0.0.0.0:7080\nca:\n  crl_url: http://pki.example.test/amt.crl\n",
			check: func(t *testing.T, c Server) {
				if c.CA.CRLURL != "http://pki.example.test/amt.crl" {
					t.Fatalf("crl_url = %q", c.CA.CRLURL)
				}
			}},
		{name: "bad sid", yaml: "amt:\n  kerberos:\n    admin_sids: [S-1-5-21-1, bob]\n", field: "amt.kerberos.admin_sids[1]"},
		{name: "clock tolerance", yaml: "amt:\n  kerberos:\n    max_clock_tolerance: 9\n", field: "amt.kerberos.max_clock_tolerance"},
		{name: "system user", yaml: "amt:\n  provisioning_user: $$OsAdmin\n", field: "amt.provisioning_user"},
		{name: "admin role", yaml: "admin:\n  tokens:\n  - {name: a, role: root, token_file: x}\n", field: "admin.tokens[0].role"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			cfg, err := LoadServer(writeFile(t, c.yaml))
			if c.field == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				c.check(t, cfg)
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.field) {
				t.Fatalf("error %v does not name %q", err, c.field)
			}
			if fs := fields(err); !slices.Contains(fs, c.field) {
				t.Fatalf("fields = %q, want %q among them", fs, c.field)
			}
		})
	}
}

func TestLoadAgent(t *testing.T) {
	cases := []struct{ name, yaml, field string }{
		{"defaults", "", ""},
		{"ports", "amt:\n  http_port: 26992\n  tls_port: 26993\n", ""},
		{"bad port", "amt:\n  http_port: 70000\n", "amt.http_port"},
		{"no server", "server: \"\"\n", "server"},
		{"bad concurrency", "concurrency: 0\n", "concurrency"},
		{"hello off", "hello:\n  listen: \"\"\n", ""},
		{"bad hello", "hello:\n  listen: 9971\n", "hello.listen"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := LoadAgent(writeFile(t, c.yaml))
			if (err == nil) != (c.field == "") || err != nil && !strings.Contains(err.Error(), c.field) {
				t.Fatalf("err = %v, want field %q", err, c.field)
			}
		})
	}
}

func TestExampleConfigsLoad(t *testing.T) {
	if _, err := LoadServer("../../configs/server.example.yaml"); err != nil {
		t.Fatalf("server example: %v", err)
	}
	if _, err := LoadAgent("../../configs/agent.example.yaml"); err != nil {
		t.Fatalf("agent example: %v", err)
	}
}
