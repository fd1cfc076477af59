package main

import (
	"strings"
	"testing"
)

// TestBadFlags: bad input stops the bench with an error naming the flag,
// before anything is built or started.
func TestBadFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no devices", []string{"--devices", "0"}, "--devices"},
		{"too many agents", []string{"--agents", "65"}, "--agents"},
		{"no replica", []string{"--replicas", "0"}, "--replicas"},
		{"negative latency", []string{"--latency", "-1s"}, "--latency"},
		{"no timeout", []string{"--timeout", "0s"}, "--timeout"},
		{"not a duration", []string{"--tls-restart", "soon"}, "tls-restart"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parse(tc.args); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("parse(%v) = %v, want an error naming %s", tc.args, err, tc.want)
			}
		})
	}
	o, err := parse([]string{"--keys-at-site", "--devices", "10"})
	if err != nil || o.keyOnDevice || o.devices != 10 {
		t.Errorf("--keys-at-site --devices 10: %+v, %v", o, err)
	}
}
