package server_test

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/amtops/amtops/agent/phase2"
	"github.com/amtops/amtops/internal/fleet"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/store"
)

// What TestNoSecretInLogsOrRedis searches for, and how it reads Redis
// and the agent's jobs while the run goes on.

// secretSet is what must appear nowhere, each under a name for messages.
type secretSet struct{ *fleet.Needles }

// jobTap records every phase-2 job the agent receives (everything the
// site hands an agent: passwords, TLS keys, Kerberos keys…) and runs it
// with the agent's real executor.
type jobTap struct {
	inner *phase2.Executor
	mu    sync.Mutex
	jobs  []*pb.Phase2Job
}

func (j *jobTap) Run(ctx context.Context, job *pb.Phase2Job, rep phase2.Reporter) phase2.Result {
	j.mu.Lock()
	j.jobs = append(j.jobs, proto.Clone(job).(*pb.Phase2Job))
	j.mu.Unlock()
	return j.inner.Run(ctx, job, rep)
}

func (j *jobTap) all() []*pb.Phase2Job {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.jobs)
}

// secretField names the fields of a job that carry a secret. The lease
// token is not one: it fences attempts, the lease queue keeps it to
// compare, and it works only with the agent certificate of its subnet.
func secretField(name string) bool {
	if name == "token" {
		return false
	}
	for _, w := range []string{"password", "private_key", "master_key", "secret", "token", "psk", "passphrase"} {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}

// addJob adds every secret field of a job, at any depth.
func (s secretSet) addJob(name string, m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		n := name + "." + string(fd.Name())
		add := func(v protoreflect.Value) {
			switch {
			case fd.Kind() == protoreflect.MessageKind:
				s.addJob(n, v.Message())
			case !secretField(string(fd.Name())):
			case fd.Kind() == protoreflect.StringKind:
				s.AddText(n, v.String())
			case fd.Kind() == protoreflect.BytesKind:
				s.AddKey(n, v.Bytes())
			}
		}
		switch {
		case fd.IsList():
			for i := 0; i < v.List().Len(); i++ {
				add(v.List().Get(i))
			}
		case fd.IsMap():
		default:
			add(v)
		}
		return true
	})
}

// sealedSeen opens every sealed secret that appears in Redis.
// Values come and go too (asynq's tasks, lease payloads): every
// distinct value of every key is kept.
type sealedSeen struct {
	st     *store.Store
	rdb    *redis.Client
	mu     sync.Mutex
	m      map[string][]byte
	values map[string][]byte // key -> its distinct values, one after another
	seen   map[string]bool   // key + value
	err    error
}

func (s *sealedSeen) scan(ctx context.Context) {
	vals, err := fleet.RedisValues(ctx, s.rdb)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil && s.err == nil {
			s.err = err
		}
		return
	}
	for k, v := range vals {
		if !s.seen[k+"\x00"+string(v)] {
			s.seen[k+"\x00"+string(v)] = true
			s.values[k] = append(append(s.values[k], v...), '\n')
		}
		_, name, ok := strings.Cut(k, ":secret:")
		if !ok {
			continue
		}
		if plain, err := s.st.GetSecret(ctx, name); err == nil {
			s.m[name] = plain
		}
	}
}

// watch scans every 50 ms until the returned stop is called (once or
// more), which scans a last time.
func (s *sealedSeen) watch(t *testing.T) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			s.scan(ctx)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			<-done
			s.scan(context.Background())
		})
	}
}

func (s *sealedSeen) all() map[string][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.m)
}

func (s *sealedSeen) allValues() (map[string][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.values), s.err
}
