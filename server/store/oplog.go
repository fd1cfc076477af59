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
	return s.AppendEvents(ctx, []domain.OperationEvent{e})
}

// AppendEvents adds events, in order, in one round trip (an agent's
// progress report carries a job's steps since its last one). Each event
// is checked and encoded before any is written.
func (s *Store) AppendEvents(ctx context.Context, evs []domain.OperationEvent) error {
	args := make([]*redis.XAddArgs, 0, len(evs))
	for _, e := range evs {
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
		args = append(args, &redis.XAddArgs{Stream: s.logKey(e.DeviceID), MaxLen: s.oplog, Approx: true, Values: []string{"e", string(b)}})
	}
	var err error
	if len(args) == 1 {
		err = s.rdb.XAdd(ctx, args[0]).Err()
	} else if len(args) > 1 {
		_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, a := range args {
				p.XAdd(ctx, a)
			}
			return nil
		})
	}
	if err != nil {
		return fmt.Errorf("store: append %d event(s) for %s: %w", len(evs), evs[0].DeviceID, err)
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
