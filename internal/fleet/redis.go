package fleet

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// startRedis runs a private redis-server on addr with its files in dir:
// no snapshots, and an append-only file when aof is set.
func (f *Fleet) startRedis(ctx context.Context, bin, addr, dir string, aof bool) (*Proc, error) {
	c, err := f.startRedisNode(ctx, bin, "redis", addr, dir, aof)
	if err != nil {
		return nil, err
	}
	f.rdb = c
	return f.Proc("redis"), nil
}

// startRedisNode runs one redis-server called name and returns a client
// once it answers.
func (f *Fleet) startRedisNode(ctx context.Context, bin, name, addr, dir string, aof bool, extra ...string) (*redis.Client, error) {
	host, port, _ := net.SplitHostPort(addr)
	appendonly := "no"
	if aof {
		appendonly = "yes"
	}
	args := append([]string{"--port", port, "--bind", host, "--save", "",
		"--appendonly", appendonly, "--dir", dir, "--daemonize", "no"}, extra...)
	p := newProc(name, KindRedis, f.logDir, bin, args, nil)
	if err := f.add(p); err != nil {
		return nil, err
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	err := poll(ctx, 10*time.Second, 20*time.Millisecond, func() (bool, error) {
		if !p.Running() {
			return false, fmt.Errorf("fleet: redis-server exited: %s", p.LogTail(1000))
		}
		return c.Ping(ctx).Err() == nil, nil
	})
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("fleet: redis on %s: %w", addr, err)
	}
	return c, nil
}

// CommandStats are Redis's calls and microseconds per command since its
// start (INFO commandstats).
type CommandStats map[string]CommandStat

// CommandStat is one command's line of INFO commandstats.
type CommandStat struct {
	Calls     int64   `json:"calls"`
	Usec      int64   `json:"usec"`
	PerDevice float64 `json:"per_device,omitempty"`
}

// Calls is the total of every command's calls.
func (c CommandStats) Calls() int64 {
	var n int64
	for _, s := range c {
		n += s.Calls
	}
	return n
}

// Sub is what happened between before and c.
func (c CommandStats) Sub(before CommandStats) CommandStats {
	out := CommandStats{}
	for k, s := range c {
		b := before[k]
		if d := (CommandStat{Calls: s.Calls - b.Calls, Usec: s.Usec - b.Usec}); d.Calls > 0 {
			out[k] = d
		}
	}
	return out
}

func commandStats(ctx context.Context, rdb *redis.Client) (CommandStats, error) {
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, fmt.Errorf("fleet: info commandstats: %w", err)
	}
	return parseCommandStats(info), nil
}

// parseCommandStats reads lines like
// cmdstat_get:calls=12,usec=40,usec_per_call=3.33,rejected_calls=0,failed_calls=0
func parseCommandStats(info string) CommandStats {
	out := CommandStats{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		var s CommandStat
		for _, kv := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "calls":
				s.Calls, _ = strconv.ParseInt(v, 10, 64)
			case "usec":
				s.Usec, _ = strconv.ParseInt(v, 10, 64)
			}
		}
		out[strings.TrimPrefix(name, "cmdstat_")] = s
	}
	return out
}
