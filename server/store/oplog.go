package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/amtops/amtops/internal/domain"
)

// Each device's operations log (S11) is its own stream, trimmed roughly to
// OplogCap entries, so one busy device cannot crowd out the others.
func (s *Store) logKey(deviceID string) string { return s.key("log", "{"+deviceID+"}") }

// AppendEvent adds one event to a device's operations log. A zero Time is
// set from the store's clock.
func (s *Store) AppendEvent(ctx context.Context, e domain.OperationEvent) error {
	if e.DeviceID == "" {
		return fmt.Errorf("store: append event: %w", domain.InvalidField("event.device_id", "", "must not be empty"))
	}
	if e.Time.IsZero() {
		e.Time = s.now().UTC()
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("store: encode event for %s: %w", e.DeviceID, err)
	}
	err = s.rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: s.logKey(e.DeviceID),
		MaxLen: s.oplog,
		Approx: true,
		Values: []string{"e", string(b)},
	}).Err()
	if err != nil {
		return fmt.Errorf("store: append event for %s: %w", e.DeviceID, err)
	}
	return nil
}

// Events returns up to limit of a device's newest events, newest last.
// limit <= 0 means the whole retained log.
func (s *Store) Events(ctx context.Context, deviceID string, limit int) ([]domain.OperationEvent, error) {
	var msgs []redis.XMessage
	var err error
	if limit > 0 {
		msgs, err = s.rdb.XRevRangeN(ctx, s.logKey(deviceID), "+", "-", int64(limit)).Result()
	} else {
		msgs, err = s.rdb.XRevRange(ctx, s.logKey(deviceID), "+", "-").Result()
	}
	if err != nil {
		return nil, fmt.Errorf("store: events of %s: %w", deviceID, err)
	}
	out := make([]domain.OperationEvent, 0, len(msgs))
	for _, m := range msgs {
		raw, _ := m.Values["e"].(string)
		var e domain.OperationEvent
		if err := json.Unmarshal([]byte(raw), &e); err != nil {
			return nil, fmt.Errorf("store: decode event %s of %s: %w", m.ID, deviceID, err)
		}
		out = append(out, e)
	}
	slices.Reverse(out)
	return out, nil
}
