package config

import (
	"os"
	"testing"
)

// FuzzLoadServer: any file gives a configuration or an error, never a
// panic, and an error always names something.
func FuzzLoadServer(f *testing.F) {
	for _, p := range []string{"../../configs/server.example.yaml"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{"", "redis:\n  addr: [a]\n", "a: &x {b: *x}\n", "phase2:\n  lease_ttl: 1s\n",
		"networks:\n  wireless:\n  - {name: a, ssid: \"\"}\n", "redis: !!binary aGk=\n", "- 1\n- 2\n", "? [a]\n: b\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c := DefaultServer()
		if err := parse(b, "AMTOPS", []string{"AMTOPS_AGENT_"}, &c, func() error { return c.Validate() }); err != nil && err.Error() == "" {
			t.Fatal("empty error")
		}
	})
}

// FuzzLoadAgent is FuzzLoadServer for the agent's configuration.
func FuzzLoadAgent(f *testing.F) {
	if b, err := os.ReadFile("../../configs/agent.example.yaml"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("amt:\n  http_port: 1e9\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c := DefaultAgent()
		if err := parse(b, "AMTOPS_AGENT", nil, &c, func() error { return c.Validate() }); err != nil && err.Error() == "" {
			t.Fatal("empty error")
		}
	})
}
