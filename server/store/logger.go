package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// redisLogger routes go-redis's own messages (pool trouble, truncated
// TTLs, failed re-authentication) into zerolog instead of raw lines on
// stderr. go-redis has only a process-wide logger, so the last Dial's
// logger receives them.
type redisLogger struct{ log zerolog.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.Warn().Str("detail", strings.TrimSpace(fmt.Sprintf(format, v...))).Msg("go-redis")
}

func routeRedisLogs(log zerolog.Logger) {
	redis.SetLogger(redisLogger{log.With().Str("component", "go-redis").Logger()})
}
