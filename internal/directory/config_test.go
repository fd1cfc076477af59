package directory_test

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/amtops/amtops/internal/directory"
	"github.com/amtops/amtops/internal/domain"
	"github.com/rs/zerolog"
)

func TestConfigValidation(t *testing.T) {
	base := func() directory.Config {
		return directory.Config{
			URLs:      []string{"ldaps://dc1.amt.test"},
			BindDN:    "CN=Administrator,CN=Users,DC=amt,DC=test",
			Password:  "secret-value",
			BaseDN:    "DC=amt,DC=test",
			AccountOU: "OU=AMT,DC=amt,DC=test",
		}
	}
	tests := []struct {
		name   string
		mutate func(*directory.Config)
		field  string // "" = valid
	}{
		{"ldaps ok", func(*directory.Config) {}, ""},
		{"ldap with starttls ok", func(c *directory.Config) { c.URLs = []string{"ldap://dc1.amt.test:389"}; c.StartTLS = true }, ""},
		{"plain ldap refused", func(c *directory.Config) { c.URLs = []string{"ldap://dc1.amt.test:389"} }, "directory.url"},
		{"plain ldap as second url refused", func(c *directory.Config) { c.URLs = append(c.URLs, "ldap://dc2.amt.test") }, "directory.url"},
		{"ldapi refused", func(c *directory.Config) { c.URLs = []string{"ldapi:///run/ldapi"} }, "directory.url"},
		{"starttls on ldaps", func(c *directory.Config) { c.StartTLS = true }, "directory.start_tls"},
		{"no url", func(c *directory.Config) { c.URLs = nil }, "directory.url"},
		{"no password", func(c *directory.Config) { c.Password = "" }, "directory.password"},
		{"bad ou", func(c *directory.Config) { c.AccountOU = "not a dn" }, "directory.account_ou"},
		{"suffix with comma", func(c *directory.Config) { c.AccountSuffix = ",x" }, "directory.account_suffix"},
		{"des only", func(c *directory.Config) { c.EncryptionTypes = 3 }, "directory.encryption_types"},
		{"bad group", func(c *directory.Config) { c.GroupsWiFi = []string{"wifi users"} }, "directory.groups[0]"},
		{"pool too big", func(c *directory.Config) { c.PoolSize = 1000 }, "directory.pool_size"},
		{"missing ca file", func(c *directory.Config) { c.CAFile = "/nonexistent/ca.pem" }, "directory.ca_file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base()
			tc.mutate(&cfg)
			c, err := directory.New(cfg, zerolog.New(io.Discard))
			if tc.field == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				c.Close()
				return
			}
			var fe *domain.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("err = %v, want a field error on %s", err, tc.field)
			}
			if strings.Contains(err.Error(), "secret-value") {
				t.Errorf("error leaks the password: %v", err)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := directory.New(directory.Config{URLs: []string{"ldaps://dc1"}, BindDN: "CN=a,DC=amt,DC=test", Password: "x",
		BaseDN: "DC=amt,DC=test", AccountOU: "OU=AMT,DC=amt,DC=test"}, zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := c.Config()
	if got.AccountSuffix != "-amt" || got.EncryptionTypes != 28 || got.Realm != "AMT.TEST" || got.PoolSize != 4 || got.Timeout <= 0 {
		t.Errorf("defaults = suffix %q enc %d realm %q pool %d timeout %v", got.AccountSuffix, got.EncryptionTypes, got.Realm, got.PoolSize, got.Timeout)
	}
	if s := strings.ToLower(strings.Join([]string{got.Password.String()}, "")); s != "[redacted]" {
		t.Errorf("password prints as %q", s)
	}
}
