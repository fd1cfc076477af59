package directory_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/directory"
	"github.com/amtops/amtops/internal/secrets"
	"github.com/amtops/amtops/internal/testpeers"
	"github.com/go-ldap/ldap/v3"
	"github.com/rs/zerolog"
)

// env is one test's view of the shared Samba DC: its own OU, an admin
// connection and a configured client.
type env struct {
	peer testpeers.SambaPeer
	ou   string
	conn *ldap.Conn
}

func newEnv(t testing.TB) env {
	t.Helper()
	peer := testpeers.Samba(t)
	return env{peer: peer, ou: peer.OU(t), conn: peer.Conn(t)}
}

func (e env) config() directory.Config {
	return directory.Config{
		URLs:      []string{e.peer.URL},
		CAFile:    e.peer.CAFile,
		BindDN:    e.peer.BindDN,
		Password:  secrets.Redacted(e.peer.Password),
		BaseDN:    e.peer.BaseDN,
		AccountOU: e.ou,
		Timeout:   20 * time.Second,
	}
}

func (e env) client(t testing.TB, mutate func(*directory.Config)) *directory.Client {
	t.Helper()
	cfg := e.config()
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := directory.New(cfg, zerolog.New(io.Discard))
	if err != nil {
		t.Fatalf("directory.New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctx(t testing.TB) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func randHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// uniqueName is a Windows computer name unique in the shared domain, short
// enough that name+"-amt" is a sAMAccountName as is.
func uniqueName(t testing.TB) string { return "T" + strings.ToUpper(randHex(t, 3)) }

// addComputer creates a Windows computer object named name in the test OU
// (with HOST SPNs for fqdn when given) and returns its DN. sam is its
// sAMAccountName without "$" (name itself when empty).
func (e env) addComputer(t testing.TB, name, sam, fqdn string) string {
	t.Helper()
	if sam == "" {
		sam = name
	}
	dn := "CN=" + directory.EscapeRDNValue(name) + "," + e.ou
	add := ldap.NewAddRequest(dn, nil)
	add.Attribute("objectClass", []string{"top", "person", "organizationalPerson", "user", "computer"})
	add.Attribute("cn", []string{name})
	add.Attribute("sAMAccountName", []string{sam + "$"})
	add.Attribute("userAccountControl", []string{strconv.Itoa(0x1000)})
	if fqdn != "" {
		add.Attribute("dNSHostName", []string{fqdn})
		add.Attribute("servicePrincipalName", []string{"HOST/" + fqdn, "HOST/" + strings.ToUpper(sam)})
	}
	if err := e.conn.Add(add); err != nil {
		t.Fatalf("add windows computer %s: %v", dn, err)
	}
	return dn
}

// addUser creates an enabled user with a known password and returns its DN.
func (e env) addUser(t testing.TB, sam, password string, spns ...string) string {
	t.Helper()
	dn := "CN=" + directory.EscapeRDNValue(sam) + "," + e.ou
	add := ldap.NewAddRequest(dn, nil)
	add.Attribute("objectClass", []string{"top", "person", "organizationalPerson", "user"})
	add.Attribute("sAMAccountName", []string{sam})
	add.Attribute("userAccountControl", []string{"512"})
	add.Attribute("unicodePwd", []string{quotedUTF16(password)})
	if len(spns) > 0 {
		add.Attribute("servicePrincipalName", spns)
	}
	if err := e.conn.Add(add); err != nil {
		t.Fatalf("add user %s: %v", dn, err)
	}
	return dn
}

func (e env) addGroup(t testing.TB, name string) string {
	t.Helper()
	dn := "CN=" + directory.EscapeRDNValue(name) + "," + e.ou
	add := ldap.NewAddRequest(dn, nil)
	add.Attribute("objectClass", []string{"top", "group"})
	add.Attribute("sAMAccountName", []string{name})
	if err := e.conn.Add(add); err != nil {
		t.Fatalf("add group %s: %v", dn, err)
	}
	return dn
}

// read returns attrs of dn (nil entry when it does not exist).
func (e env) read(t testing.TB, dn string, attrs ...string) *ldap.Entry {
	t.Helper()
	res, err := e.conn.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 0, false,
		"(objectClass=*)", attrs, nil))
	if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		return nil
	}
	if err != nil {
		t.Fatalf("read %s: %v", dn, err)
	}
	return res.Entries[0]
}

func quotedUTF16(s string) string {
	var b []byte
	for _, r := range `"` + s + `"` {
		b = append(b, byte(r), byte(r>>8))
	}
	return string(b)
}

func hasFold(list []string, want string) bool {
	for _, v := range list {
		if dnEqual(v, want) {
			return true
		}
	}
	return false
}

func dnEqual(a, b string) bool {
	da, err1 := ldap.ParseDN(a)
	db, err2 := ldap.ParseDN(b)
	if err1 != nil || err2 != nil {
		return strings.EqualFold(a, b)
	}
	return da.EqualFold(db)
}
