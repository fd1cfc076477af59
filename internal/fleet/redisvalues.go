package fleet

import (
	"bytes"
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// RedisValues reads every key of rdb and its value, whatever its type,
// as bytes to search for secrets (asynq's keys included): the key's name
// first, then the value.
func RedisValues(ctx context.Context, rdb *redis.Client) (map[string][]byte, error) {
	out := map[string][]byte{}
	iter := rdb.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		var b bytes.Buffer
		b.WriteString(k + "\n")
		typ, err := rdb.Type(ctx, k).Result()
		if err != nil {
			return nil, fmt.Errorf("type of %s: %w", k, err)
		}
		switch typ {
		case "string":
			v, _ := rdb.Get(ctx, k).Bytes()
			b.Write(v)
		case "hash":
			for f, v := range rdb.HGetAll(ctx, k).Val() {
				b.WriteString(f + "=" + v + "\n")
			}
		case "list":
			for _, v := range rdb.LRange(ctx, k, 0, -1).Val() {
				b.WriteString(v + "\n")
			}
		case "set":
			for _, v := range rdb.SMembers(ctx, k).Val() {
				b.WriteString(v + "\n")
			}
		case "zset":
			for _, z := range rdb.ZRangeWithScores(ctx, k, 0, -1).Val() {
				fmt.Fprintf(&b, "%v %v\n", z.Member, z.Score)
			}
		case "stream":
			for _, m := range rdb.XRange(ctx, k, "-", "+").Val() {
				fmt.Fprintf(&b, "%s %v\n", m.ID, m.Values)
			}
		case "none": // expired meanwhile
		default:
			return nil, fmt.Errorf("redis key %s of type %s not read", k, typ)
		}
		out[k] = b.Bytes()
	}
	return out, iter.Err()
}
