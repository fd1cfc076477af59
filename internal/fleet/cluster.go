package fleet

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// clusterMasters is the size of the Redis Cluster the fleet starts.
const clusterMasters = 3

// startCluster runs three redis-server masters with cluster mode on,
// joins them with redis-cli --cluster create (the slots split evenly, no
// replicas) and waits until every node reports the cluster ok. The site
// is then configured with all three as seeds.
func (f *Fleet) startCluster(ctx context.Context, bin string) error {
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return fmt.Errorf("fleet: redis cluster needs redis-cli: %w", ErrNoRedis)
	}
	for i := range clusterMasters {
		addr, err := f.listenAddr()
		if err != nil {
			return err
		}
		dir := filepath.Join(f.dir, fmt.Sprintf("redis-%d", i))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("fleet: %w", err)
		}
		// The bus gets a free port of its own (port+10000 may be taken or
		// out of range), and each node announces its own loopback address:
		// its outgoing connections come from 127.0.0.1, where the others
		// would otherwise look for it.
		bus, err := f.listenAddr()
		if err != nil {
			return err
		}
		host, _, _ := net.SplitHostPort(addr)
		_, busPort, _ := net.SplitHostPort(bus)
		c, err := f.startRedisNode(ctx, bin, fmt.Sprintf("redis-%d", i), addr, dir, f.cfg.AOF,
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf"), "--cluster-node-timeout", "5000",
			"--cluster-port", busPort, "--cluster-announce-ip", host)
		if err != nil {
			return err
		}
		f.RedisAddrs, f.nodes = append(f.RedisAddrs, addr), append(f.nodes, c)
	}
	f.RedisAddr = f.RedisAddrs[0]
	args := append([]string{"--cluster", "create"}, f.RedisAddrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("fleet: redis-cli --cluster create: %w: %s", err, out)
	}
	return poll(ctx, 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		for _, n := range f.nodes {
			info, err := n.ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				return false, nil
			}
		}
		return true, nil
	})
}

// redisStats sums INFO commandstats over every Redis node.
func (f *Fleet) redisStats(ctx context.Context) (CommandStats, error) {
	nodes := f.nodes
	if len(nodes) == 0 {
		nodes = []*redis.Client{f.rdb}
	}
	sum := CommandStats{}
	for _, n := range nodes {
		cs, err := commandStats(ctx, n)
		if err != nil {
			return nil, err
		}
		for k, s := range cs {
			t := sum[k]
			t.Calls, t.Usec = t.Calls+s.Calls, t.Usec+s.Usec
			sum[k] = t
		}
	}
	return sum, nil
}

// RedisKeysPerNode is DBSIZE of every Redis node (one without a cluster).
func (f *Fleet) RedisKeysPerNode(ctx context.Context) ([]int64, error) {
	nodes := f.nodes
	if len(nodes) == 0 {
		nodes = []*redis.Client{f.rdb}
	}
	out := make([]int64, 0, len(nodes))
	for _, n := range nodes {
		k, err := n.DBSize(ctx).Result()
		if err != nil {
			return nil, fmt.Errorf("fleet: dbsize: %w", err)
		}
		out = append(out, k)
	}
	return out, nil
}
