package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/amtops/amtops/internal/domain"
)

// A device's Collections field is the source of truth for membership; the
// per-collection index follows it in mutateDevice, so the two never drift.
func (s *Store) collKey(name string) string { return s.key("{dev}", "c", name) }
func (s *Store) collAllKey() string         { return s.key("{dev}", "colls") }

// PutCollection creates or replaces a collection.
func (s *Store) PutCollection(ctx context.Context, c domain.Collection) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("store: put collection: %w", err)
	}
	if c.CreatedAt.IsZero() {
		c.CreatedAt = s.now().UTC()
	}
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("store: encode collection %s: %w", c.Name, err)
	}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, s.collKey(c.Name), b, 0)
		p.ZAdd(ctx, s.collAllKey(), redis.Z{Score: 0, Member: c.Name})
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: put collection %s: %w", c.Name, err)
	}
	return nil
}

// GetCollection returns one collection or domain.ErrNotFound.
func (s *Store) GetCollection(ctx context.Context, name string) (domain.Collection, error) {
	b, err := s.rdb.Get(ctx, s.collKey(name)).Bytes()
	if errors.Is(err, redis.Nil) {
		return domain.Collection{}, fmt.Errorf("store: get collection %s: %w", name, domain.ErrNotFound)
	}
	if err != nil {
		return domain.Collection{}, fmt.Errorf("store: get collection %s: %w", name, err)
	}
	var c domain.Collection
	if err := json.Unmarshal(b, &c); err != nil {
		return domain.Collection{}, fmt.Errorf("store: decode collection %s: %w", name, err)
	}
	return c, nil
}

// ListCollections returns every collection in name order.
func (s *Store) ListCollections(ctx context.Context) ([]domain.Collection, error) {
	names, err := s.rdb.ZRange(ctx, s.collAllKey(), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("store: list collections: %w", err)
	}
	out := make([]domain.Collection, 0, len(names))
	for _, n := range names {
		c, err := s.GetCollection(ctx, n)
		if errors.Is(err, domain.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("store: list collections: %w", err)
		}
		out = append(out, c)
	}
	return out, nil
}

// DeleteCollection removes every member from the collection, then the
// collection itself. A missing collection is domain.ErrNotFound.
func (s *Store) DeleteCollection(ctx context.Context, name string) error {
	if _, err := s.GetCollection(ctx, name); err != nil {
		return fmt.Errorf("store: delete collection: %w", err)
	}
	for {
		ids, err := s.rdb.ZRangeByLex(ctx, s.devCollKey(name), &redis.ZRangeBy{Min: "-", Max: "+", Count: 500}).Result()
		if err != nil {
			return fmt.Errorf("store: delete collection %s: %w", name, err)
		}
		if len(ids) == 0 {
			break
		}
		if err := s.RemoveMembers(ctx, name, ids...); err != nil {
			return fmt.Errorf("store: delete collection %s: %w", name, err)
		}
	}
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, s.collKey(name), s.devCollKey(name))
		p.ZRem(ctx, s.collAllKey(), name)
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: delete collection %s: %w", name, err)
	}
	return nil
}

// AddMembers puts devices into an existing collection. Every device must
// exist; devices already members are left alone.
func (s *Store) AddMembers(ctx context.Context, name string, deviceIDs ...string) error {
	if _, err := s.GetCollection(ctx, name); err != nil {
		return fmt.Errorf("store: add members: %w", err)
	}
	for _, id := range deviceIDs {
		_, err := s.UpdateDevice(ctx, id, func(d *domain.Device) error {
			if !slices.Contains(d.Collections, name) {
				d.Collections = append(d.Collections, name)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("store: add members to %s: %w", name, err)
		}
	}
	return nil
}

// RemoveMembers takes devices out of a collection; devices that are gone
// or were not members are skipped.
func (s *Store) RemoveMembers(ctx context.Context, name string, deviceIDs ...string) error {
	for _, id := range deviceIDs {
		_, err := s.mutateDevice(ctx, id, func(d *domain.Device) (*domain.Device, error) {
			if d == nil {
				return nil, errSkip
			}
			d.Collections = slices.DeleteFunc(d.Collections, func(c string) bool { return c == name })
			return d, nil
		})
		if errors.Is(err, errSkip) {
			// The device is gone but may linger in the index if it was
			// written by an older version; drop the entry.
			if err := s.rdb.ZRem(ctx, s.devCollKey(name), id).Err(); err != nil {
				return fmt.Errorf("store: remove members from %s: %w", name, err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("store: remove members from %s: %w", name, err)
		}
	}
	return nil
}

// errSkip aborts a mutation without writing anything.
var errSkip = errors.New("skip")

// Members pages through a collection's devices.
func (s *Store) Members(ctx context.Context, name string, limit int, cursor string) (domain.DevicePage, error) {
	return s.ListDevices(ctx, domain.DeviceFilter{Collection: name, Limit: limit, Cursor: cursor})
}

// ApplyCollectionRules adds every device a collection's rules match. It
// walks the whole fleet in pages, so it runs on rule changes and at
// sweeps rather than per request.
func (s *Store) ApplyCollectionRules(ctx context.Context, name string) (added int, err error) {
	c, err := s.GetCollection(ctx, name)
	if err != nil {
		return 0, fmt.Errorf("store: apply rules: %w", err)
	}
	if len(c.Rules) == 0 {
		return 0, nil
	}
	var page domain.DevicePage
	for first := true; first || page.Next != ""; first = false {
		if page, err = s.ListDevices(ctx, domain.DeviceFilter{Limit: 1000, Cursor: page.Next}); err != nil {
			return added, fmt.Errorf("store: apply rules of %s: %w", name, err)
		}
		var ids []string
		for _, d := range page.Devices {
			if !slices.Contains(d.Collections, name) && slices.ContainsFunc(c.Rules, func(r domain.CollectionRule) bool { return r.Matches(d) }) {
				ids = append(ids, d.ID)
			}
		}
		if err := s.AddMembers(ctx, name, ids...); err != nil {
			return added, err
		}
		added += len(ids)
	}
	return added, nil
}
