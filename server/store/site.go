package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// SitesKey is the one key outside every prefix: a hash of key prefix →
// site ID naming each site that uses this Redis database. asynq's keys
// have no prefix, so two sites on one database would share phase-1
// queues; the server refuses that (see ClaimDatabase).
const SitesKey = "amtops-sites"

// SiteMarkerKey is the key holding the site's ID, written once when the
// site is initialised. Its absence in a Redis the site has used means
// Redis lost its data.
func (s *Store) SiteMarkerKey() string { return s.key("site") }

// SiteID returns the site marker; "" when Redis has none.
func (s *Store) SiteID(ctx context.Context) (string, error) {
	id, err := s.rdb.Get(ctx, s.SiteMarkerKey()).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("store: get site marker: %w", err)
	}
	return id, nil
}

// InitSite writes the site marker id unless one exists, and returns the
// marker now stored (another replica may have won the race).
func (s *Store) InitSite(ctx context.Context, id string) (string, error) {
	if err := s.rdb.SetNX(ctx, s.SiteMarkerKey(), id, 0).Err(); err != nil {
		return "", fmt.Errorf("store: write site marker: %w", err)
	}
	return s.SiteID(ctx)
}

// ClaimDatabase records this site (prefix → id) in SitesKey and returns
// the other sites already recorded there, prefix → site ID.
func (s *Store) ClaimDatabase(ctx context.Context, id string) (map[string]string, error) {
	if err := s.rdb.HSetNX(ctx, SitesKey, s.prefix, id).Err(); err != nil {
		return nil, fmt.Errorf("store: claim database: %w", err)
	}
	all, err := s.rdb.HGetAll(ctx, SitesKey).Result()
	if err != nil {
		return nil, fmt.Errorf("store: list sites of database: %w", err)
	}
	others := map[string]string{}
	for p, other := range all {
		if p != s.prefix || other != id {
			others[p] = other
		}
	}
	return others, nil
}
