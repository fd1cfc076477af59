package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/go-ldap/ldap/v3"
	"github.com/jcmturner/gokrb5/v8/client"
	krbconfig "github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/types"
	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/directory"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/krbkey"
	"github.com/amtops/amtops/internal/secrets"
	"github.com/amtops/amtops/internal/testpeers"
)

type adEnv struct {
	peer testpeers.SambaPeer
	ou   string
	conn *ldap.Conn
	dir  *directory.Client
}

func newADEnv(t *testing.T) adEnv {
	t.Helper()
	peer := testpeers.Samba(t)
	e := adEnv{peer: peer, ou: peer.OU(t), conn: peer.Conn(t)}
	dir, err := directory.New(directory.Config{URLs: []string{peer.URL}, CAFile: peer.CAFile, BindDN: peer.BindDN,
		Password: secrets.Redacted(peer.Password), BaseDN: peer.BaseDN, AccountOU: e.ou, Timeout: 20 * time.Second},
		zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dir.Close() })
	e.dir = dir
	return e
}

func randName(t *testing.T) string {
	t.Helper()
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "P" + strings.ToUpper(hex.EncodeToString(b))
}

// addComputer creates the Windows computer object the AMT account links to.
func (e adEnv) addComputer(t *testing.T, name string) string {
	t.Helper()
	dn := "CN=" + name + "," + e.ou
	add := ldap.NewAddRequest(dn, nil)
	add.Attribute("objectClass", []string{"top", "person", "organizationalPerson", "user", "computer"})
	add.Attribute("sAMAccountName", []string{name + "$"})
	add.Attribute("userAccountControl", []string{"4096"})
	if err := e.conn.Add(add); err != nil {
		t.Fatalf("add computer %s: %v", dn, err)
	}
	return dn
}

func (e adEnv) addUser(t *testing.T, name, password string) {
	t.Helper()
	add := ldap.NewAddRequest("CN="+name+","+e.ou, nil)
	add.Attribute("objectClass", []string{"top", "person", "organizationalPerson", "user"})
	add.Attribute("sAMAccountName", []string{name})
	add.Attribute("userAccountControl", []string{"512"})
	u := utf16.Encode([]rune(`"` + password + `"`))
	b := make([]byte, 2*len(u))
	for i, r := range u {
		b[2*i], b[2*i+1] = byte(r), byte(r>>8)
	}
	add.Attribute("unicodePwd", []string{string(b)})
	if err := e.conn.Add(add); err != nil {
		t.Fatalf("add user %s: %v", name, err)
	}
}

// accounts counts AMT accounts carrying uuid in the test OU.
func (e adEnv) accounts(t *testing.T, uuid string) []*ldap.Entry {
	t.Helper()
	res, err := e.conn.Search(ldap.NewSearchRequest(e.ou, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		"(&(objectClass=computer)(description="+ldap.EscapeFilter(uuid)+"))", []string{"servicePrincipalName", "managedBy"}, nil))
	if err != nil {
		t.Fatal(err)
	}
	return res.Entries
}

func krb5Config(t *testing.T, realm, kdc string) *krbconfig.Config {
	t.Helper()
	cfg, err := krbconfig.NewFromString(fmt.Sprintf(`[libdefaults]
  default_realm = %[1]s
  dns_lookup_kdc = false
  dns_lookup_realm = false
  udp_preference_limit = 1
  noaddresses = true
[realms]
  %[1]s = {
    kdc = %[2]s
  }
`, realm, kdc))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// After phase 1, a user's service ticket for HTTP/<fqdn>:16993 from the
// real KDC decrypts with the key phase 1 put into the phase-2 job (S5, S10);
// the AMT account links to the Windows computer (S4).
func TestProvisionKerberosProof(t *testing.T) {
	e := newADEnv(t)
	f := newFixture(t, e.dir, Site{})
	ctx := context.Background()
	name := randName(t)
	winDN := e.addComputer(t, name)
	d := f.device(t, strings.ToLower(name))
	if _, err := f.store.UpdateDevice(ctx, d.ID, func(x *domain.Device) error { x.ComputerDN = winDN; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := f.prov.Handle(ctx, f.task(t, "k1", d, domain.KindProvision)); err != nil {
		t.Fatal(err)
	}
	job, _ := f.leaseOne(t)
	k := job.Kerberos
	if k == nil || !k.Enabled || k.Passphrase == "" || k.Realm != e.peer.Realm {
		t.Fatalf("phase-2 job has no usable Kerberos key: %+v", k)
	}
	accts := e.accounts(t, d.UUID)
	if len(accts) != 1 {
		t.Fatalf("%d AMT accounts for the device, want 1", len(accts))
	}
	if got := accts[0].GetAttributeValue("managedBy"); !strings.EqualFold(got, winDN) {
		t.Errorf("managedBy = %q, want %q", got, winDN)
	}
	fqdn := d.FQDN()
	spns := accts[0].GetAttributeValues("servicePrincipalName")
	for _, port := range []string{"16992", "16993", "16994", "16995"} {
		want := "HTTP/" + fqdn + ":" + port
		found := false
		for _, s := range spns {
			found = found || strings.EqualFold(s, want)
		}
		if !found {
			t.Errorf("SPN %s missing from %v", want, spns)
		}
	}
	// The device record names the account and SPNs AD holds.
	rec, err := f.store.GetDevice(ctx, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.EqualFold(rec.ADAccountDN, accts[0].DN) || len(rec.SPNs) != 4 || !strings.EqualFold(rec.SPNs[1], "HTTP/"+fqdn+":16993") {
		t.Errorf("device records account %q SPNs %v; AD has %s", rec.ADAccountDN, rec.SPNs, accts[0].DN)
	}

	user, pass := "u"+strings.ToLower(randName(t)), "Us3r-"+randName(t)+"!x"
	e.addUser(t, user, pass)
	kcl := client.NewWithPassword(user, e.peer.Realm, pass, krb5Config(t, e.peer.Realm, e.peer.KDC), client.DisablePAFXFAST(true))
	t.Cleanup(kcl.Destroy)
	if err := kcl.Login(); err != nil {
		t.Fatalf("login as %s: %v", user, err)
	}
	tkt, _, err := kcl.GetServiceTicket("HTTP/" + fqdn + ":16993")
	if err != nil {
		t.Fatalf("service ticket: %v", err)
	}
	if tkt.EncPart.EType != k.EncryptionType || tkt.EncPart.KVNO != int(k.KeyVersion) {
		t.Fatalf("ticket etype %d kvno %d; phase 1 gave etype %d kvno %d", tkt.EncPart.EType, tkt.EncPart.KVNO, k.EncryptionType, k.KeyVersion)
	}
	// What the firmware derives from the payload: the key of the etype
	// from passphrase and salt (AES), or the RC4 MasterKey.
	key, err := krbkey.Derive(k.Passphrase, k.EncryptionType, k.Salt, int(k.KeyVersion))
	if err != nil {
		t.Fatal(err)
	}
	if err := tkt.Decrypt(key.EncryptionKey()); err != nil {
		t.Fatalf("the key derived from the payload does not decrypt the ticket: %v", err)
	}
	wrong := append([]byte(nil), key.Value...)
	wrong[0] ^= 0xff
	if err := tkt.Decrypt(types.EncryptionKey{KeyType: k.EncryptionType, KeyValue: wrong}); err == nil {
		t.Fatal("a wrong key decrypted the ticket: the check cannot fail")
	}
}

// Interrupted after any step with a directory, a re-run leaves exactly
// one live certificate and one AD object.
func TestProvisionCrashWithDirectory(t *testing.T) {
	e := newADEnv(t)
	f := newFixture(t, e.dir, Site{})
	ctx := context.Background()
	for i, crashAt := range []string{StepIssueServerCert, StepPublishAccount, StepRegisterSPNs, StepQueuePhase2} {
		t.Run(crashAt, func(t *testing.T) {
			name := randName(t)
			e.addComputer(t, name)
			d := f.device(t, strings.ToLower(name))
			task := f.task(t, fmt.Sprintf("d%d", i), d, domain.KindProvision)
			f.prov.afterStep = func(s string) error {
				if s == crashAt {
					return errCrash
				}
				return nil
			}
			if err := f.prov.Handle(ctx, task); err == nil {
				t.Fatal("first run did not crash")
			}
			f.prov.afterStep = nil
			if err := f.prov.Handle(ctx, task); err != nil {
				t.Fatalf("re-run: %v", err)
			}
			if n := len(f.live(t, d.ID, domain.PurposeServerAuth)); n != 1 {
				t.Fatalf("%d live certificates, want 1", n)
			}
			if n := len(e.accounts(t, d.UUID)); n != 1 {
				t.Fatalf("%d AD objects, want 1", n)
			}
			f.leaseOne(t)
		})
	}
}
