package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/amtops/amtops/internal/domain"
)

// Secrets (CA keys, device private keys, AMT admin passwords, Kerberos
// keys) are stored only sealed, with the Redis key as associated data, so a
// blob copied under another name does not open.
func (s *Store) secretKey(name string) string { return s.key("secret", name) }

func (s *Store) seal(key string, plaintext []byte) ([]byte, error) {
	if s.sealer == nil {
		return nil, errors.New("no sealer configured")
	}
	return s.sealer.Seal(plaintext, []byte(key))
}

func (s *Store) open(key string, blob []byte) ([]byte, error) {
	if s.sealer == nil {
		return nil, errors.New("no sealer configured")
	}
	return s.sealer.Open(blob, []byte(key))
}

func checkSecretName(name string) error {
	if name == "" {
		return domain.InvalidField("secret.name", "", "must not be empty")
	}
	return nil
}

// PutSecret seals and stores a secret, replacing any previous value.
func (s *Store) PutSecret(ctx context.Context, name string, plaintext []byte) error {
	if err := checkSecretName(name); err != nil {
		return fmt.Errorf("store: put secret: %w", err)
	}
	key := s.secretKey(name)
	blob, err := s.seal(key, plaintext)
	if err != nil {
		return fmt.Errorf("store: seal secret %s: %w", name, err)
	}
	if err := s.rdb.Set(ctx, key, blob, 0).Err(); err != nil {
		return fmt.Errorf("store: put secret %s: %w", name, err)
	}
	return nil
}

// CreateSecret stores a secret only if the name is free, so that two
// replicas generating the same key at first start agree on one; created is
// false when another value was already there (read it with GetSecret).
func (s *Store) CreateSecret(ctx context.Context, name string, plaintext []byte) (created bool, err error) {
	if err := checkSecretName(name); err != nil {
		return false, fmt.Errorf("store: create secret: %w", err)
	}
	key := s.secretKey(name)
	blob, err := s.seal(key, plaintext)
	if err != nil {
		return false, fmt.Errorf("store: seal secret %s: %w", name, err)
	}
	ok, err := s.rdb.SetNX(ctx, key, blob, 0).Result()
	if err != nil {
		return false, fmt.Errorf("store: create secret %s: %w", name, err)
	}
	return ok, nil
}

// GetSecret opens a stored secret; a missing one is domain.ErrNotFound.
func (s *Store) GetSecret(ctx context.Context, name string) ([]byte, error) {
	key := s.secretKey(name)
	blob, err := s.rdb.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("store: get secret %s: %w", name, domain.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store: get secret %s: %w", name, err)
	}
	pt, err := s.open(key, blob)
	if err != nil {
		return nil, fmt.Errorf("store: open secret %s: %w", name, err)
	}
	return pt, nil
}

// DeleteSecret removes a secret; deleting a missing one is not an error.
func (s *Store) DeleteSecret(ctx context.Context, name string) error {
	if err := s.rdb.Del(ctx, s.secretKey(name)).Err(); err != nil {
		return fmt.Errorf("store: delete secret %s: %w", name, err)
	}
	return nil
}
