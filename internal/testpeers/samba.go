package testpeers

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// The environment that scripts/samba.sh writes to DIR/env.
const (
	EnvLDAPURL      = "AMTOPS_TEST_LDAP_URL"
	EnvLDAPCA       = "AMTOPS_TEST_LDAP_CA"
	EnvLDAPBindDN   = "AMTOPS_TEST_LDAP_BIND_DN"
	EnvLDAPPassword = "AMTOPS_TEST_LDAP_PASSWORD"
	EnvLDAPBaseDN   = "AMTOPS_TEST_LDAP_BASE_DN"
	EnvKRB5Realm    = "AMTOPS_TEST_KRB5_REALM"
	EnvKDC          = "AMTOPS_TEST_KDC"
)

const sambaHow = "run `scripts/samba.sh start /tmp/amtops-samba && . /tmp/amtops-samba/env` (root, Debian 12)"

// SambaPeer is the shared Samba AD DC started by scripts/samba.sh. Many
// test packages use it at once: each test works inside its own OU (OU).
type SambaPeer struct {
	URL      string // ldaps://127.0.0.1:636
	CAFile   string // PEM of the test CA that signed the DC's certificate
	BindDN   string // a domain administrator
	Password string // BindDN's password
	BaseDN   string // DC=amt,DC=test
	Realm    string // AMT.TEST
	KDC      string // 127.0.0.1:88
}

// Samba returns the Samba peer announced in the environment, or skips t
// (fails it under AMTOPS_REQUIRE_PEERS=1) when it is not there.
func Samba(t testing.TB) SambaPeer {
	t.Helper()
	p := SambaPeer{
		URL:      os.Getenv(EnvLDAPURL),
		CAFile:   os.Getenv(EnvLDAPCA),
		BindDN:   os.Getenv(EnvLDAPBindDN),
		Password: os.Getenv(EnvLDAPPassword),
		BaseDN:   os.Getenv(EnvLDAPBaseDN),
		Realm:    os.Getenv(EnvKRB5Realm),
		KDC:      os.Getenv(EnvKDC),
	}
	var missing []string
	for name, v := range map[string]string{EnvLDAPURL: p.URL, EnvLDAPCA: p.CAFile, EnvLDAPBindDN: p.BindDN,
		EnvLDAPPassword: p.Password, EnvLDAPBaseDN: p.BaseDN, EnvKRB5Realm: p.Realm, EnvKDC: p.KDC} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		Missing(t, "Samba AD DC", strings.Join(missing, ", ")+" unset; "+sambaHow)
		return SambaPeer{}
	}
	return p
}

// TLSConfig trusts the peer's test CA only.
func (p SambaPeer) TLSConfig(t testing.TB) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(p.CAFile)
	if err != nil {
		t.Fatalf("testpeers: samba CA: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("testpeers: samba CA %s: no certificate in PEM", p.CAFile)
	}
	host := "127.0.0.1"
	if u, err := url.Parse(p.URL); err == nil && u.Hostname() != "" {
		host = u.Hostname()
	}
	return &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}
}

// Conn is an administrator connection over LDAPS, closed when t ends.
func (p SambaPeer) Conn(t testing.TB) *ldap.Conn {
	t.Helper()
	c, err := ldap.DialURL(p.URL, ldap.DialWithTLSConfig(p.TLSConfig(t)),
		ldap.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}))
	if err != nil {
		t.Fatalf("testpeers: dial samba %s: %v", p.URL, err)
	}
	c.SetTimeout(30 * time.Second)
	if err := c.Bind(p.BindDN, p.Password); err != nil {
		c.Close()
		t.Fatalf("testpeers: bind samba as %s: %v", p.BindDN, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// OU creates an organizational unit unique to t directly under BaseDN and
// returns its DN; it is deleted with everything in it when t ends (unless
// AMTOPS_KEEP_OU=1, to look at it after a failure).
func (p SambaPeer) OU(t testing.TB) string {
	t.Helper()
	c := p.Conn(t)
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := "t-" + ouSafe(t.Name()) + "-" + hex.EncodeToString(b[:])
	dn := "OU=" + name + "," + p.BaseDN
	add := ldap.NewAddRequest(dn, nil)
	add.Attribute("objectClass", []string{"top", "organizationalUnit"})
	add.Attribute("description", []string{"amtops test " + t.Name()})
	if err := c.Add(add); err != nil {
		t.Fatalf("testpeers: add OU %s: %v", dn, err)
	}
	t.Cleanup(func() {
		if os.Getenv("AMTOPS_KEEP_OU") == "1" {
			t.Logf("keeping %s", dn)
			return
		}
		// A fresh connection: the one above may be closed by an earlier cleanup.
		c := p.Conn(t)
		del := ldap.NewDelRequest(dn, []ldap.Control{ldap.NewControlSubtreeDelete()})
		if err := c.Del(del); err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
			t.Errorf("testpeers: delete OU %s: %v", dn, err)
		}
	})
	return dn
}

// ouSafe keeps the test name readable in the OU without any character that
// needs DN escaping, and short (RDN values are limited to 64 characters).
func ouSafe(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	out := b.String()
	if len(out) > 40 {
		out = out[len(out)-40:]
	}
	return out
}

// String never shows the password.
func (p SambaPeer) String() string {
	return fmt.Sprintf("samba %s realm %s kdc %s", p.URL, p.Realm, p.KDC)
}
