package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/amtops/amtops/internal/domain"
)

// adminTokenPrefix marks amtops admin tokens so that secret scanners and
// people can tell them apart from other credentials.
const adminTokenPrefix = "amtadm_"

// Admin tokens live under one hash tag: a hash name → record JSON, and a
// hash token-hash → name for lookups.
func (s *Store) adminByNameKey() string { return s.key("{admin}", "tok", "name") }
func (s *Store) adminByHashKey() string { return s.key("{admin}", "tok", "hash") }

func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

func checkAdminToken(name string, role domain.AdminRole) error {
	if name == "" || len(name) > 64 {
		return domain.InvalidField("token.name", name, "must be 1 to 64 characters")
	}
	for _, r := range name {
		if !(r == '-' || r == '_' || r == '.' || r == '@' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return domain.InvalidField("token.name", name, "only letters, digits, '-', '_', '.' and '@' are allowed")
		}
	}
	if !role.Valid() {
		return domain.InvalidField("token.role", string(role), "must be read or operate")
	}
	return nil
}

// createAdminTokenScript stores a token record unless the name is taken,
// or (ARGV[4] == "1") unless any token exists at all. Returns 1 when
// stored, 0 when the name is taken, 2 when tokens already exist.
var createAdminTokenScript = redis.NewScript(`
if ARGV[4] == '1' and redis.call('HLEN', KEYS[1]) > 0 then return 2 end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
return 1
`)

// CreateAdminToken makes a fresh random token (32 bytes) for name with
// role and returns it; only its hash is kept. A name already in use is
// domain.ErrConflict.
func (s *Store) CreateAdminToken(ctx context.Context, name string, role domain.AdminRole) (string, domain.AdminToken, error) {
	tok, rec, res, err := s.createAdminToken(ctx, name, role, false)
	if err != nil {
		return "", domain.AdminToken{}, err
	}
	if res == 0 {
		return "", domain.AdminToken{}, fmt.Errorf("store: create admin token: name %q already in use: %w", name, domain.ErrConflict)
	}
	return tok, rec, nil
}

// CreateFirstAdminToken creates a token only when no admin token exists
// at all, atomically, so that replicas starting together make one.
// created is false (and the token empty) when tokens already exist.
func (s *Store) CreateFirstAdminToken(ctx context.Context, name string, role domain.AdminRole) (token string, created bool, err error) {
	tok, _, res, err := s.createAdminToken(ctx, name, role, true)
	if err != nil {
		return "", false, err
	}
	return tok, res == 1, nil
}

func (s *Store) createAdminToken(ctx context.Context, name string, role domain.AdminRole, onlyFirst bool) (string, domain.AdminToken, int, error) {
	if err := checkAdminToken(name, role); err != nil {
		return "", domain.AdminToken{}, 0, fmt.Errorf("store: create admin token: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", domain.AdminToken{}, 0, fmt.Errorf("store: create admin token: %w", err)
	}
	token := adminTokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	rec := domain.AdminToken{Name: name, Role: role, Hash: hashToken(token), CreatedAt: s.now().UTC()}
	b, err := json.Marshal(rec)
	if err != nil {
		return "", domain.AdminToken{}, 0, fmt.Errorf("store: encode admin token %s: %w", name, err)
	}
	first := "0"
	if onlyFirst {
		first = "1"
	}
	res, err := createAdminTokenScript.Run(ctx, s.rdb, []string{s.adminByNameKey(), s.adminByHashKey()},
		name, rec.Hash, string(b), first).Int()
	if err != nil {
		return "", domain.AdminToken{}, 0, fmt.Errorf("store: create admin token %s: %w", name, err)
	}
	if res != 1 {
		return "", domain.AdminToken{}, res, nil
	}
	return token, rec, res, nil
}

// AuthenticateAdmin returns the record of a presented token. An unknown
// or revoked token is domain.ErrUnauthorized.
func (s *Store) AuthenticateAdmin(ctx context.Context, token string) (domain.AdminToken, error) {
	unknown := fmt.Errorf("store: admin token unknown or revoked: %w", domain.ErrUnauthorized)
	if !strings.HasPrefix(token, adminTokenPrefix) {
		return domain.AdminToken{}, unknown
	}
	h := hashToken(token)
	name, err := s.rdb.HGet(ctx, s.adminByHashKey(), h).Result()
	if errors.Is(err, redis.Nil) {
		return domain.AdminToken{}, unknown
	}
	if err != nil {
		return domain.AdminToken{}, fmt.Errorf("store: authenticate admin: %w", err)
	}
	rec, err := s.adminToken(ctx, name)
	if errors.Is(err, domain.ErrNotFound) {
		return domain.AdminToken{}, unknown
	}
	if err != nil {
		return domain.AdminToken{}, err
	}
	// The lookup above is by hash; comparing the record's hash in constant
	// time as well guards against a stale index entry naming another token.
	if subtle.ConstantTimeCompare([]byte(rec.Hash), []byte(h)) != 1 {
		return domain.AdminToken{}, unknown
	}
	return rec, nil
}

func (s *Store) adminToken(ctx context.Context, name string) (domain.AdminToken, error) {
	b, err := s.rdb.HGet(ctx, s.adminByNameKey(), name).Bytes()
	if errors.Is(err, redis.Nil) {
		return domain.AdminToken{}, fmt.Errorf("store: admin token %s: %w", name, domain.ErrNotFound)
	}
	if err != nil {
		return domain.AdminToken{}, fmt.Errorf("store: admin token %s: %w", name, err)
	}
	var rec domain.AdminToken
	if err := json.Unmarshal(b, &rec); err != nil {
		return domain.AdminToken{}, fmt.Errorf("store: decode admin token %s: %w", name, err)
	}
	return rec, nil
}

// ListAdminTokens returns every token record, by name.
func (s *Store) ListAdminTokens(ctx context.Context) ([]domain.AdminToken, error) {
	h, err := s.rdb.HGetAll(ctx, s.adminByNameKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("store: list admin tokens: %w", err)
	}
	out := make([]domain.AdminToken, 0, len(h))
	for name, v := range h {
		var rec domain.AdminToken
		if err := json.Unmarshal([]byte(v), &rec); err != nil {
			return nil, fmt.Errorf("store: decode admin token %s: %w", name, err)
		}
		out = append(out, rec)
	}
	slices.SortFunc(out, func(a, b domain.AdminToken) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// revokeAdminTokenScript removes a name's token (when ARGV[2], its hash,
// is not empty) and every certificate recorded for the name. Returns how
// many credentials it removed.
var revokeAdminTokenScript = redis.NewScript(`
local n = 0
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], ARGV[1]) then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[2])
  n = n + 1
end
for _, s in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  n = n + redis.call('HDEL', KEYS[3], s)
end
redis.call('DEL', KEYS[4])
return n
`)

// RevokeAdminToken revokes an administrator by name: its token and every
// client certificate issued to the name stop working at once. A name
// with neither is domain.ErrNotFound.
func (s *Store) RevokeAdminToken(ctx context.Context, name string) error {
	var hash string
	rec, err := s.adminToken(ctx, name)
	switch {
	case err == nil:
		hash = rec.Hash
	case !errors.Is(err, domain.ErrNotFound):
		return fmt.Errorf("store: revoke admin token: %w", err)
	}
	n, err := revokeAdminTokenScript.Run(ctx, s.rdb,
		[]string{s.adminByNameKey(), s.adminByHashKey(), s.adminCertBySerialKey(), s.adminCertsOfNameKey(name)}, name, hash).Int()
	if err != nil {
		return fmt.Errorf("store: revoke admin token %s: %w", name, err)
	}
	if n == 0 {
		return fmt.Errorf("store: revoke admin token %s: %w", name, domain.ErrNotFound)
	}
	return nil
}
