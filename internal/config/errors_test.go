package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestLoadReportsEveryError: one pass over a file with several mistakes
// names each of them, with its line, in file order.
func TestLoadReportsEveryError(t *testing.T) {
	yaml := `log:
  levle: info
redis:
  addr: localhost
phase1:
  concurrency: lots
phase2:
  lease_ttl: soon
  max_attempts: 0
amt:
  settings:
    kvm: maybe
`
	_, err := LoadServer(writeFile(t, yaml))
	if err == nil {
		t.Fatal("no error")
	}
	want := []string{
		`config: line 2: log.levle: unknown option; did you mean log.level?`,
		`config: line 4: redis.addr = "localhost": must be host:port`,
		`config: line 6: phase1.concurrency = "lots": must be a whole number`,
		`config: line 8: phase2.lease_ttl = "soon": must be a duration such as 30s, 5m or 2h`,
		`config: line 9: phase2.max_attempts = "0": must be between 1 and 100`,
		`config: line 12: amt.settings.kvm = "maybe": must be true or false`,
	}
	got := strings.Split(err.Error(), "\n")
	if !slices.Equal(got, want) {
		t.Fatalf("errors:\n%s\nwant:\n%s", err, strings.Join(want, "\n"))
	}
}

func TestLoadErrorMessages(t *testing.T) {
	cases := []struct {
		name, yaml string
		env        map[string]string
		agent      bool
		want       string // a line of the error
	}{
		{name: "typo in section", yaml: "redis:\n  adress: x\n", want: "config: line 2: redis.adress: unknown option; did you mean redis.addrs?"},
		{name: "typo of section", yaml: "phse2:\n  lease_ttl: 3m\n", want: "config: line 1: phse2: unknown option; did you mean phase2?"},
		{name: "key in wrong section", yaml: "grpc:\n  key_prefix: x\n", want: "config: line 2: grpc.key_prefix: unknown option; did you mean redis.key_prefix?"},
		{name: "nothing close", yaml: "frobnicate: 1\n", want: "config: line 1: frobnicate: unknown option"},
		{name: "int type", yaml: "redis:\n  db: one\n", want: `config: line 2: redis.db = "one": must be a whole number`},
		{name: "section given a value", yaml: "redis: localhost:6379\n", want: `config: line 1: redis = "localhost:6379": must be a section of options (key: value lines)`},
		{name: "list given a value", yaml: "grpc:\n  names: a\n", want: `config: line 2: grpc.names = "a": must be a list`},
		{name: "value given a list", yaml: "redis:\n  addr: [a]\n", want: `config: line 2: redis.addr: must be a single value, a string`},
		{name: "missing option names its section's line", yaml: "directory:\n  url: ldaps://dc1\n  bind_dn: a\n  account_ou: c\n  realm: R\n",
			want: `config: line 1: directory.base_dn: required when directory.url is set`},
		{name: "env type", env: map[string]string{"AMTOPS_PHASE1_CONCURRENCY": "x"},
			want: `config: $AMTOPS_PHASE1_CONCURRENCY: phase1.concurrency = "x": must be a whole number`},
		{name: "env validation", env: map[string]string{"AMTOPS_REDIS_ADDR": "nowhere"},
			want: `config: $AMTOPS_REDIS_ADDR: redis.addr = "nowhere": must be host:port`},
		{name: "env typo", env: map[string]string{"AMTOPS_REDIS_ADR": "127.0.0.1:1"},
			want: `config: $AMTOPS_REDIS_ADR: unknown environment variable; did you mean $AMTOPS_REDIS_ADDR?`},
		{name: "env typo of a secret", env: map[string]string{"AMTOPS_PROVISONING_PASSWORD": "x"},
			want: `did you mean $AMTOPS_PROVISIONING_PASSWORD?`},
		{name: "agent env typo", agent: true, env: map[string]string{"AMTOPS_AGENT_SEVER": "x:1"},
			want: `config: $AMTOPS_AGENT_SEVER: unknown environment variable; did you mean $AMTOPS_AGENT_SERVER?`},
		{name: "redis tls without enabled", yaml: "redis:\n  addr: r:6380\n  tls:\n    server_name: redis.example.test\n",
			want: `config: line 4: redis.tls.server_name = "redis.example.test": set redis.tls.enabled: true to use it`},
		{name: "several addrs need cluster", yaml: "redis:\n  addrs: [a:1, b:2]\n",
			want: `config: line 1: redis.cluster = "false": must be true with several redis.addrs (they are Redis Cluster seeds)`},
		{name: "cluster has only db 0", yaml: "redis:\n  addrs: [a:1, b:2]\n  cluster: true\n  db: 3\n",
			want: `config: line 4: redis.db = "3": must be 0 with redis.cluster: Redis Cluster has only database 0`},
		{name: "addr and addrs", yaml: "redis:\n  addr: a:1\n  addrs: [b:2]\n",
			want: `config: line 3: redis.addrs = "b:2": give redis.addr (one Redis) or redis.addrs (cluster seeds), not both`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			var err error
			if c.agent {
				_, err = LoadAgent(writeFile(t, c.yaml))
			} else {
				_, err = LoadServer(writeFile(t, c.yaml))
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if line == c.want || strings.HasPrefix(c.want, "did you mean") && strings.HasSuffix(line, c.want) {
					return
				}
			}
			t.Fatalf("error:\n%s\nhas no line %q", err, c.want)
		})
	}
}

// A file that is not YAML is named with the line yaml gives.
func TestLoadSyntaxError(t *testing.T) {
	path := writeFile(t, "redis:\n  addr: [\n")
	_, err := LoadServer(path)
	if err == nil || !strings.HasPrefix(err.Error(), "config: "+path+": yaml: line") {
		t.Fatalf("err = %v", err)
	}
}

// TestOtherRolesEnvIgnored: the server's loader leaves the agent's,
// amtopsctl's and the test peers' variables alone, and the agent the server's.
func TestOtherRolesEnvIgnored(t *testing.T) {
	for k, v := range map[string]string{"AMTOPS_AGENT_SERVER": "127.0.0.1:1", "AMTOPS_TOKEN_FILE": "x",
		"AMTOPS_TEST_LDAP_URL": "ldaps://x", "AMTOPS_REDIS_PASSWORD": "p", "AMTOPS_GRPC_LISTEN": "127.0.0.1:0"} {
		t.Setenv(k, v)
	}
	if _, err := LoadServer(""); err != nil {
		t.Fatalf("server: %v", err)
	}
	if _, err := LoadAgent(""); err != nil {
		t.Fatalf("agent: %v", err)
	}
}

func TestRedisOptions(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	yaml := "redis:\n  addrs: [r1:6380, r2:6380]\n  cluster: true\n  username: amtops\n  tls:\n    enabled: true\n    ca_file: " + ca +
		"\n    server_name: redis.example.test\n"
	c, err := LoadServer(writeFile(t, yaml))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Redis
	if !slices.Equal(r.Addresses(), []string{"r1:6380", "r2:6380"}) || !r.Cluster || r.Username != "amtops" ||
		!r.TLS.Enabled || r.TLS.CAFile != ca || r.TLS.ServerName != "redis.example.test" {
		t.Fatalf("redis = %+v", r)
	}
	t.Setenv("AMTOPS_REDIS_ADDRS", "a:1,b:2")
	if c, err = LoadServer(writeFile(t, "redis:\n  cluster: true\n")); err != nil || !slices.Equal(c.Redis.Addresses(), []string{"a:1", "b:2"}) {
		t.Fatalf("addrs from env: %v %v", c.Redis.Addrs, err)
	}
}
