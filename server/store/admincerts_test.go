package store

import (
	"errors"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/testpeers"
)

func TestAdminCertificates(t *testing.T) {
	backends(t, QueueOptions{}, func(t *testing.T, e *env) {
		now := e.clock.Now()
		rec := func(serial, name string, role domain.AdminRole, life time.Duration) domain.AdminCert {
			t.Helper()
			c := domain.AdminCert{Serial: serial, Name: name, Role: role, NotAfter: e.clock.Now().Add(life)}
			if err := e.s.RecordAdminCertificate(e.ctx, c); err != nil {
				t.Fatal(err)
			}
			return c
		}
		rec("a1", "alice", domain.RoleOperate, time.Hour)
		rec("a2", "alice", domain.RoleRead, 48*time.Hour)
		rec("b1", "bob", domain.RoleRead, time.Hour)

		got, err := e.s.AuthenticateAdminCertificate(e.ctx, "a1", "alice", domain.RoleOperate)
		if err != nil || got.Name != "alice" || got.Role != domain.RoleOperate || !got.NotAfter.Equal(now.Add(time.Hour)) {
			t.Fatalf("authenticate: %+v, %v", got, err)
		}
		for _, c := range []struct {
			name, serial, admin string
			role                domain.AdminRole
		}{
			{"unknown serial", "zz", "alice", domain.RoleOperate},
			{"other name", "a1", "bob", domain.RoleOperate},
			{"other role", "a1", "alice", domain.RoleRead},
		} {
			t.Run(c.name, func(t *testing.T) {
				if _, err := e.s.AuthenticateAdminCertificate(e.ctx, c.serial, c.admin, c.role); !errors.Is(err, domain.ErrUnauthorized) {
					t.Fatalf("err = %v, want ErrUnauthorized", err)
				}
			})
		}

		// Issuing again after a1 expired drops its record.
		e.clock.Add(2 * time.Hour)
		rec("a3", "alice", domain.RoleRead, time.Hour)
		list, err := e.s.ListAdminCertificates(e.ctx, "alice")
		if err != nil || len(list) != 2 || list[0].Serial != "a3" || list[1].Serial != "a2" {
			t.Fatalf("after pruning: %+v, %v", list, err)
		}

		// Revoking a name with certificates but no token works, and ends
		// every one of them but no other name's.
		if err := e.s.RevokeAdminToken(e.ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"a2", "a3"} {
			if _, err := e.s.AuthenticateAdminCertificate(e.ctx, s, "alice", domain.RoleRead); !errors.Is(err, domain.ErrUnauthorized) {
				t.Fatalf("revoked %s: err = %v", s, err)
			}
		}
		if _, err := e.s.AuthenticateAdminCertificate(e.ctx, "b1", "bob", domain.RoleRead); err != nil {
			t.Fatalf("bob's certificate: %v", err)
		}
		if err := e.s.RevokeAdminToken(e.ctx, "alice"); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("revoke twice: err = %v, want ErrNotFound", err)
		}

		// A token and certificates under one name go together.
		tok, _, err := e.s.CreateAdminToken(e.ctx, "bob", domain.RoleRead)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.s.RevokeAdminToken(e.ctx, "bob"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.s.AuthenticateAdmin(e.ctx, tok); !errors.Is(err, domain.ErrUnauthorized) {
			t.Fatalf("token after revoke: %v", err)
		}
		if _, err := e.s.AuthenticateAdminCertificate(e.ctx, "b1", "bob", domain.RoleRead); !errors.Is(err, domain.ErrUnauthorized) {
			t.Fatalf("certificate after revoke: %v", err)
		}
	})
}

func TestAdminCertificateBadInput(t *testing.T) {
	e := newEnv(t, testpeers.Miniredis(t), QueueOptions{})
	for _, c := range []struct {
		name  string
		cert  domain.AdminCert
		field string
	}{
		{"empty name", domain.AdminCert{Serial: "1", Role: domain.RoleRead}, "token.name"},
		{"colon in name", domain.AdminCert{Serial: "1", Name: "a:b", Role: domain.RoleRead}, "token.name"},
		{"unknown role", domain.AdminCert{Serial: "1", Name: "a", Role: "root"}, "token.role"},
		{"no serial", domain.AdminCert{Name: "a", Role: domain.RoleRead}, "serial"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := e.s.RecordAdminCertificate(e.ctx, c.cert)
			var fe *domain.FieldError
			if !errors.As(err, &fe) || fe.Field != c.field {
				t.Fatalf("err = %v, want a field error on %s", err, c.field)
			}
		})
	}
}
