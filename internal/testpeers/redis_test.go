package testpeers

import "testing"

func TestRedisPeers(t *testing.T) {
	tests := []struct {
		name  string
		start func(testing.TB) string
	}{
		{"redis-server", Redis},
		{"miniredis", Miniredis},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := tc.start(t)
			if err := ping(addr); err != nil {
				t.Fatalf("PING %s: %v", addr, err)
			}
		})
	}
}
