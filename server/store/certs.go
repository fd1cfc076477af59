package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/amtops/amtops/internal/domain"
)

func (s *Store) certKey(serial string) string { return s.key("{cert}", "s", serial) }
func (s *Store) certDevKey(id string) string  { return s.key("{cert}", "dev", id) }

// certAllKey indexes every record by issue time (ms), so the site's
// certificates are listed newest first without reading every device.
func (s *Store) certAllKey() string { return s.key("{cert}", "all") }

// PutCertificate creates or replaces a certificate record and keeps the
// by-device index in step (also when the record moves to another device).
func (s *Store) PutCertificate(ctx context.Context, rec domain.CertificateRecord) error {
	switch {
	case rec.Serial == "":
		return fmt.Errorf("store: put certificate: %w", domain.InvalidField("certificate.serial", "", "must not be empty"))
	case rec.DeviceID == "":
		return fmt.Errorf("store: put certificate %s: %w", rec.Serial, domain.InvalidField("certificate.device_id", "", "must not be empty"))
	}
	_, err := s.mutateCert(ctx, rec.Serial, func(*domain.CertificateRecord) (*domain.CertificateRecord, error) {
		return &rec, nil
	})
	if err != nil {
		return fmt.Errorf("store: put certificate %s: %w", rec.Serial, err)
	}
	return nil
}

// CertificateBySerial returns one record or domain.ErrNotFound.
func (s *Store) CertificateBySerial(ctx context.Context, serial string) (domain.CertificateRecord, error) {
	b, err := s.rdb.Get(ctx, s.certKey(serial)).Bytes()
	if errors.Is(err, redis.Nil) {
		return domain.CertificateRecord{}, fmt.Errorf("store: certificate %s: %w", serial, domain.ErrNotFound)
	}
	if err != nil {
		return domain.CertificateRecord{}, fmt.Errorf("store: certificate %s: %w", serial, err)
	}
	var rec domain.CertificateRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return domain.CertificateRecord{}, fmt.Errorf("store: decode certificate %s: %w", serial, err)
	}
	return rec, nil
}

// CertificatesByDevice returns every record for a device, all purposes and
// statuses, oldest first (S1 filters for live server-auth ones).
func (s *Store) CertificatesByDevice(ctx context.Context, deviceID string) ([]domain.CertificateRecord, error) {
	serials, err := s.rdb.SMembers(ctx, s.certDevKey(deviceID)).Result()
	if err != nil {
		return nil, fmt.Errorf("store: certificates of %s: %w", deviceID, err)
	}
	out := make([]domain.CertificateRecord, 0, len(serials))
	for _, sn := range serials {
		rec, err := s.CertificateBySerial(ctx, sn)
		if errors.Is(err, domain.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("store: certificates of %s: %w", deviceID, err)
		}
		out = append(out, rec)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].NotBefore.Equal(out[j].NotBefore) {
			return out[i].NotBefore.Before(out[j].NotBefore)
		}
		return out[i].Serial < out[j].Serial
	})
	return out, nil
}

// ListCertificates returns the records keep accepts (nil: all), newest
// issue first, at most limit of them (0: all).
func (s *Store) ListCertificates(ctx context.Context, keep func(domain.CertificateRecord) bool, limit int) ([]domain.CertificateRecord, error) {
	var out []domain.CertificateRecord
	const page = 500
	for start := int64(0); ; start += page {
		serials, err := s.rdb.ZRevRange(ctx, s.certAllKey(), start, start+page-1).Result()
		if err != nil {
			return nil, fmt.Errorf("store: list certificates: %w", err)
		}
		for _, sn := range serials {
			rec, err := s.CertificateBySerial(ctx, sn)
			if errors.Is(err, domain.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("store: list certificates: %w", err)
			}
			if keep == nil || keep(rec) {
				out = append(out, rec)
			}
			if limit > 0 && len(out) >= limit {
				return out, nil
			}
		}
		if len(serials) < page {
			return out, nil
		}
	}
}

// UpdateCertificateStatus sets a record's status; for CertRevoked it also
// records the reason and RevokedAt (at, or the store's clock when zero).
func (s *Store) UpdateCertificateStatus(ctx context.Context, serial string, status domain.CertStatus, reason domain.RevocationReason, at time.Time) (domain.CertificateRecord, error) {
	switch status {
	case domain.CertRequested, domain.CertNotIssued, domain.CertIssued, domain.CertInstalled, domain.CertRevoked:
	default:
		return domain.CertificateRecord{}, fmt.Errorf("store: update certificate %s: %w", serial, domain.InvalidField("certificate.status", string(status), "unknown status"))
	}
	if at.IsZero() {
		at = s.now()
	}
	rec, err := s.mutateCert(ctx, serial, func(cur *domain.CertificateRecord) (*domain.CertificateRecord, error) {
		if cur == nil {
			return nil, domain.ErrNotFound
		}
		cur.Status = status
		if status == domain.CertRevoked {
			cur.Reason, cur.RevokedAt = reason, at.UTC()
		}
		return cur, nil
	})
	if err != nil {
		return domain.CertificateRecord{}, fmt.Errorf("store: update certificate %s: %w", serial, err)
	}
	return rec, nil
}

func (s *Store) mutateCert(ctx context.Context, serial string, fn func(*domain.CertificateRecord) (*domain.CertificateRecord, error)) (domain.CertificateRecord, error) {
	key := s.certKey(serial)
	var out domain.CertificateRecord
	err := s.watchRetry(ctx, func(tx *redis.Tx) error {
		var old *domain.CertificateRecord
		b, err := tx.Get(ctx, key).Bytes()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			return err
		default:
			old = new(domain.CertificateRecord)
			if err := json.Unmarshal(b, old); err != nil {
				return fmt.Errorf("decode: %w", err)
			}
		}
		var cur *domain.CertificateRecord
		if old != nil {
			c := *old
			cur = &c
		}
		next, err := fn(cur)
		if err != nil {
			return err
		}
		next.UpdatedAt = s.now().UTC()
		enc, err := json.Marshal(next)
		if err != nil {
			return fmt.Errorf("encode: %w", err)
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			if old != nil && old.DeviceID != next.DeviceID {
				p.SRem(ctx, s.certDevKey(old.DeviceID), serial)
			}
			p.Set(ctx, key, enc, 0)
			p.SAdd(ctx, s.certDevKey(next.DeviceID), serial)
			p.ZAdd(ctx, s.certAllKey(), redis.Z{Score: float64(next.NotBefore.UnixMilli()), Member: serial})
			return nil
		})
		if err == nil {
			out = *next
		}
		return err
	}, key)
	return out, err
}
