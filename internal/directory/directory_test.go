package directory_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/amtops/amtops/internal/directory"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/krbkey"
	"github.com/go-ldap/ldap/v3"
)

func TestPublish(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.client(t, nil)
	name := uniqueName(t)
	fqdn := strings.ToLower(name) + ".amt.test"
	winDN := e.addComputer(t, name, "", fqdn)
	dev := directory.Device{UUID: "8d4bc1a0-1b2c-4d5e-8f90-" + randHex(t, 6), ComputerName: name, FQDN: fqdn}

	p, err := c.Publish(ctx(t), dev)
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	wantSAM := strings.ToUpper(name) + "-AMT$"
	if !p.Created || p.SAMAccountName != wantSAM || p.CN != name+"-amt" {
		t.Errorf("created=%v sam=%q cn=%q, want true %q %q", p.Created, p.SAMAccountName, p.CN, wantSAM, name+"-amt")
	}
	if !dnEqual(p.DN, "CN="+name+"-amt,"+e.ou) {
		t.Errorf("DN = %s, want it in %s", p.DN, e.ou)
	}
	if p.Password == "" || p.KVNO < 1 {
		t.Errorf("password set=%v kvno=%d, want a password and kvno >= 1", p.Password != "", p.KVNO)
	}
	if p.Description != dev.UUID || !dnEqual(p.ManagedBy, winDN) {
		t.Errorf("description=%q managedBy=%q, want %q %q", p.Description, p.ManagedBy, dev.UUID, winDN)
	}
	if p.EncryptionTypes != 28 || p.UserAccountControl != 0x11000 {
		t.Errorf("encTypes=%d uac=%#x, want 28 and 0x11000 (workstation trust, enabled, password never expires)", p.EncryptionTypes, p.UserAccountControl)
	}
	if p.Salt != "AMT.TESThost"+strings.ToLower(name)+"-amt.amt.test" || p.Realm != "AMT.TEST" {
		t.Errorf("salt=%q realm=%q", p.Salt, p.Realm)
	}
	wantSPNs := []string{"HTTP/" + fqdn + ":16992", "HTTP/" + fqdn + ":16993", "HTTP/" + fqdn + ":16994", "HTTP/" + fqdn + ":16995"}
	if got := slices.Sorted(slices.Values(p.SPNs)); !slices.Equal(got, wantSPNs) {
		t.Errorf("SPNs = %v, want %v", got, wantSPNs)
	}
	// The back-link appears on the Windows computer, which keeps its own SPNs.
	win := e.read(t, winDN, "managedObjects", "servicePrincipalName")
	if !hasFold(win.GetAttributeValues("managedObjects"), p.DN) {
		t.Errorf("managedObjects of %s = %v, want %s", winDN, win.GetAttributeValues("managedObjects"), p.DN)
	}
	if len(win.GetAttributeValues("servicePrincipalName")) != 2 {
		t.Errorf("windows computer SPNs changed: %v", win.GetAttributeValues("servicePrincipalName"))
	}

	// Publishing again updates in place with a new password.
	p2, err := c.Publish(ctx(t), dev)
	if err != nil {
		t.Fatalf("Publish again: %v", err)
	}
	if p2.Created || !dnEqual(p2.DN, p.DN) || p2.Password == p.Password || p2.KVNO <= p.KVNO {
		t.Errorf("second publish: created=%v dn=%s kvno %d->%d password changed=%v; want an in-place update with a new password",
			p2.Created, p2.DN, p.KVNO, p2.KVNO, p2.Password != p.Password)
	}
	res, err := e.conn.Search(ldap.NewSearchRequest(e.ou, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		"(description="+ldap.EscapeFilter(dev.UUID)+")", []string{"1.1"}, nil))
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("objects for the device = %v (err %v), want exactly 1", res, err)
	}

	got, err := c.Lookup(ctx(t), name)
	if err != nil || !dnEqual(got.DN, p.DN) || got.KVNO != p2.KVNO {
		t.Errorf("Lookup = %+v, %v; want %s kvno %d", got, err, p.DN, p2.KVNO)
	}
}

func TestPublishWindowsComputer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.client(t, nil)
	byDN := uniqueName(t)
	byDNWin := e.addComputer(t, byDN, "", "")
	// A computer whose cn differs from its sAMAccountName is found by sAMAccountName.
	bySAM := uniqueName(t)
	bySAMWin := e.addComputer(t, "Desk of "+bySAM, bySAM, "")
	tests := []struct {
		name    string
		dev     directory.Device
		wantWin string
		wantErr error
	}{
		{"by DN", directory.Device{ComputerName: byDN, ComputerDN: byDNWin}, byDNWin, nil},
		{"by sAMAccountName", directory.Device{ComputerName: bySAM}, bySAMWin, nil},
		{"missing by name", directory.Device{ComputerName: uniqueName(t)}, "", domain.ErrNotFound},
		{"missing by DN", directory.Device{ComputerName: uniqueName(t), ComputerDN: "CN=nope," + e.ou}, "", domain.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.dev.UUID = randHex(t, 16)
			tc.dev.FQDN = strings.ToLower(tc.dev.ComputerName) + ".amt.test"
			p, err := c.Publish(ctx(t), tc.dev)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !domain.IsPermanent(err) {
					t.Fatalf("err = %v, want permanent %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !dnEqual(p.ManagedBy, tc.wantWin) {
				t.Errorf("managedBy = %s, want %s", p.ManagedBy, tc.wantWin)
			}
		})
	}
}

func TestDuplicateSPN(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.client(t, nil)
	tests := []struct {
		name   string
		holder func(fqdn string) string // the SPN the other object holds
	}{
		{"same spelling", func(fqdn string) string { return "HTTP/" + fqdn + ":16993" }},
		{"case variant", func(fqdn string) string { return "http/" + strings.ToUpper(fqdn) + ":16995" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := uniqueName(t)
			fqdn := strings.ToLower(name) + ".amt.test"
			e.addComputer(t, name, "", fqdn)
			spn := tc.holder(fqdn)
			other := e.addUser(t, "u"+randHex(t, 4), "Us3r-"+randHex(t, 8)+"!", spn)

			_, err := c.Publish(ctx(t), directory.Device{UUID: randHex(t, 16), ComputerName: name, FQDN: fqdn})
			var conflict *directory.SPNConflictError
			if !errors.As(err, &conflict) {
				t.Fatalf("err = %v, want *SPNConflictError", err)
			}
			if !dnEqual(conflict.HeldBy, other) || !strings.EqualFold(conflict.SPN, spn) {
				t.Errorf("conflict = %q held by %q, want %q held by %q", conflict.SPN, conflict.HeldBy, spn, other)
			}
			if !errors.Is(err, domain.ErrConflict) || !domain.IsPermanent(err) || !domain.IsPermanent(err) {
				t.Errorf("err %v: want permanent domain.ErrConflict", err)
			}
			if !strings.Contains(err.Error(), other) && !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(other)) {
				t.Errorf("error %q does not name the other object %s", err, other)
			}
		})
	}
}

func TestGroups(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	wired := e.addGroup(t, "g8021x-"+randHex(t, 4))
	wifi := e.addGroup(t, "gwifi-"+randHex(t, 4))
	withGroups := func(on bool) func(*directory.Config) {
		return func(c *directory.Config) {
			c.AddToGroups = on
			c.Groups8021X = []string{wired}
			c.GroupsWiFi = []string{wifi}
		}
	}
	members := func(t *testing.T, dn string) (inWired, inWiFi bool) {
		t.Helper()
		m := e.read(t, dn, "memberOf").GetAttributeValues("memberOf")
		return hasFold(m, wired), hasFold(m, wifi)
	}

	t.Run("off by default", func(t *testing.T) {
		c := e.client(t, withGroups(false))
		name := uniqueName(t)
		e.addComputer(t, name, "", "")
		p, err := c.Publish(ctx(t), directory.Device{UUID: randHex(t, 16), ComputerName: name, FQDN: strings.ToLower(name) + ".amt.test"})
		if err != nil {
			t.Fatal(err)
		}
		if w, f := members(t, p.DN); w || f {
			t.Errorf("member of wired=%v wifi=%v with groups off", w, f)
		}
	})
	t.Run("add remove idempotent", func(t *testing.T) {
		c := e.client(t, withGroups(true))
		name := uniqueName(t)
		e.addComputer(t, name, "", "")
		dev := directory.Device{UUID: randHex(t, 16), ComputerName: name, FQDN: strings.ToLower(name) + ".amt.test"}
		p, err := c.Publish(ctx(t), dev)
		if err != nil {
			t.Fatal(err)
		}
		if w, f := members(t, p.DN); !w || !f {
			t.Errorf("after publish: member of wired=%v wifi=%v, want both", w, f)
		}
		if _, err := c.Publish(ctx(t), dev); err != nil {
			t.Fatalf("publish while already a member: %v", err)
		}
		if err := c.AddToGroups(ctx(t), p.DN); err != nil {
			t.Fatalf("AddToGroups while already a member: %v", err)
		}
		for i := range 2 {
			if err := c.RemoveFromGroups(ctx(t), p.DN); err != nil {
				t.Fatalf("RemoveFromGroups #%d: %v", i+1, err)
			}
			if w, f := members(t, p.DN); w || f {
				t.Errorf("after remove: member of wired=%v wifi=%v", w, f)
			}
		}
		if err := c.AddToGroups(ctx(t), p.DN); err != nil {
			t.Fatal(err)
		}
		// Delete drops the memberships with the object (AD cleans up).
		if _, err := c.Delete(ctx(t), name); err != nil {
			t.Fatal(err)
		}
		for _, g := range []string{wired, wifi} {
			if hasFold(e.read(t, g, "member").GetAttributeValues("member"), p.DN) {
				t.Errorf("group %s still lists the deleted account", g)
			}
		}
	})
	t.Run("missing group is permanent", func(t *testing.T) {
		c := e.client(t, func(c *directory.Config) { c.Groups8021X = []string{"CN=nope," + e.ou} })
		name := uniqueName(t)
		e.addComputer(t, name, "", "")
		p, err := c.Publish(ctx(t), directory.Device{UUID: randHex(t, 16), ComputerName: name, FQDN: strings.ToLower(name) + ".amt.test"})
		if err != nil {
			t.Fatal(err)
		}
		err = c.AddToGroups(ctx(t), p.DN)
		if err == nil || !domain.IsPermanent(err) || !strings.Contains(err.Error(), "CN=nope") {
			t.Errorf("err = %v, want a permanent error naming the group", err)
		}
	})
}

func TestUpdateAndDelete(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.client(t, nil)
	name := uniqueName(t)
	fqdn := strings.ToLower(name) + ".amt.test"
	winDN := e.addComputer(t, name, "", fqdn)
	dev := directory.Device{UUID: randHex(t, 16), ComputerName: name, FQDN: fqdn}

	// Update publishes a missing account (S13).
	u1, err := c.Update(ctx(t), dev)
	if err != nil {
		t.Fatal(err)
	}
	if !u1.Created || u1.Password == "" || len(u1.SPNs) != 4 {
		t.Fatalf("update of missing: created=%v password=%v spns=%v", u1.Created, u1.Password != "", u1.SPNs)
	}
	// Someone removes the SPNs and edits the object; Update puts them back
	// without touching the password.
	if err := c.DeleteSPNs(ctx(t), u1.DN); err != nil {
		t.Fatal(err)
	}
	mod := ldap.NewModifyRequest(u1.DN, nil)
	mod.Replace("description", []string{"stale"})
	mod.Replace("userAccountControl", []string{"4098"}) // disabled
	if err := e.conn.Modify(mod); err != nil {
		t.Fatal(err)
	}
	u2, err := c.Update(ctx(t), dev)
	if err != nil {
		t.Fatal(err)
	}
	if u2.Created || u2.Password != "" || u2.KVNO != u1.KVNO || !dnEqual(u2.DN, u1.DN) {
		t.Errorf("update: created=%v password reset=%v kvno %d->%d dn %s; want in place, same key", u2.Created, u2.Password != "", u1.KVNO, u2.KVNO, u2.DN)
	}
	if len(u2.SPNs) != 4 || u2.Description != dev.UUID || u2.UserAccountControl&0x2 != 0 || !dnEqual(u2.ManagedBy, winDN) {
		t.Errorf("update did not restore: spns=%v description=%q uac=%#x managedBy=%s", u2.SPNs, u2.Description, u2.UserAccountControl, u2.ManagedBy)
	}
	if _, err := u2.Keys(); err == nil {
		t.Error("Keys without a password reset succeeded")
	}

	deleted, err := c.Delete(ctx(t), name)
	if err != nil || !deleted {
		t.Fatalf("Delete = %v, %v; want true", deleted, err)
	}
	if e.read(t, u1.DN) != nil {
		t.Errorf("%s still exists", u1.DN)
	}
	if _, err := c.Lookup(ctx(t), name); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("Lookup after delete: %v, want ErrNotFound", err)
	}
	if m := e.read(t, winDN, "managedObjects").GetAttributeValues("managedObjects"); len(m) != 0 {
		t.Errorf("managedObjects after delete = %v", m)
	}
	deleted, err = c.Delete(ctx(t), name)
	if err != nil || deleted {
		t.Errorf("second Delete = %v, %v; want false, nil", deleted, err)
	}
}

// TestNameConflict: an object outside the AMT OU with the AMT account's
// sAMAccountName is not taken over.
func TestNameConflict(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.client(t, func(c *directory.Config) { c.AccountOU = e.peer.OU(t) })
	name := uniqueName(t)
	e.addComputer(t, name, "", "")
	squatter := e.addComputer(t, "squatter-"+name, name+"-amt", "")
	_, err := c.Publish(ctx(t), directory.Device{UUID: randHex(t, 16), ComputerName: name, FQDN: strings.ToLower(name) + ".amt.test"})
	var nc *directory.NameConflictError
	if !errors.As(err, &nc) || !dnEqual(nc.HeldBy, squatter) || !domain.IsPermanent(err) {
		t.Fatalf("err = %v, want permanent NameConflictError held by %s", err, squatter)
	}
	if _, err := c.Delete(ctx(t), name); !errors.As(err, &nc) {
		t.Errorf("Delete err = %v, want NameConflictError (not deleting another object)", err)
	}
}

// TestSpecialCharacterNames publishes accounts for Windows computers whose
// names need DN escaping and checks that names round-trip through Samba.
func TestSpecialCharacterNames(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.client(t, nil)
	tests := []struct{ name, tmpl string }{
		{"comma", "a,b"},
		{"plus", "a+b"},
		{"quote", `a"b`},
		{"backslash", `a\b`},
		{"angle brackets", "a<b>c"},
		{"semicolon", "a;b"},
		{"equals", "a=b"},
		{"leading hash", "#lead"},
		{"hash inside", "a#b"},
		{"leading space", " lead"},
		{"trailing space", "trail "},
		{"filter specials", "a*(b)"},
		{"non-ascii", "ü-пк"},
		{"long name shortened", "WORKSTATION-WITH-A-VERY-LONG-NAME"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := tc.tmpl + randHex(t, 2) // unique, keeps the special characters where they are
			if strings.HasSuffix(tc.tmpl, " ") {
				name = randHex(t, 2) + tc.tmpl
			}
			winSAM := "W" + strings.ToUpper(randHex(t, 5))
			winDN := e.addComputer(t, name, winSAM, "")
			if got := e.read(t, winDN, "cn").GetAttributeValue("cn"); got != name {
				t.Fatalf("windows computer cn = %q, want %q", got, name)
			}
			fqdn := strings.ToLower(winSAM) + ".amt.test"
			p, err := c.Publish(ctx(t), directory.Device{UUID: randHex(t, 16), ComputerName: name, FQDN: fqdn})
			if err != nil {
				t.Fatalf("Publish %q: %v", name, err)
			}
			if p.CN != name+"-amt" {
				t.Errorf("cn = %q, want %q", p.CN, name+"-amt")
			}
			parsed, err := ldap.ParseDN(p.DN)
			if err != nil || parsed.RDNs[0].Attributes[0].Value != name+"-amt" {
				t.Errorf("DN %q does not parse back to cn %q (%v)", p.DN, name+"-amt", err)
			}
			if !dnEqual(p.ManagedBy, winDN) {
				t.Errorf("managedBy = %q, want %q", p.ManagedBy, winDN)
			}
			if sam := strings.TrimSuffix(p.SAMAccountName, "$"); len(sam) > 15 || strings.ContainsAny(sam, `"/\[]:;|=,+*?<> #`) {
				t.Errorf("sAMAccountName %q is not a valid computer name", p.SAMAccountName)
			}
			if got, err := c.Lookup(ctx(t), name); err != nil || !dnEqual(got.DN, p.DN) {
				t.Errorf("Lookup(%q) = %s, %v", name, got.DN, err)
			}
			if p2, err := c.Publish(ctx(t), directory.Device{UUID: p.Description, ComputerName: name, FQDN: fqdn}); err != nil || p2.Created {
				t.Errorf("republish %q: created=%v err=%v", name, p2.Created, err)
			}
			if ok, err := c.Delete(ctx(t), name); err != nil || !ok {
				t.Errorf("Delete(%q) = %v, %v", name, ok, err)
			}
		})
	}
}

func TestKeysMatchPublished(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.client(t, nil)
	name := uniqueName(t)
	e.addComputer(t, name, "", "")
	p, err := c.Publish(ctx(t), directory.Device{UUID: randHex(t, 16), ComputerName: name, FQDN: strings.ToLower(name) + ".amt.test"})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := p.Keys()
	if err != nil {
		t.Fatal(err)
	}
	var got []int32
	for _, k := range keys {
		got = append(got, k.EType)
		if k.KVNO != p.KVNO {
			t.Errorf("%s kvno %d, want %d", k, k.KVNO, p.KVNO)
		}
	}
	if !slices.Equal(got, []int32{krbkey.AES256, krbkey.AES128, krbkey.RC4HMAC}) {
		t.Errorf("etypes = %v", got)
	}
	// The salt we compute is the one the KDC announces.
	salts, err := krbkey.SaltsFromKDC(ctx(t), e.peer.KDC, e.peer.Realm, p.SAMAccountName)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range salts {
		if (s.EType == krbkey.AES256 || s.EType == krbkey.AES128) && s.Salt != p.Salt {
			t.Errorf("KDC salt for %s = %q, we use %q", krbkey.ETypeName(s.EType), s.Salt, p.Salt)
		}
	}
	if len(salts) == 0 || salts[0].EType != krbkey.AES256 {
		t.Errorf("KDC etype-info2 = %+v, want AES256 first", salts)
	}
}
