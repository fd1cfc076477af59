// Package store is the site database on Redis: devices and their indexes,
// collections, certificate records, batches and jobs, the operations log,
// agents and enrollment tokens, sealed secrets, and the phase-2 lease
// queue. It is the only package that imports go-redis.
//
// Every multi-key transaction or script touches keys of one hash tag, so
// the same code runs on a single Redis and on Redis Cluster:
//
//	<prefix>:{dev}:…          devices, their indexes, collections
//	<prefix>:{cert}:…         certificate records
//	<prefix>:{b:<batch>}:…    one batch and its jobs
//	<prefix>:log:{<device>}   one device's operations log (stream)
//	<prefix>:{agent}:…        agents, heartbeats, enrollment tokens
//	<prefix>:{q:<subnet>}:…   one subnet's phase-2 lease queue
//	<prefix>:secret:<name>    one sealed secret
//	<prefix>:site             the site marker (the site's ID)
//	amtops-sites              prefix → site ID of every site on this database
package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/secrets"
)

// Options tunes a Store. The zero value is usable.
type Options struct {
	// Prefix starts every key; default "amtops".
	Prefix string
	// Clock gives the time written into records; default time.Now.
	Clock func() time.Time
	// OplogCap is roughly how many events each device's operations log
	// keeps (trimmed with MAXLEN ~); default 1000.
	OplogCap int64
}

// Store is the Redis-backed site database. It is safe for concurrent use.
type Store struct {
	rdb    redis.UniversalClient
	sealer *secrets.Sealer
	prefix string
	now    func() time.Time
	oplog  int64
}

// New wraps a connected client. The sealer protects secrets and phase-2
// payloads; it must not be nil.
func New(rdb redis.UniversalClient, sealer *secrets.Sealer, opts Options) *Store {
	if opts.Prefix == "" {
		opts.Prefix = "amtops"
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.OplogCap <= 0 {
		opts.OplogCap = 1000
	}
	return &Store{rdb: rdb, sealer: sealer, prefix: opts.Prefix, now: opts.Clock, oplog: opts.OplogCap}
}

// DialOptions says how to reach Redis.
type DialOptions struct {
	// Addrs is one address (host:port) for a single Redis, or several
	// seed addresses for Redis Cluster.
	Addrs []string
	// Cluster forces Redis Cluster with a single seed address.
	Cluster  bool
	Username string
	Password string
	DB       int
	TLS      *tls.Config
	// ClientName appears in CLIENT LIST; handy to tell replicas apart.
	ClientName string
	// LoadingWait is how long Dial waits for a Redis that is still
	// loading its data (after a restart, an AOF can take minutes);
	// default 10 minutes. Log hears about the wait.
	LoadingWait time.Duration
	Log         zerolog.Logger
}

// Dial connects to Redis and checks it answers PING. Callers keep the
// client as an opaque value (they pass it to New, asynq and Close) so that
// only this package imports go-redis.
func Dial(ctx context.Context, o DialOptions) (redis.UniversalClient, error) {
	if len(o.Addrs) == 0 {
		return nil, errors.New("store: dial: redis.addrs: at least one address is required")
	}
	routeRedisLogs(o.Log)
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:         o.Addrs,
		IsClusterMode: o.Cluster,
		Username:      o.Username,
		Password:      o.Password,
		DB:            o.DB,
		TLSConfig:     o.TLS,
		ClientName:    o.ClientName,
		// Long-polls and scripts are short; keep pools modest per replica.
		PoolSize: 64,
	})
	if err := waitLoaded(ctx, rdb, o); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("store: dial %v: %w", o.Addrs, err)
	}
	return rdb, nil
}

// waitLoaded pings until Redis answers, waiting out LOADING: a server
// started next to a Redis that restarts with its AOF must wait for the
// data, not exit (and never run on an empty view of it).
func waitLoaded(ctx context.Context, rdb redis.UniversalClient, o DialOptions) error {
	wait := o.LoadingWait
	if wait <= 0 {
		wait = 10 * time.Minute
	}
	deadline, logged := time.Now().Add(wait), false
	for {
		err := rdb.Ping(ctx).Err()
		if err == nil || !strings.HasPrefix(err.Error(), "LOADING") {
			return err
		}
		if !logged {
			o.Log.Warn().Strs("addrs", o.Addrs).Msg("redis is loading its data; waiting")
			logged = true
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still loading after %v: %w", wait, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("store: ping: %w", err)
	}
	return nil
}

// key joins the prefix and the parts with ':'.
func (s *Store) key(parts ...string) string {
	k := s.prefix
	for _, p := range parts {
		k += ":" + p
	}
	return k
}

// maxTxRetries bounds optimistic-concurrency retries under contention.
const maxTxRetries = 64

// watchRetry runs a WATCH/MULTI transaction until it commits, retrying
// when a watched key changed under it.
func (s *Store) watchRetry(ctx context.Context, fn func(*redis.Tx) error, keys ...string) error {
	for i := 0; ; i++ {
		err := s.rdb.Watch(ctx, fn, keys...)
		if !errors.Is(err, redis.TxFailedErr) {
			return err
		}
		if i >= maxTxRetries {
			return fmt.Errorf("too much contention after %d retries: %w", i, err)
		}
		// Jittered back-off so that colliding writers spread out.
		d := time.Duration(rand.IntN(1+min(i, 10))) * time.Millisecond
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
	}
}

// ms is a time as Unix milliseconds, the unit every score uses.
func ms(t time.Time) int64 { return t.UnixMilli() }
