// Package pkitest holds an in-memory implementation of the built-in CA's
// storage, for tests that do not need Redis. It keeps values as given;
// wrap it in builtin.Sealed to exercise sealing.
package pkitest

import (
	"context"
	"fmt"
	"sync"

	"github.com/amtops/amtops/internal/domain"
)

// MemStorage is a builtin.Storage in memory, safe for concurrent use. The
// zero value is ready.
type MemStorage struct {
	mu     sync.Mutex
	values map[string][]byte
	sets   map[string]map[string]struct{}
	// Puts counts writes of values (Put and successful PutIfAbsent).
	Puts int
}

// Get implements builtin.Storage.
func (m *MemStorage) Get(_ context.Context, name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.values[name]
	if !ok {
		return nil, fmt.Errorf("pkitest: get %s: %w", name, domain.ErrNotFound)
	}
	return clone(v), nil
}

// PutIfAbsent implements builtin.Storage.
func (m *MemStorage) PutIfAbsent(_ context.Context, name string, value []byte) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v, ok := m.values[name]; ok {
		return clone(v), nil
	}
	m.put(name, value)
	return clone(value), nil
}

// Put implements builtin.Storage.
func (m *MemStorage) Put(_ context.Context, name string, value []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.put(name, value)
	return nil
}

// AddToSet implements builtin.Storage.
func (m *MemStorage) AddToSet(_ context.Context, set, member string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sets == nil {
		m.sets = map[string]map[string]struct{}{}
	}
	if m.sets[set] == nil {
		m.sets[set] = map[string]struct{}{}
	}
	m.sets[set][member] = struct{}{}
	return nil
}

// SetMembers implements builtin.Storage.
func (m *MemStorage) SetMembers(_ context.Context, set string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.sets[set]))
	for k := range m.sets[set] {
		out = append(out, k)
	}
	return out, nil
}

// Raw returns the stored bytes under name as they are, for tests that
// check what reaches the store.
func (m *MemStorage) Raw(name string) ([]byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.values[name]
	return clone(v), ok
}

func (m *MemStorage) put(name string, value []byte) {
	if m.values == nil {
		m.values = map[string][]byte{}
	}
	m.values[name] = clone(value)
	m.Puts++
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }
