package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/amtops/amtops/internal/domain"
)

// Admin certificates live beside the tokens under the {admin} hash tag:
// a hash serial → record JSON, and per name a sorted set of serials
// scored by expiry, for revoking by name and pruning expired records.
func (s *Store) adminCertBySerialKey() string { return s.key("{admin}", "cert", "serial") }
func (s *Store) adminCertsOfNameKey(name string) string {
	return s.key("{admin}", "cert", "name", name)
}

// recordAdminCertScript drops the name's expired records (score below
// ARGV[4]), then stores the new one.
var recordAdminCertScript = redis.NewScript(`
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[4])
for _, s in ipairs(old) do
  redis.call('HDEL', KEYS[1], s)
  redis.call('ZREM', KEYS[2], s)
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
`)

// RecordAdminCertificate records an issued administrator certificate, so
// that it authenticates until it expires or its name is revoked.
func (s *Store) RecordAdminCertificate(ctx context.Context, c domain.AdminCert) error {
	if err := checkAdminToken(c.Name, c.Role); err != nil {
		return fmt.Errorf("store: record admin certificate: %w", err)
	}
	if c.Serial == "" {
		return fmt.Errorf("store: record admin certificate %s: %w", c.Name, domain.InvalidField("serial", "", "must not be empty"))
	}
	if c.CreatedAt.IsZero() {
		c.CreatedAt = s.now().UTC()
	}
	c.NotAfter = c.NotAfter.UTC()
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("store: encode admin certificate %s: %w", c.Name, err)
	}
	err = recordAdminCertScript.Run(ctx, s.rdb, []string{s.adminCertBySerialKey(), s.adminCertsOfNameKey(c.Name)},
		c.Serial, string(b), strconv.FormatInt(c.NotAfter.Unix(), 10), strconv.FormatInt(s.now().Unix(), 10)).Err()
	if err != nil {
		return fmt.Errorf("store: record admin certificate %s: %w", c.Name, err)
	}
	return nil
}

// AuthenticateAdminCertificate returns the record of a presented
// certificate, which the caller has verified against the CA and which
// names name and role. A serial never recorded, revoked, or recorded for
// another name or role is domain.ErrUnauthorized.
func (s *Store) AuthenticateAdminCertificate(ctx context.Context, serial, name string, role domain.AdminRole) (domain.AdminCert, error) {
	unknown := fmt.Errorf("store: admin certificate unknown or revoked: %w", domain.ErrUnauthorized)
	b, err := s.rdb.HGet(ctx, s.adminCertBySerialKey(), serial).Bytes()
	if errors.Is(err, redis.Nil) {
		return domain.AdminCert{}, unknown
	}
	if err != nil {
		return domain.AdminCert{}, fmt.Errorf("store: authenticate admin certificate: %w", err)
	}
	var rec domain.AdminCert
	if err := json.Unmarshal(b, &rec); err != nil {
		return domain.AdminCert{}, fmt.Errorf("store: decode admin certificate %s: %w", serial, err)
	}
	if rec.Name != name || rec.Role != role {
		return domain.AdminCert{}, unknown
	}
	return rec, nil
}

// ListAdminCertificates returns the recorded certificates of name, by
// expiry.
func (s *Store) ListAdminCertificates(ctx context.Context, name string) ([]domain.AdminCert, error) {
	serials, err := s.rdb.ZRange(ctx, s.adminCertsOfNameKey(name), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("store: list admin certificates %s: %w", name, err)
	}
	if len(serials) == 0 {
		return nil, nil
	}
	vals, err := s.rdb.HMGet(ctx, s.adminCertBySerialKey(), serials...).Result()
	if err != nil {
		return nil, fmt.Errorf("store: list admin certificates %s: %w", name, err)
	}
	out := make([]domain.AdminCert, 0, len(vals))
	for i, v := range vals {
		str, ok := v.(string)
		if !ok {
			continue // revoked between the two reads
		}
		var rec domain.AdminCert
		if err := json.Unmarshal([]byte(str), &rec); err != nil {
			return nil, fmt.Errorf("store: decode admin certificate %s: %w", serials[i], err)
		}
		out = append(out, rec)
	}
	return out, nil
}
