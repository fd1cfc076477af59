package store

import (
	"errors"
	"slices"
	"testing"

	"github.com/amtops/amtops/internal/domain"
)

func TestBlobs(t *testing.T) {
	backends(t, QueueOptions{}, func(t *testing.T, e *env) {
		b := e.s.Blobs("ca")
		if _, err := b.Get(e.ctx, "root"); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("get missing: %v", err)
		}
		got, err := b.PutIfAbsent(e.ctx, "root", []byte("first"))
		if err != nil || string(got) != "first" {
			t.Fatalf("put if absent: %q %v", got, err)
		}
		if got, _ := b.PutIfAbsent(e.ctx, "root", []byte("second")); string(got) != "first" {
			t.Fatalf("second put if absent returned %q, want the first value", got)
		}
		if err := b.Put(e.ctx, "root", []byte("third")); err != nil {
			t.Fatal(err)
		}
		if got, _ := b.Get(e.ctx, "root"); string(got) != "third" {
			t.Fatalf("after put: %q", got)
		}
		for _, m := range []string{"2", "1", "2"} {
			if err := b.AddToSet(e.ctx, "serials", m); err != nil {
				t.Fatal(err)
			}
		}
		ms, err := b.SetMembers(e.ctx, "serials")
		slices.Sort(ms)
		if err != nil || !slices.Equal(ms, []string{"1", "2"}) {
			t.Fatalf("members %v %v", ms, err)
		}
		if other, _ := e.s.Blobs("other").SetMembers(e.ctx, "serials"); len(other) != 0 {
			t.Fatalf("namespaces leak: %v", other)
		}
	})
}
