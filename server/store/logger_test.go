package store_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/testpeers"
	"github.com/amtops/amtops/server/store"
)

// syncBuffer is a bytes.Buffer safe for the logger's writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// go-redis's own messages arrive as zerolog events with a static message
// and the text in a field, not as raw lines on stderr.
func TestGoRedisLogsThroughZerolog(t *testing.T) {
	var buf syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rdb, err := store.Dial(ctx, store.DialOptions{Addrs: []string{testpeers.Redis(t)}, Log: zerolog.New(&buf)})
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	// A TTL under a millisecond makes go-redis log that it truncates it.
	if err := rdb.Set(ctx, "k", "v", 500*time.Microsecond).Err(); err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(buf.String(), "\n")
	var ev map[string]string
	if err := json.Unmarshal([]byte(line), &ev); err != nil {
		t.Fatalf("log %q is not one zerolog JSON event: %v", buf.String(), err)
	}
	if ev["message"] != "go-redis" || ev["level"] != "warn" || !strings.Contains(ev["detail"], "truncating to 1ms") {
		t.Fatalf("event = %v", ev)
	}
}
