package store

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/testpeers"
)

func TestAdminTokens(t *testing.T) {
	backends(t, QueueOptions{}, func(t *testing.T, e *env) {
		tok, rec, err := e.s.CreateAdminToken(e.ctx, "alice", domain.RoleOperate)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(tok, adminTokenPrefix) || len(tok) < len(adminTokenPrefix)+43 {
			t.Fatalf("token %q: want prefix and 32 random bytes", tok)
		}
		if rec.Role != domain.RoleOperate || rec.Name != "alice" {
			t.Fatalf("record %+v", rec)
		}
		got, err := e.s.AuthenticateAdmin(e.ctx, tok)
		if err != nil || got.Name != "alice" || got.Role != domain.RoleOperate {
			t.Fatalf("authenticate: %+v, %v", got, err)
		}
		if _, _, err := e.s.CreateAdminToken(e.ctx, "alice", domain.RoleRead); !errors.Is(err, domain.ErrConflict) {
			t.Fatalf("duplicate name: err = %v, want ErrConflict", err)
		}
		// The token itself never reaches Redis.
		assertAbsent(t, dumpAll(t, e.ctx, e.rdb), []byte(tok))
		assertAbsent(t, dumpAll(t, e.ctx, e.rdb), []byte(strings.TrimPrefix(tok, adminTokenPrefix)))

		for _, c := range []struct{ name, token string }{
			{"empty", ""},
			{"no prefix", strings.TrimPrefix(tok, adminTokenPrefix)},
			{"one byte off", tok[:len(tok)-1] + "x"},
			{"the hash itself", adminTokenPrefix + rec.Hash},
		} {
			t.Run(c.name, func(t *testing.T) {
				if _, err := e.s.AuthenticateAdmin(e.ctx, c.token); !errors.Is(err, domain.ErrUnauthorized) {
					t.Fatalf("err = %v, want ErrUnauthorized", err)
				}
			})
		}

		if _, _, err := e.s.CreateAdminToken(e.ctx, "bob", domain.RoleRead); err != nil {
			t.Fatal(err)
		}
		list, err := e.s.ListAdminTokens(e.ctx)
		if err != nil || len(list) != 2 || list[0].Name != "alice" || list[1].Name != "bob" || list[1].Role != domain.RoleRead {
			t.Fatalf("list: %+v, %v", list, err)
		}
		if err := e.s.RevokeAdminToken(e.ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.s.AuthenticateAdmin(e.ctx, tok); !errors.Is(err, domain.ErrUnauthorized) {
			t.Fatalf("revoked token: err = %v, want ErrUnauthorized", err)
		}
		if err := e.s.RevokeAdminToken(e.ctx, "alice"); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("revoke twice: err = %v, want ErrNotFound", err)
		}
	})
}

func TestAdminTokenBadInput(t *testing.T) {
	e := newEnv(t, testpeers.Miniredis(t), QueueOptions{})
	for _, c := range []struct {
		name, tokName, field string
		role                 domain.AdminRole
	}{
		{"empty name", "", "token.name", domain.RoleRead},
		{"space in name", "a b", "token.name", domain.RoleRead},
		{"long name", strings.Repeat("a", 65), "token.name", domain.RoleRead},
		{"unknown role", "ok", "token.role", "admin"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := e.s.CreateAdminToken(e.ctx, c.tokName, c.role)
			var fe *domain.FieldError
			if !errors.As(err, &fe) || fe.Field != c.field {
				t.Fatalf("err = %v, want field error on %s", err, c.field)
			}
		})
	}
}

// Replicas racing at first start make exactly one bootstrap token.
func TestCreateFirstAdminTokenRace(t *testing.T) {
	backends(t, QueueOptions{}, func(t *testing.T, e *env) {
		const n = 8
		var wg sync.WaitGroup
		var mu sync.Mutex
		created := 0
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tok, ok, err := e.s.CreateFirstAdminToken(e.ctx, "bootstrap", domain.RoleOperate)
				if err != nil {
					t.Errorf("replica %d: %v", i, err)
					return
				}
				if ok != (tok != "") {
					t.Errorf("replica %d: created=%v with token %q", i, ok, tok)
				}
				if ok {
					mu.Lock()
					created++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if created != 1 {
			t.Fatalf("%d replicas created a bootstrap token, want 1", created)
		}
		if _, ok, err := e.s.CreateFirstAdminToken(e.ctx, "other", domain.RoleOperate); err != nil || ok {
			t.Fatalf("with tokens present: created=%v err=%v", ok, err)
		}
	})
}
