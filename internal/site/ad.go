package site

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/amtops/amtops/internal/directory"
)

// JoinComputers creates the Windows computer objects of the simulated
// PCs, as joining them to the domain would; the AMT accounts link to
// them (managedBy). Objects already there are kept.
func (s *Site) JoinComputers(hosts ...string) error {
	d := s.cfg.Directory
	pemCA, err := os.ReadFile(d.CAFile)
	if err != nil {
		return fmt.Errorf("site: directory ca: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemCA)
	conn, err := ldap.DialURL(d.URL, ldap.DialWithTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	if err != nil {
		return fmt.Errorf("site: join computers: %w", err)
	}
	defer conn.Close()
	if err := conn.Bind(d.BindDN, s.cfg.DirectoryPassword); err != nil {
		return fmt.Errorf("site: join computers: bind: %w", err)
	}
	for _, h := range hosts {
		dn := "CN=" + directory.EscapeRDNValue(h) + "," + d.AccountOU
		add := ldap.NewAddRequest(dn, nil)
		add.Attribute("objectClass", []string{"top", "person", "organizationalPerson", "user", "computer"})
		add.Attribute("sAMAccountName", []string{strings.ToUpper(h) + "$"})
		add.Attribute("userAccountControl", []string{"4096"}) // workstation trust account
		add.Attribute("dNSHostName", []string{h + "." + Domain})
		if err := conn.Add(add); err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultEntryAlreadyExists) {
			return fmt.Errorf("site: join %s: %w", h, err)
		}
	}
	return nil
}
