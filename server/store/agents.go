package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/amtops/amtops/internal/domain"
)

func (s *Store) agentKey(id string) string { return s.key("{agent}", "a", id) }
func (s *Store) agentAllKey() string       { return s.key("{agent}", "all") }
func (s *Store) agentHBKey() string        { return s.key("{agent}", "hb") }
func (s *Store) agentLoadKey() string      { return s.key("{agent}", "load") }
func (s *Store) agentHelloKey() string     { return s.key("{agent}", "hellos") }

// tokenKey stores an enrollment token under its SHA-256, so that a dump of
// Redis does not hand out usable tokens.
func (s *Store) tokenKey(token string) string {
	sum := sha256.Sum256([]byte(token))
	return s.key("{agent}", "tok", hex.EncodeToString(sum[:]))
}

// PutAgent creates or replaces an agent record.
func (s *Store) PutAgent(ctx context.Context, a domain.Agent) error {
	if a.ID == "" {
		return fmt.Errorf("store: put agent: %w", domain.InvalidField("agent.id", "", "must not be empty"))
	}
	for i, p := range a.Subnets {
		if !p.IsValid() {
			return fmt.Errorf("store: put agent %s: %w", a.ID, domain.InvalidField("agent.subnets", p.String(), "invalid prefix"))
		}
		a.Subnets[i] = p.Masked()
	}
	if a.EnrolledAt.IsZero() {
		a.EnrolledAt = s.now().UTC()
	}
	b, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("store: encode agent %s: %w", a.ID, err)
	}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, s.agentKey(a.ID), b, 0)
		p.ZAdd(ctx, s.agentAllKey(), redis.Z{Score: 0, Member: a.ID})
		if !a.LastHeartbeat.IsZero() {
			p.HSet(ctx, s.agentHBKey(), a.ID, ms(a.LastHeartbeat))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: put agent %s: %w", a.ID, err)
	}
	return nil
}

// GetAgent returns an agent with its latest heartbeat.
func (s *Store) GetAgent(ctx context.Context, id string) (domain.Agent, error) {
	var get *redis.StringCmd
	var hb, load, hellos *redis.StringCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		get = p.Get(ctx, s.agentKey(id))
		hb = p.HGet(ctx, s.agentHBKey(), id)
		load = p.HGet(ctx, s.agentLoadKey(), id)
		hellos = p.HGet(ctx, s.agentHelloKey(), id)
		return nil
	})
	if errors.Is(get.Err(), redis.Nil) {
		return domain.Agent{}, fmt.Errorf("store: get agent %s: %w", id, domain.ErrNotFound)
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		return domain.Agent{}, fmt.Errorf("store: get agent %s: %w", id, err)
	}
	var a domain.Agent
	if err := json.Unmarshal([]byte(get.Val()), &a); err != nil {
		return domain.Agent{}, fmt.Errorf("store: decode agent %s: %w", id, err)
	}
	if v, err := strconv.ParseInt(hb.Val(), 10, 64); err == nil {
		a.LastHeartbeat = time.UnixMilli(v).UTC()
	}
	var l domain.AgentLoad
	if in, c, ok := strings.Cut(load.Val(), "/"); ok {
		// As servers before versions were reported wrote it.
		l.InFlight, _ = strconv.Atoi(in)
		l.Capacity, _ = strconv.Atoi(c)
	} else if load.Val() != "" {
		_ = json.Unmarshal([]byte(load.Val()), &l)
	}
	a.InFlight, a.Capacity, a.Address = l.InFlight, l.Capacity, l.Address
	if l.Version != "" {
		a.Version = l.Version
	}
	a.Hellos, _ = strconv.ParseInt(hellos.Val(), 10, 64)
	return a, nil
}

// ListAgents returns every agent in ID order.
func (s *Store) ListAgents(ctx context.Context) ([]domain.Agent, error) {
	ids, err := s.rdb.ZRange(ctx, s.agentAllKey(), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("store: list agents: %w", err)
	}
	out := make([]domain.Agent, 0, len(ids))
	for _, id := range ids {
		a, err := s.GetAgent(ctx, id)
		if errors.Is(err, domain.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("store: list agents: %w", err)
		}
		out = append(out, a)
	}
	return out, nil
}

// DeleteAgent forgets an agent; its certificate should be revoked too.
func (s *Store) DeleteAgent(ctx context.Context, id string) error {
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, s.agentKey(id))
		p.ZRem(ctx, s.agentAllKey(), id)
		p.HDel(ctx, s.agentHBKey(), id)
		p.HDel(ctx, s.agentLoadKey(), id)
		p.HDel(ctx, s.agentHelloKey(), id)
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: delete agent %s: %w", id, err)
	}
	return nil
}

// heartbeatScript records a heartbeat only for a known agent.
var heartbeatScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
`)

// Heartbeat records that the agent was seen at at (the store's clock when
// zero). An unknown agent is domain.ErrNotFound.
func (s *Store) Heartbeat(ctx context.Context, agentID string, at time.Time) error {
	if at.IsZero() {
		at = s.now()
	}
	n, err := heartbeatScript.Run(ctx, s.rdb, []string{s.agentKey(agentID), s.agentHBKey()}, agentID, ms(at)).Int()
	if err != nil {
		return fmt.Errorf("store: heartbeat %s: %w", agentID, err)
	}
	if n == 0 {
		return fmt.Errorf("store: heartbeat %s: %w", agentID, domain.ErrNotFound)
	}
	return nil
}

// RecordLoad keeps what an agent's heartbeat told: jobs in flight and
// capacity, its version and the address it came from.
func (s *Store) RecordLoad(ctx context.Context, agentID string, l domain.AgentLoad) error {
	b, err := json.Marshal(l)
	if err != nil {
		return fmt.Errorf("store: record load %s: %w", agentID, err)
	}
	if err := s.rdb.HSet(ctx, s.agentLoadKey(), agentID, b).Err(); err != nil {
		return fmt.Errorf("store: record load %s: %w", agentID, err)
	}
	return nil
}

// CountHellos adds n to the Hellos an agent has reported.
func (s *Store) CountHellos(ctx context.Context, agentID string, n int) error {
	if err := s.rdb.HIncrBy(ctx, s.agentHelloKey(), agentID, int64(n)).Err(); err != nil {
		return fmt.Errorf("store: count hellos of %s: %w", agentID, err)
	}
	return nil
}

// CreateEnrollmentToken stores a grant under a fresh random token valid
// for ttl and returns the token. Only its hash is stored.
func (s *Store) CreateEnrollmentToken(ctx context.Context, e domain.Enrollment, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		return "", fmt.Errorf("store: create enrollment token: %w", domain.InvalidField("ttl", ttl.String(), "must be positive"))
	}
	if len(e.Subnets) == 0 {
		return "", fmt.Errorf("store: create enrollment token: %w", domain.InvalidField("enrollment.subnets", "", "at least one subnet is required"))
	}
	for i, p := range e.Subnets {
		if !p.IsValid() {
			return "", fmt.Errorf("store: create enrollment token: %w", domain.InvalidField("enrollment.subnets", p.String(), "invalid prefix"))
		}
		e.Subnets[i] = p.Masked()
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("store: create enrollment token: %w", err)
	}
	token := base64.RawURLEncoding.EncodeToString(raw)
	now := s.now().UTC()
	e.CreatedAt, e.ExpiresAt = now, now.Add(ttl)
	b, err := json.Marshal(e)
	if err != nil {
		return "", fmt.Errorf("store: encode enrollment: %w", err)
	}
	if err := s.rdb.Set(ctx, s.tokenKey(token), b, ttl).Err(); err != nil {
		return "", fmt.Errorf("store: create enrollment token: %w", err)
	}
	return token, nil
}

// ConsumeEnrollmentToken redeems a token exactly once (GETDEL is atomic):
// an unknown, expired or already used token is domain.ErrUnauthorized.
func (s *Store) ConsumeEnrollmentToken(ctx context.Context, token string) (domain.Enrollment, error) {
	b, err := s.rdb.GetDel(ctx, s.tokenKey(token)).Bytes()
	if errors.Is(err, redis.Nil) {
		return domain.Enrollment{}, fmt.Errorf("store: enrollment token unknown, expired or already used: %w", domain.ErrUnauthorized)
	}
	if err != nil {
		return domain.Enrollment{}, fmt.Errorf("store: consume enrollment token: %w", err)
	}
	var e domain.Enrollment
	if err := json.Unmarshal(b, &e); err != nil {
		return domain.Enrollment{}, fmt.Errorf("store: decode enrollment: %w", err)
	}
	// Belt and braces: the TTL should already have removed it.
	if !e.ExpiresAt.IsZero() && s.now().After(e.ExpiresAt) {
		return domain.Enrollment{}, fmt.Errorf("store: enrollment token expired: %w", domain.ErrUnauthorized)
	}
	return e, nil
}
