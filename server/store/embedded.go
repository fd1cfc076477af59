package store

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// Embedded starts an in-process Redis (miniredis) for trying amtops out
// without a Redis server, and returns a client for it and a close function (safe to call twice)
// that stops the clock goroutine, the client and the server. Nothing is
// persisted: everything is lost when the process ends.
//
// miniredis expires keys only when its clock moves, so a goroutine moves
// it forward once per tick. ClockTTL is deliberately not used: it makes
// every command scan all keys.
func Embedded(ctx context.Context, log zerolog.Logger) (redis.UniversalClient, func(), error) {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		return nil, nil, fmt.Errorf("store: start embedded redis: %w", err)
	}
	log.Warn().Str("addr", m.Addr()).
		Msg("embedded Redis in use: data is NOT persistent and is lost when the server stops; configure redis.addr for real use")
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		last := time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				m.FastForward(now.Sub(last))
				last = now
			}
		}
	}()
	routeRedisLogs(log)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	if err := rdb.Ping(ctx).Err(); err != nil {
		close(done)
		<-stopped
		m.Close()
		return nil, nil, fmt.Errorf("store: ping embedded redis: %w", err)
	}
	var once sync.Once
	closeFn := func() {
		once.Do(func() {
			close(done)
			<-stopped
			_ = rdb.Close()
			m.Close()
		})
	}
	return rdb, closeFn, nil
}
