package main

import (
	"strings"
	"testing"
)

// TestBadFlags: bad input stops the command with an error naming the flag,
// before anything listens.
func TestBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown profile", []string{"--profile", "bios"}, "--profile"},
		{"trust hash not hex", []string{"--profile", "factory", "--trust-hash", "zz"}, "trust-hash"},
		{"trust hash of no known length", []string{"--profile", "factory", "--trust-hash", "abcd"}, "trust-hash"},
		{"hello without a port", []string{"--profile", "factory", "--hello", "127.0.0.1"}, "HelloAddr"},
		{"mebx profile without a password", []string{"--profile", "mebx"}, "Password"},
		{"unknown MEBx policy", []string{"--profile", "factory", "--mebx-password-policy", "never"}, "MEBxPolicy"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := run(append(tc.args, "--base-ip", "127.83.250.1"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("run(%v) = %v, want an error naming %s", tc.args, err, tc.want)
			}
		})
	}
}
