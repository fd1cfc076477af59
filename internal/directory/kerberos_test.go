package directory_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/amtops/amtops/internal/directory"
	"github.com/amtops/amtops/internal/krbkey"
	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/jcmturner/gokrb5/v8/config"
)

// TestKerberosServiceTicket is the end-to-end proof behind S5 and S10: a
// user gets a service ticket for HTTP/<fqdn>:16993 from the real KDC, and
// the key krbkey derives from the password Publish returned decrypts it —
// which is what AMT does with the key the agent installs.
func TestKerberosServiceTicket(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	userPass := "Us3r-" + randHex(t, 8) + "!"
	user := "u" + randHex(t, 5)
	e.addUser(t, user, userPass)

	tests := []struct {
		name      string
		encTypes  uint32
		wantEType int32
	}{
		{"default 28 gives aes256", krbkey.DefaultEnc, krbkey.AES256},
		{"aes128 and rc4", krbkey.BitAES128 | krbkey.BitRC4, krbkey.AES128},
		{"rc4 only for old AMT", krbkey.BitRC4, krbkey.RC4HMAC},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := e.client(t, func(c *directory.Config) { c.EncryptionTypes = tc.encTypes })
			name := uniqueName(t)
			fqdn := strings.ToLower(name) + ".amt.test"
			e.addComputer(t, name, "", fqdn)
			p, err := c.Publish(ctx(t), directory.Device{UUID: randHex(t, 16), ComputerName: name, FQDN: fqdn})
			if err != nil {
				t.Fatal(err)
			}
			if got := krbkey.Strongest(p.EncryptionTypes); got != tc.wantEType {
				t.Fatalf("Strongest(%d) = %d, want %d", p.EncryptionTypes, got, tc.wantEType)
			}

			kcl := client.NewWithPassword(user, e.peer.Realm, userPass, krb5Conf(t, e.peer.Realm, e.peer.KDC), client.DisablePAFXFAST(true))
			t.Cleanup(kcl.Destroy)
			if err := kcl.Login(); err != nil {
				t.Fatalf("kerberos login as %s: %v", user, err)
			}
			spn := "HTTP/" + fqdn + ":16993"
			tkt, _, err := kcl.GetServiceTicket(spn)
			if err != nil {
				t.Fatalf("service ticket for %s: %v", spn, err)
			}
			if tkt.EncPart.EType != tc.wantEType || tkt.EncPart.KVNO != p.KVNO {
				t.Fatalf("ticket etype %d kvno %d, want %d kvno %d", tkt.EncPart.EType, tkt.EncPart.KVNO, tc.wantEType, p.KVNO)
			}
			keys, err := p.Keys()
			if err != nil {
				t.Fatal(err)
			}
			if keys[0].EType != tkt.EncPart.EType {
				t.Fatalf("strongest key is %s, ticket uses %s", keys[0], krbkey.ETypeName(tkt.EncPart.EType))
			}
			if err := tkt.Decrypt(keys[0].EncryptionKey()); err != nil {
				t.Fatalf("decrypt the ticket with our %s: %v", keys[0], err)
			}
			if got := tkt.DecryptedEncPart.CName.PrincipalNameString(); !strings.EqualFold(got, user) {
				t.Errorf("ticket client = %q, want %q", got, user)
			}
			// A key from another password must not decrypt it: the check can fail.
			wrong, err := krbkey.Derive("Wr0ng-password!", tkt.EncPart.EType, p.Salt, p.KVNO)
			if err != nil {
				t.Fatal(err)
			}
			if err := tkt.Decrypt(wrong.EncryptionKey()); err == nil {
				t.Error("a key from the wrong password decrypted the ticket")
			}
		})
	}
}

// krb5Conf points gokrb5 at the test KDC only; nothing is read from
// /etc/krb5.conf or DNS.
func krb5Conf(t testing.TB, realm, kdc string) *config.Config {
	t.Helper()
	cfg, err := config.NewFromString(fmt.Sprintf(`[libdefaults]
  default_realm = %[1]s
  dns_lookup_kdc = false
  dns_lookup_realm = false
  udp_preference_limit = 1
  noaddresses = true
  default_tkt_enctypes = aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96 rc4-hmac
  default_tgs_enctypes = aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96 rc4-hmac
  permitted_enctypes = aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96 rc4-hmac
[realms]
  %[1]s = {
    kdc = %[2]s
  }
[domain_realm]
  .%[3]s = %[1]s
`, realm, kdc, strings.ToLower(realm)))
	if err != nil {
		t.Fatalf("krb5 config: %v", err)
	}
	return cfg
}
