package main

import "testing"

func TestJobViewCells(t *testing.T) {
	for _, c := range []struct {
		name         string
		j            jobView
		attempts, by string
	}{
		{"phase 1 only", jobView{DeviceID: "d1", FQDN: "pc1.amt.test", Attempts: 2}, "2", "pc1.amt.test"},
		{"phase 2's fifth", jobView{DeviceID: "d1", Attempts: 1, Phase2Attempts: 5}, "1+5", "d1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.j.attempts(); got != c.attempts {
				t.Errorf("attempts %q, want %q", got, c.attempts)
			}
			if got := c.j.device(); got != c.by {
				t.Errorf("device %q, want %q", got, c.by)
			}
		})
	}
}
