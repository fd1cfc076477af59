package server_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
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
type secretSet map[string][]byte

// addText adds a password or token as is, base64 and hex.
func (s secretSet) addText(name, v string) {
	if len(v) < 6 {
		return // too short to search for without false hits
	}
	b := []byte(v)
	s[name] = b
	s[name+" (base64)"] = []byte(base64.StdEncoding.EncodeToString(b))
	s[name+" (hex)"] = []byte(hex.EncodeToString(b))
}

// addKey adds raw key bytes: windows of 24 bytes at multiples of 48 (so
// their base64 lies inside one PEM line), raw, base64 and hex.
func (s secretSet) addKey(name string, der []byte) {
	if len(der) < 16 {
		s.addText(name, string(der))
		return
	}
	for off := 0; off+16 <= len(der) && off < 48*8; off += 48 {
		w := der[off:min(off+24, len(der))]
		n := fmt.Sprintf("%s[%d:]", name, off)
		s[n] = w
		s[n+" (base64)"] = []byte(base64.StdEncoding.EncodeToString(w))
		s[n+" (hex)"] = []byte(hex.EncodeToString(w))
	}
}

// addSealed adds a secret's plaintext: the private fields of a JSON
// record (certificates and serials in it are public), PEM private keys by
// their DER, text by itself, anything else as key bytes.
func (s secretSet) addSealed(name string, plain []byte) {
	var rec map[string]any
	if json.Unmarshal(plain, &rec) == nil {
		for k, v := range rec {
			str, ok := v.(string)
			lk := strings.ToLower(k)
			if !ok || !(strings.Contains(lk, "key") || strings.Contains(lk, "password") || strings.Contains(lk, "secret")) {
				continue
			}
			if b, err := base64.StdEncoding.DecodeString(str); err == nil {
				s.addSealed(name+"."+k, b)
			} else {
				s.addText(name+"."+k, str)
			}
		}
		return
	}
	rest, found := plain, false
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		found = true
		if strings.Contains(blk.Type, "PRIVATE KEY") {
			s.addKey(name+" "+blk.Type, blk.Bytes)
		}
	}
	switch {
	case found:
	case isText(plain):
		s.addText(name, string(plain))
	default:
		s.addKey(name, plain)
	}
}

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
				s.addText(n, v.String())
			case fd.Kind() == protoreflect.BytesKind:
				s.addKey(n, v.Bytes())
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

// marker reports a sealed record that only marks a job (its device ID,
// its FQDN, the certificate it was issued): sealed to bind it to its key,
// not because it is secret.
func marker(name string) bool {
	for _, suffix := range []string{"/activation", "/sign-on-device", "/signed"} {
		if strings.HasSuffix(name, suffix) {
			return true
		}
	}
	return false
}

func isText(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return len(b) > 0
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
