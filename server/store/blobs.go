package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/amtops/amtops/internal/domain"
)

// Blobs is a small named-value store for components that keep their own
// state, such as the built-in CA (it satisfies builtin.Storage). Values are
// stored as given: wrap it in the component's sealing layer for secrets.
type Blobs struct {
	s  *Store
	ns string
}

// Blobs returns the blob space ns (for example "ca").
func (s *Store) Blobs(ns string) *Blobs { return &Blobs{s: s, ns: ns} }

func (b *Blobs) key(name string) string { return b.s.key("{blob:"+b.ns+"}", "v", name) }
func (b *Blobs) set(name string) string { return b.s.key("{blob:"+b.ns+"}", "set", name) }

// Get returns the value of name, or an error wrapping domain.ErrNotFound.
func (b *Blobs) Get(ctx context.Context, name string) ([]byte, error) {
	v, err := b.s.rdb.Get(ctx, b.key(name)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("store: blob %s/%s: %w", b.ns, name, domain.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store: get blob %s/%s: %w", b.ns, name, err)
	}
	return v, nil
}

// PutIfAbsent stores value unless name exists, and returns what is stored
// afterwards: two replicas racing agree on the first value written.
func (b *Blobs) PutIfAbsent(ctx context.Context, name string, value []byte) ([]byte, error) {
	ok, err := b.s.rdb.SetNX(ctx, b.key(name), value, 0).Result()
	if err != nil {
		return nil, fmt.Errorf("store: put blob %s/%s: %w", b.ns, name, err)
	}
	if ok {
		return value, nil
	}
	return b.Get(ctx, name)
}

// Put stores value under name.
func (b *Blobs) Put(ctx context.Context, name string, value []byte) error {
	if err := b.s.rdb.Set(ctx, b.key(name), value, 0).Err(); err != nil {
		return fmt.Errorf("store: put blob %s/%s: %w", b.ns, name, err)
	}
	return nil
}

// AddToSet adds member to the set named set.
func (b *Blobs) AddToSet(ctx context.Context, set, member string) error {
	if err := b.s.rdb.SAdd(ctx, b.set(set), member).Err(); err != nil {
		return fmt.Errorf("store: add to set %s/%s: %w", b.ns, set, err)
	}
	return nil
}

// SetMembers lists the set named set (empty when missing).
func (b *Blobs) SetMembers(ctx context.Context, set string) ([]string, error) {
	m, err := b.s.rdb.SMembers(ctx, b.set(set)).Result()
	if err != nil {
		return nil, fmt.Errorf("store: set members %s/%s: %w", b.ns, set, err)
	}
	return m, nil
}
