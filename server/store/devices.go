package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/amtops/amtops/internal/domain"
)

// Device records and every index live under the {dev} hash tag so that an
// update moves the record and its index entries in one transaction. Index
// sets are sorted sets with score 0, ordered by device ID, which gives
// stable cursors for paging (ZRANGEBYLEX).
func (s *Store) devKey(id string) string { return s.key("{dev}", "d", id) }
func (s *Store) devAllKey() string       { return s.key("{dev}", "ix", "all") }
func (s *Store) devSubnetKey(p netip.Prefix) string {
	return s.key("{dev}", "ix", "subnet", p.Masked().String())
}
func (s *Store) devStatusKey(st domain.Status) string {
	return s.key("{dev}", "ix", "status", string(st))
}
func (s *Store) devCollKey(name string) string { return s.key("{dev}", "ix", "coll", name) }
func (s *Store) devIPKey(ip netip.Addr) string { return s.key("{dev}", "ix", "ip", ip.String()) }
func (s *Store) devFQDNKey() string            { return s.key("{dev}", "ix", "fqdn") }

// fqdnOf is the FQDN index entry: case-insensitive, as DNS is.
func fqdnOf(d *domain.Device) string {
	if d == nil || d.HostName == "" {
		return ""
	}
	return strings.ToLower(d.FQDN())
}

// indexKeys lists the sorted-set indexes a device belongs to.
func (s *Store) indexKeys(d *domain.Device) []string {
	if d == nil {
		return nil
	}
	keys := []string{s.devAllKey(), s.devStatusKey(d.Status)}
	if d.Subnet.IsValid() {
		keys = append(keys, s.devSubnetKey(d.Subnet))
	}
	if d.IP.IsValid() {
		keys = append(keys, s.devIPKey(d.IP))
	}
	for _, c := range d.Collections {
		keys = append(keys, s.devCollKey(c))
	}
	return keys
}

// PutDevice creates or replaces a device after validating it. UpdatedAt
// is set from the store's clock.
func (s *Store) PutDevice(ctx context.Context, d domain.Device) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("store: put device: %w", err)
	}
	_, err := s.mutateDevice(ctx, d.ID, func(*domain.Device) (*domain.Device, error) { return &d, nil })
	if err != nil {
		return fmt.Errorf("store: put device %s: %w", d.ID, err)
	}
	return nil
}

// GetDevice returns one device; a missing one is domain.ErrNotFound.
func (s *Store) GetDevice(ctx context.Context, id string) (domain.Device, error) {
	b, err := s.rdb.Get(ctx, s.devKey(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return domain.Device{}, fmt.Errorf("store: get device %s: %w", id, domain.ErrNotFound)
	}
	if err != nil {
		return domain.Device{}, fmt.Errorf("store: get device %s: %w", id, err)
	}
	var d domain.Device
	if err := json.Unmarshal(b, &d); err != nil {
		return domain.Device{}, fmt.Errorf("store: decode device %s: %w", id, err)
	}
	return d, nil
}

// UpdateDevice applies fn to the stored device under optimistic
// concurrency: if another writer changes the device meanwhile, fn runs
// again on the fresh copy. fn must not change the ID. The new record is
// validated and every index follows it in the same transaction.
func (s *Store) UpdateDevice(ctx context.Context, id string, fn func(*domain.Device) error) (domain.Device, error) {
	d, err := s.mutateDevice(ctx, id, func(cur *domain.Device) (*domain.Device, error) {
		if cur == nil {
			return nil, domain.ErrNotFound
		}
		if err := fn(cur); err != nil {
			return nil, err
		}
		if cur.ID != id {
			return nil, domain.InvalidField("device.id", cur.ID, "cannot be changed (was "+id+")")
		}
		if err := cur.Validate(); err != nil {
			return nil, err
		}
		return cur, nil
	})
	if err != nil {
		return domain.Device{}, fmt.Errorf("store: update device %s: %w", id, err)
	}
	return d, nil
}

// DeleteDevice removes a device and its index entries. Deleting a missing
// device is domain.ErrNotFound.
func (s *Store) DeleteDevice(ctx context.Context, id string) error {
	_, err := s.mutateDevice(ctx, id, func(cur *domain.Device) (*domain.Device, error) {
		if cur == nil {
			return nil, domain.ErrNotFound
		}
		return nil, nil
	})
	if err != nil {
		return fmt.Errorf("store: delete device %s: %w", id, err)
	}
	return nil
}

// mutateDevice is the one write path for devices. fn gets the current
// record (nil when absent) and returns the next one (nil deletes).
func (s *Store) mutateDevice(ctx context.Context, id string, fn func(cur *domain.Device) (*domain.Device, error)) (domain.Device, error) {
	if id == "" {
		return domain.Device{}, domain.InvalidField("device.id", "", "must not be empty")
	}
	key := s.devKey(id)
	var out domain.Device
	err := s.watchRetry(ctx, func(tx *redis.Tx) error {
		var old *domain.Device
		b, err := tx.Get(ctx, key).Bytes()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			return err
		default:
			old = new(domain.Device)
			if err := json.Unmarshal(b, old); err != nil {
				return fmt.Errorf("decode: %w", err)
			}
		}
		var cur *domain.Device
		if old != nil {
			c := *old
			c.Collections = slices.Clone(old.Collections)
			c.Warnings = slices.Clone(old.Warnings)
			cur = &c
		}
		next, err := fn(cur)
		if err != nil {
			return err
		}
		oldF, newF := fqdnOf(old), fqdnOf(next)
		if next != nil {
			next.Collections = dedupe(next.Collections)
			next.UpdatedAt = s.now().UTC()
			if newF != "" && newF != oldF {
				// Watch the FQDN index only when this write claims a
				// name, so that ordinary updates do not contend on it.
				if err := tx.Watch(ctx, s.devFQDNKey()).Err(); err != nil {
					return err
				}
				owner, err := tx.HGet(ctx, s.devFQDNKey(), newF).Result()
				if err != nil && !errors.Is(err, redis.Nil) {
					return err
				}
				if owner != "" && owner != id {
					return fmt.Errorf("fqdn %s already belongs to device %s: %w", newF, owner, domain.ErrConflict)
				}
			}
		}
		var enc []byte
		if next != nil {
			if enc, err = json.Marshal(next); err != nil {
				return fmt.Errorf("encode: %w", err)
			}
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range s.indexKeys(old) {
				p.ZRem(ctx, k, id)
			}
			if oldF != "" && oldF != newF {
				p.HDel(ctx, s.devFQDNKey(), oldF)
			}
			if next == nil {
				p.Del(ctx, key)
				return nil
			}
			p.Set(ctx, key, enc, 0)
			for _, k := range s.indexKeys(next) {
				p.ZAdd(ctx, k, redis.Z{Score: 0, Member: id})
			}
			if newF != "" {
				p.HSet(ctx, s.devFQDNKey(), newF, id)
			}
			return nil
		})
		if err == nil && next != nil {
			out = *next
		}
		return err
	}, key)
	return out, err
}

func dedupe(xs []string) []string {
	if len(xs) == 0 {
		return nil
	}
	out := slices.Clone(xs)
	slices.Sort(out)
	return slices.Compact(out)
}

// DeviceByFQDN finds the device that owns an FQDN (case-insensitive).
func (s *Store) DeviceByFQDN(ctx context.Context, fqdn string) (domain.Device, error) {
	id, err := s.rdb.HGet(ctx, s.devFQDNKey(), strings.ToLower(fqdn)).Result()
	if errors.Is(err, redis.Nil) {
		return domain.Device{}, fmt.Errorf("store: device by fqdn %s: %w", fqdn, domain.ErrNotFound)
	}
	if err != nil {
		return domain.Device{}, fmt.Errorf("store: device by fqdn %s: %w", fqdn, err)
	}
	return s.GetDevice(ctx, id)
}

// DevicesByIP lists the devices recorded with an address; more than one
// means stale records after a DHCP change.
func (s *Store) DevicesByIP(ctx context.Context, ip netip.Addr) ([]domain.Device, error) {
	ids, err := s.rdb.ZRange(ctx, s.devIPKey(ip), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("store: devices by ip %s: %w", ip, err)
	}
	ds, err := s.getDevices(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("store: devices by ip %s: %w", ip, err)
	}
	return ds, nil
}

// ListDevices pages through devices in ID order. It walks the most
// selective index given and filters the rest.
func (s *Store) ListDevices(ctx context.Context, f domain.DeviceFilter) (domain.DevicePage, error) {
	if f.Status != "" && !f.Status.Valid() {
		return domain.DevicePage{}, fmt.Errorf("store: list devices: %w", domain.InvalidField("filter.status", string(f.Status), "unknown status"))
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 10000)
	index := s.devAllKey()
	switch {
	case f.Collection != "":
		index = s.devCollKey(f.Collection)
	case f.Subnet.IsValid():
		index = s.devSubnetKey(f.Subnet)
	case f.Status != "":
		index = s.devStatusKey(f.Status)
	}
	var page domain.DevicePage
	cursor := f.Cursor
	chunk := int64(max(limit, 100))
	if !f.Indexed() {
		// A search reads many candidates per match: fewer, larger reads.
		chunk = int64(max(limit, 1000))
	}
	for {
		lo := "-"
		if cursor != "" {
			lo = "(" + cursor
		}
		ids, err := s.rdb.ZRangeByLex(ctx, index, &redis.ZRangeBy{Min: lo, Max: "+", Count: chunk}).Result()
		if err != nil {
			return domain.DevicePage{}, fmt.Errorf("store: list devices: %w", err)
		}
		ds, err := s.getDevices(ctx, ids)
		if err != nil {
			return domain.DevicePage{}, fmt.Errorf("store: list devices: %w", err)
		}
		byID := make(map[string]domain.Device, len(ds))
		for _, d := range ds {
			byID[d.ID] = d
		}
		for _, id := range ids {
			cursor = id
			if d, ok := byID[id]; ok && f.Match(d) {
				page.Devices = append(page.Devices, d)
				if len(page.Devices) == limit {
					page.Next = id
					return page, nil
				}
			}
		}
		if int64(len(ids)) < chunk {
			return page, nil
		}
	}
}

// getDevices reads many devices in one MGET (one slot: {dev}); missing
// ones are skipped.
func (s *Store) getDevices(ctx context.Context, ids []string) ([]domain.Device, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = s.devKey(id)
	}
	vals, err := s.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, err
	}
	out := make([]domain.Device, 0, len(vals))
	for i, v := range vals {
		str, ok := v.(string)
		if !ok {
			continue
		}
		var d domain.Device
		if err := json.Unmarshal([]byte(str), &d); err != nil {
			return nil, fmt.Errorf("decode device %s: %w", ids[i], err)
		}
		out = append(out, d)
	}
	return out, nil
}

// CountDevices counts devices by status (S20), plus the total under "".
func (s *Store) CountDevices(ctx context.Context) (map[domain.Status]int64, error) {
	cmds := make(map[domain.Status]*redis.IntCmd, len(domain.Statuses)+1)
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, st := range domain.Statuses {
			cmds[st] = p.ZCard(ctx, s.devStatusKey(st))
		}
		cmds[""] = p.ZCard(ctx, s.devAllKey())
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: count devices: %w", err)
	}
	out := make(map[domain.Status]int64, len(cmds))
	for st, c := range cmds {
		out[st] = c.Val()
	}
	return out, nil
}

// EachDevice calls fn with every device, in ID order, reading them in
// chunks of 1000; it stops at fn's first error.
func (s *Store) EachDevice(ctx context.Context, fn func(domain.Device) error) error {
	cursor := ""
	for {
		page, err := s.ListDevices(ctx, domain.DeviceFilter{Limit: 1000, Cursor: cursor})
		if err != nil {
			return err
		}
		for _, d := range page.Devices {
			if err := fn(d); err != nil {
				return err
			}
		}
		if page.Next == "" {
			return nil
		}
		cursor = page.Next
	}
}
