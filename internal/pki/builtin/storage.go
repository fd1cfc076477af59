package builtin

import (
	"context"
	"fmt"

	"github.com/amtops/amtops/internal/secrets"
)

// Storage keeps the CA's state: its keys and certificates, the
// certificates it issued, its revocations and its last CRL. Every server
// replica shares one Storage (the site's Redis). Names are short relative
// keys ("ca", "cert/<serial>", "revoked/<serial>", "crl"); the
// implementation adds its own prefix.
//
// Values hold private keys, so an implementation seals them at rest
// (Sealed does that over a plain store). Set members are serial numbers
// with revocation reasons and times: not secret, stored as they are.
type Storage interface {
	// Get returns the value under name, or an error wrapping
	// domain.ErrNotFound when there is none.
	Get(ctx context.Context, name string) ([]byte, error)
	// PutIfAbsent stores value under name unless a value is already
	// there, atomically across replicas (Redis: SET NX, then GET), and
	// returns the value stored afterwards: value itself, or the one that
	// was there first.
	PutIfAbsent(ctx context.Context, name string, value []byte) ([]byte, error)
	// Put stores value under name, replacing any previous value.
	Put(ctx context.Context, name string, value []byte) error
	// AddToSet adds member to the named set; adding it twice is a no-op.
	AddToSet(ctx context.Context, set, member string) error
	// SetMembers returns the members of the named set in any order; a set
	// that was never written is empty.
	SetMembers(ctx context.Context, set string) ([]string, error)
}

// Sealed wraps a Storage that keeps values as they are, sealing every value
// with the site key bound to its name (so a blob moved to another name does
// not open). Set members pass through.
func Sealed(inner Storage, s *secrets.Sealer) Storage {
	return &sealed{inner: inner, s: s}
}

type sealed struct {
	inner Storage
	s     *secrets.Sealer
}

func (st *sealed) Get(ctx context.Context, name string) ([]byte, error) {
	b, err := st.inner.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	return st.open(name, b)
}

func (st *sealed) PutIfAbsent(ctx context.Context, name string, value []byte) ([]byte, error) {
	blob, err := st.s.Seal(value, []byte(name))
	if err != nil {
		return nil, fmt.Errorf("builtin: seal %s: %w", name, err)
	}
	got, err := st.inner.PutIfAbsent(ctx, name, blob)
	if err != nil {
		return nil, err
	}
	return st.open(name, got)
}

func (st *sealed) Put(ctx context.Context, name string, value []byte) error {
	blob, err := st.s.Seal(value, []byte(name))
	if err != nil {
		return fmt.Errorf("builtin: seal %s: %w", name, err)
	}
	return st.inner.Put(ctx, name, blob)
}

func (st *sealed) AddToSet(ctx context.Context, set, member string) error {
	return st.inner.AddToSet(ctx, set, member)
}

func (st *sealed) SetMembers(ctx context.Context, set string) ([]string, error) {
	return st.inner.SetMembers(ctx, set)
}

func (st *sealed) open(name string, blob []byte) ([]byte, error) {
	pt, err := st.s.Open(blob, []byte(name))
	if err != nil {
		return nil, fmt.Errorf("builtin: open %s: %w", name, err)
	}
	return pt, nil
}
