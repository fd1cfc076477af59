package config

import (
	"strconv"
	"time"
)

// Agent is a per-subnet agent's configuration. See configs/agent.example.yaml.
type Agent struct {
	Log Log `yaml:"log"`
	// Server is the site server's gRPC address.
	Server string `yaml:"server"`
	// ServerCAFile verifies the server at enrollment (the site's agent CA).
	ServerCAFile string `yaml:"server_ca_file"`
	// ServerName overrides the name checked in the server's certificate.
	ServerName string `yaml:"server_name"`
	// StateDir keeps the agent's key and certificate between runs.
	StateDir string `yaml:"state_dir"`
	// BootstrapTokenFile holds the one-time enrollment token, or use
	// $AMTOPS_AGENT_BOOTSTRAP_TOKEN.
	BootstrapTokenFile string        `yaml:"bootstrap_token_file"`
	Name               string        `yaml:"name"`
	Concurrency        int           `yaml:"concurrency"`
	DeviceDeadline     time.Duration `yaml:"device_deadline"`
	LongPoll           time.Duration `yaml:"long_poll"`
	AMT                AgentAMT      `yaml:"amt"`
	Discovery          Discovery     `yaml:"discovery"`
	// Hello is where factory devices' Hello messages are received.
	Hello Hello `yaml:"hello"`
	// Metrics serves the agent's /metrics.
	Metrics AgentMetrics `yaml:"metrics"`
}

// AgentMetrics is the agent's Prometheus endpoint.
type AgentMetrics struct {
	// Listen is host:port; empty (the default) serves none.
	Listen string `yaml:"listen"`
	// Pprof adds Go's profiles under /debug/pprof/; off by default.
	Pprof bool `yaml:"pprof"`
}

// Hello is the listener for AMT Hello messages (remote configuration):
// devices connect to it, port 9971 by default, and say who they are.
type Hello struct {
	// Listen is host:port; empty turns the listener off.
	Listen string `yaml:"listen"`
}

// AgentAMT is how the agent reaches controllers (C5).
type AgentAMT struct {
	HTTPPort       int           `yaml:"http_port"` // the provisioning port
	TLSPort        int           `yaml:"tls_port"`
	CallTimeout    time.Duration `yaml:"call_timeout"`
	CommitWait     time.Duration `yaml:"commit_wait"`
	CommitDeadline time.Duration `yaml:"commit_deadline"`
}

// Discovery is the agent's sweep of its subnets (S21).
type Discovery struct {
	Interval    time.Duration `yaml:"interval"` // 0 disables scheduled sweeps
	Concurrency int           `yaml:"concurrency"`
	Rate        int           `yaml:"rate"` // probes per second
	DialTimeout time.Duration `yaml:"dial_timeout"`
}

// DefaultAgent is the agent configuration with every default filled in.
func DefaultAgent() Agent {
	return Agent{
		Log:            Log{Level: "info", Format: "json"},
		Server:         "127.0.0.1:7443",
		StateDir:       "./var/agent",
		Concurrency:    2048,
		DeviceDeadline: 10 * time.Minute,
		LongPoll:       25 * time.Second,
		AMT: AgentAMT{HTTPPort: 16992, TLSPort: 16993, CallTimeout: 30 * time.Second,
			CommitWait: 5 * time.Second, CommitDeadline: 2 * time.Minute},
		Discovery: Discovery{Interval: time.Hour, Concurrency: 64, Rate: 200, DialTimeout: 2 * time.Second},
		Hello:     Hello{Listen: ":9971"},
	}
}

// LoadAgent reads path, applies AMTOPS_AGENT_* overrides and validates.
func LoadAgent(path string) (Agent, error) {
	c := DefaultAgent()
	err := load(path, "AMTOPS_AGENT", nil, &c, func() error { return c.Validate() })
	return c, err
}

// Validate checks every field and returns every error, joined.
func (c Agent) Validate() error {
	var k checker
	k.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	k.oneOf("log.format", c.Log.Format, "json", "console")
	k.hostPort("server", c.Server, true)
	k.fileExists("server_ca_file", c.ServerCAFile)
	k.hostPort("hello.listen", c.Hello.Listen, false)
	if c.StateDir == "" {
		k.fail("state_dir", c.StateDir, "required")
	}
	k.between("concurrency", c.Concurrency, 1, 4096)
	k.positive("device_deadline", c.DeviceDeadline)
	k.positive("long_poll", c.LongPoll)
	k.between("amt.http_port", c.AMT.HTTPPort, 1, 65535)
	k.between("amt.tls_port", c.AMT.TLSPort, 1, 65535)
	k.positive("amt.call_timeout", c.AMT.CallTimeout)
	if c.AMT.CommitWait < 0 {
		k.fail("amt.commit_wait", c.AMT.CommitWait, "must not be negative")
	}
	k.positive("amt.commit_deadline", c.AMT.CommitDeadline)
	if c.Discovery.Interval < 0 {
		k.fail("discovery.interval", c.Discovery.Interval, "must not be negative (0 disables)")
	}
	k.between("discovery.concurrency", c.Discovery.Concurrency, 1, 4096)
	k.between("discovery.rate", c.Discovery.Rate, 1, 100000)
	k.positive("discovery.dial_timeout", c.Discovery.DialTimeout)
	return k.err()
}

func itoa(i int) string { return strconv.Itoa(i) }
