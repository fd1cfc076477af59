package api_test

import (
	"context"
	"fmt"
	"net"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/server/api"
)

// loadingError is what go-redis returns while Redis reads its AOF back.
type loadingError string

func (e loadingError) Error() string { return string(e) }
func (loadingError) RedisError()     {}

// A site database out of reach is Unavailable, which agents and amtopsctl
// retry, not Internal (issue 14 item 7).
func TestToStatusStoreOutage(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, refused := net.Dial("tcp", addr)
	if refused == nil {
		t.Fatal("dial to a closed port succeeded")
	}
	for _, tc := range []struct {
		name string
		err  error
		want codes.Code
	}{
		{"connection refused", fmt.Errorf("store: extend lease b:d: %w", refused), codes.Unavailable},
		{"loading", fmt.Errorf("store: get device d: %w", loadingError("LOADING Redis is loading the dataset in memory")), codes.Unavailable},
		{"other redis error", fmt.Errorf("store: %w", loadingError("WRONGTYPE Operation against a key")), codes.Internal},
		{"not found", fmt.Errorf("store: %w", domain.ErrNotFound), codes.NotFound},
		{"deadline", fmt.Errorf("store: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := status.Code(api.ToStatus(tc.err)); got != tc.want {
				t.Errorf("ToStatus(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
