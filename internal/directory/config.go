package directory

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/krbkey"
	"github.com/amtops/amtops/internal/secrets"
	"github.com/go-ldap/ldap/v3"
)

// Defaults applied by New to zero fields.
const (
	DefaultAccountSuffix   = "-amt"
	DefaultTimeout         = 10 * time.Second
	DefaultPoolSize        = 4
	DefaultEncryptionTypes = krbkey.DefaultEnc // RC4 | AES128 | AES256 = 28
	maxPoolSize            = 64
)

// Config says how to reach Active Directory and where AMT accounts live.
// Only encrypted connections are allowed: unicodePwd cannot be written
// otherwise, and the bind password must not cross the network in clear.
type Config struct {
	// URLs are tried in order on every dial: ldaps://host[:636], or
	// ldap://host[:389] together with StartTLS.
	URLs     []string
	StartTLS bool
	// CAFile is a PEM bundle trusted for the DC's certificate; empty means
	// the system roots.
	CAFile string
	// TLSServerName overrides the name checked in the DC's certificate
	// (default: the URL's host).
	TLSServerName string

	BindDN   string
	Password secrets.Redacted // BindDN's password, supplied by the caller

	// BaseDN is the domain naming context (DC=amt,DC=test); Windows computer
	// objects and SPN holders are searched below it.
	BaseDN string
	// AccountOU is the DN of the container for AMT accounts.
	AccountOU string
	// AccountSuffix is appended to the Windows computer name to name the
	// AMT account ("PC01" -> "PC01-amt"); 1 to 8 of [A-Za-z0-9_-]. See
	// AccountNames for how sAMAccountName is kept within 15 characters.
	AccountSuffix string
	// Realm is the Kerberos realm (AMT.TEST); default: from BaseDN.
	Realm string
	// EncryptionTypes is written to msDS-SupportedEncryptionTypes: 28 (RC4,
	// AES128, AES256) by default, so the KDC issues AES256 tickets and AMT
	// 8+ gets the AES256 key; use 4 for AMT older than 8 (RC4 only).
	EncryptionTypes uint32

	// S6 (off by default): add the AMT account to these groups (DNs).
	AddToGroups bool
	Groups8021X []string
	GroupsWiFi  []string

	// Timeout bounds each LDAP request and each dial (default 10 s); a
	// shorter context deadline wins.
	Timeout time.Duration
	// PoolSize bounds open connections (default 4, at most 64).
	PoolSize int
}

// Validate checks c after defaults; every problem names its field.
func (c Config) Validate() error {
	if len(c.URLs) == 0 {
		return domain.InvalidField("directory.url", "", "required")
	}
	for _, raw := range c.URLs {
		if err := c.validateURL(raw); err != nil {
			return err
		}
	}
	if c.BindDN == "" {
		return domain.InvalidField("directory.bind_dn", "", "required")
	}
	if c.Password == "" {
		return domain.InvalidField("directory.password", "", "required")
	}
	for field, dn := range map[string]string{"directory.bind_dn": c.BindDN, "directory.base_dn": c.BaseDN, "directory.account_ou": c.AccountOU} {
		if dn == "" {
			return domain.InvalidField(field, "", "required")
		}
		if _, err := ldap.ParseDN(dn); err != nil {
			return domain.InvalidField(field, dn, "not a DN: "+err.Error())
		}
	}
	if err := validSuffix(c.AccountSuffix); err != nil {
		return err
	}
	if c.EncryptionTypes&(krbkey.BitRC4|krbkey.BitAES128|krbkey.BitAES256) == 0 {
		return domain.InvalidField("directory.encryption_types", fmt.Sprint(c.EncryptionTypes), "must enable RC4 (4), AES128 (8) or AES256 (16)")
	}
	for i, g := range append(append([]string(nil), c.Groups8021X...), c.GroupsWiFi...) {
		if _, err := ldap.ParseDN(g); err != nil || g == "" {
			return domain.InvalidField(fmt.Sprintf("directory.groups[%d]", i), g, "not a DN")
		}
	}
	if c.Timeout <= 0 {
		return domain.InvalidField("directory.timeout", c.Timeout.String(), "must be positive")
	}
	if c.PoolSize < 1 || c.PoolSize > maxPoolSize {
		return domain.InvalidField("directory.pool_size", fmt.Sprint(c.PoolSize), fmt.Sprintf("must be 1 to %d", maxPoolSize))
	}
	if c.CAFile != "" {
		if _, err := os.Stat(c.CAFile); err != nil {
			return domain.InvalidField("directory.ca_file", c.CAFile, "cannot read: "+err.Error())
		}
	}
	return nil
}

// validateURL checks one directory URL: LDAPS, or LDAP with StartTLS.
func (c Config) validateURL(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Host == "":
		return domain.InvalidField("directory.url", raw, "must be ldaps://host[:port] or ldap://host[:port] with start_tls")
	case u.Scheme == "ldap" && !c.StartTLS:
		return domain.InvalidField("directory.url", raw, "plain LDAP is refused: use ldaps:// or set start_tls")
	case u.Scheme == "ldaps" && c.StartTLS:
		return domain.InvalidField("directory.start_tls", raw, "StartTLS applies to ldap:// URLs, not ldaps://")
	case u.Scheme != "ldap" && u.Scheme != "ldaps":
		return domain.InvalidField("directory.url", raw, "scheme must be ldaps or ldap")
	}
	return nil
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	if c.AccountSuffix == "" {
		c.AccountSuffix = DefaultAccountSuffix
	}
	if c.EncryptionTypes == 0 {
		c.EncryptionTypes = DefaultEncryptionTypes
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.PoolSize == 0 {
		c.PoolSize = DefaultPoolSize
	}
	if c.Realm == "" {
		c.Realm = RealmFromDN(c.BaseDN)
	}
	c.Realm = strings.ToUpper(c.Realm)
	return c
}

// RealmFromDN turns DC=amt,DC=test into AMT.TEST ("" when there is no DC
// component).
func RealmFromDN(dn string) string {
	parsed, err := ldap.ParseDN(dn)
	if err != nil {
		return ""
	}
	var parts []string
	for _, rdn := range parsed.RDNs {
		for _, a := range rdn.Attributes {
			if strings.EqualFold(a.Type, "DC") {
				parts = append(parts, a.Value)
			}
		}
	}
	return strings.ToUpper(strings.Join(parts, "."))
}

func (c Config) tlsConfig() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TLSServerName}
	if c.CAFile == "" {
		return tc, nil
	}
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, domain.InvalidField("directory.ca_file", c.CAFile, "cannot read: "+err.Error())
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, domain.InvalidField("directory.ca_file", c.CAFile, "no PEM certificate in file")
	}
	tc.RootCAs = pool
	return tc, nil
}
