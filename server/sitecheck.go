package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// ErrRedisLostData means Redis no longer holds the site this server's
// data_dir says was initialised there: it restarted without persistence,
// was flushed, or is a different Redis. Running on would serve an empty
// site (no tokens, no certificates, a new CA), so the server refuses.
var ErrRedisLostData = errors.New("redis lost the site's data")

// ErrSharedDatabase means another site uses this Redis database.
var ErrSharedDatabase = errors.New("another site uses this redis database")

// siteCheckEvery is how often a running server checks the site marker,
// so that a Redis restarted empty under it is noticed in seconds.
const siteCheckEvery = 2 * time.Second

// siteState is what data_dir remembers of the site: that it was
// initialised, in which Redis, and when.
type siteState struct {
	SiteID      string    `json:"site_id"`
	Redis       string    `json:"redis"`
	Initialised time.Time `json:"initialised"`
}

func (s *Server) siteStatePath() string { return filepath.Join(s.cfg.DataDir, "site.json") }

func (s *Server) redisName() string {
	return fmt.Sprintf("%s db %d key_prefix %s", strings.Join(s.cfg.Redis.Addresses(), ","), s.cfg.Redis.DB, s.cfg.Redis.KeyPrefix)
}

// checkSite runs before anything is written to Redis. A Redis with no
// site marker is a new site unless data_dir remembers one: then Redis
// lost its data and the server refuses to start. It also refuses a
// database another site already uses (asynq's keys have no prefix).
func (s *Server) checkSite(ctx context.Context) error {
	if len(s.cfg.Redis.Addresses()) == 0 {
		return nil // the embedded Redis is empty at every start by design
	}
	var local *siteState
	switch b, err := os.ReadFile(s.siteStatePath()); {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("server: read site state: %w", err)
	default:
		local = &siteState{}
		if err := json.Unmarshal(b, local); err != nil || local.SiteID == "" {
			return fmt.Errorf("server: site state %s is damaged (%v); restore it, or delete it to adopt the site in Redis", s.siteStatePath(), err)
		}
	}
	id, err := s.store.SiteID(ctx)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	switch {
	case id == "" && local != nil:
		return s.lostData(local)
	case local != nil && id != local.SiteID:
		return fmt.Errorf("server: redis (%s) holds site %s, but data_dir %s belongs to site %s: check redis.addr, redis.db and redis.key_prefix",
			s.redisName(), id, s.cfg.DataDir, local.SiteID)
	case id == "":
		if id, err = s.store.InitSite(ctx, newSiteID()); err != nil {
			return fmt.Errorf("server: %w", err)
		}
		s.log.Info().Str("site", id).Str("redis", s.redisName()).Msg("site initialised")
	}
	if err := s.claimDatabase(ctx, id); err != nil {
		return err
	}
	if local == nil {
		local = &siteState{SiteID: id, Redis: s.redisName(), Initialised: time.Now().UTC()}
		b, _ := json.MarshalIndent(local, "", "  ")
		if err := os.WriteFile(s.siteStatePath(), append(b, '\n'), 0o600); err != nil {
			return fmt.Errorf("server: write site state: %w", err)
		}
	}
	s.site = local
	return nil
}

func (s *Server) claimDatabase(ctx context.Context, id string) error {
	others, err := s.store.ClaimDatabase(ctx, id)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if len(others) == 0 {
		return nil
	}
	var list []string
	for _, p := range slices.Sorted(maps.Keys(others)) {
		list = append(list, fmt.Sprintf("key_prefix %s (site %s)", p, others[p]))
	}
	return fmt.Errorf("server: redis db %d is already used by %s: %w; asynq's phase-1 queues cannot be "+
		"separated by key prefix, so the sites would run each other's jobs. Give each site its own redis.db "+
		"(0-15; on Redis Cluster, its own cluster), or, if that site is gone for good, remove it with "+
		"redis-cli HDEL amtops-sites <its key_prefix>", s.cfg.Redis.DB, strings.Join(list, ", "), ErrSharedDatabase)
}

func (s *Server) lostData(local *siteState) error {
	return fmt.Errorf("server: %w: redis (%s) has no site marker %s, but data_dir %s records that site %s was initialised "+
		"there on %s. Redis restarted without persistence, was flushed, or is not the site's Redis: every admin token, "+
		"certificate record and the CA are gone. Redis needs persistence (appendonly yes, or RDB snapshots with save). "+
		"Restore Redis from a backup and start again; to start a new, empty site on purpose, delete %s",
		ErrRedisLostData, s.redisName(), s.store.SiteMarkerKey(), s.cfg.DataDir, local.SiteID,
		local.Initialised.Format(time.DateOnly), s.siteStatePath())
}

// watchSite checks the site marker until ctx ends and returns
// ErrRedisLostData, stopping the server, when it disappears. Errors
// reaching Redis are not a loss: they are what /healthz reports.
func (s *Server) watchSite(ctx context.Context) error {
	if s.site == nil {
		return nil
	}
	t := time.NewTicker(siteCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		id, err := s.store.SiteID(ctx)
		if err != nil || id == s.site.SiteID {
			continue
		}
		s.health.Shutdown()
		if id == "" {
			err = s.lostData(s.site)
		} else {
			err = fmt.Errorf("server: %w: the site marker changed from %s to %s", ErrRedisLostData, s.site.SiteID, id)
		}
		s.log.Error().Err(err).Str("redis", s.redisName()).Msg("redis lost the site's data; stopping")
		return err
	}
}

func newSiteID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
