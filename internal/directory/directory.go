// Package directory publishes Intel AMT accounts in Active Directory: the
// computer-class AMT account linked to the Windows computer object (S4), its
// port-qualified HTTP SPNs (S5), optional 802.1X and wireless group
// membership (S6), and update (S13) and removal (S17).
//
// It speaks LDAP over TLS only (LDAPS, or LDAP with StartTLS) through a
// small bounded pool of bound connections. The AMT account's password is
// set by the site with unicodePwd and returned to the caller, who derives
// the Kerberos key for AMT from it (package krbkey); it is never logged.
//
// Every error names the operation; directory answers that cannot change on
// retry (constraint violations, access denied, missing parents, bad input)
// are wrapped with domain.Permanent, everything else is retryable.
package directory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/krbkey"
	"github.com/amtops/amtops/internal/secrets"
	"github.com/go-ldap/ldap/v3"
	"github.com/rs/zerolog"
)

// userAccountControl flags.
const (
	uacAccountDisable     = 0x0002
	uacPasswdNotReqd      = 0x0020
	uacWorkstationTrust   = 0x1000
	uacDontExpirePassword = 0x10000
	// accountUAC is a workstation trust account (what a computer object
	// is), enabled, whose password does not expire: the site, not a
	// machine, owns it, so nothing would rotate it.
	accountUAC = uacWorkstationTrust | uacDontExpirePassword
)

// Device identifies the machine whose AMT account is published.
type Device struct {
	// UUID is the AMT UUID; it is stored in the account's description.
	UUID string
	// ComputerName is the Windows computer name ("PC01"); the AMT account
	// is named from it (AccountNames).
	ComputerName string
	// ComputerDN is the Windows computer object; when empty it is looked up
	// by ComputerName (sAMAccountName "<name>$", else cn) below BaseDN.
	ComputerDN string
	// FQDN of the AMT controller, for the SPNs (S5).
	FQDN string
}

func (d Device) validate() error {
	if err := validComputerName(d.ComputerName); err != nil {
		return err
	}
	if d.UUID == "" {
		return domain.InvalidField("uuid", "", "required")
	}
	if d.FQDN == "" || strings.ContainsAny(d.FQDN, "/: \t") || !strings.Contains(d.FQDN, ".") {
		return domain.InvalidField("fqdn", d.FQDN, "must be a fully qualified host name")
	}
	if d.ComputerDN != "" {
		if _, err := ldap.ParseDN(d.ComputerDN); err != nil {
			return domain.InvalidField("computer_dn", d.ComputerDN, "not a DN")
		}
	}
	return nil
}

// Account is an AMT account as the directory holds it.
type Account struct {
	DN                 string
	CN                 string
	SAMAccountName     string // with the trailing "$"
	Description        string // the AMT UUID
	ManagedBy          string // DN of the Windows computer object
	SPNs               []string
	KVNO               int    // msDS-KeyVersionNumber
	EncryptionTypes    uint32 // msDS-SupportedEncryptionTypes
	UserAccountControl uint32
	MemberOf           []string
}

// Published is the result of Publish and Update.
type Published struct {
	Account
	// Password is the account's new password; empty when Update left the
	// password alone. Derive AMT's key from it (Keys), then forget it.
	Password secrets.Redacted
	Realm    string // AMT.TEST
	// Salt is the AES string-to-key salt of the account,
	// "<REALM>host<sam lower, no $>.<realm lower>"; SaltPrincipal is the
	// same as a principal name, host/<sam lower>.<realm lower>@<REALM>.
	Salt          string
	SaltPrincipal string
	Created       bool // the account did not exist before
}

// Keys derives the Kerberos keys of the account (strongest first) for the
// etypes enabled on it, with its kvno. The KDC issues service tickets with
// krbkey.Strongest(p.EncryptionTypes), the first key.
func (p Published) Keys() ([]krbkey.Key, error) {
	if p.Password == "" {
		return nil, fmt.Errorf("directory: keys for %s: password was not reset", p.SAMAccountName)
	}
	return krbkey.DeriveAll(p.Password.Reveal(), p.Salt, p.KVNO, p.EncryptionTypes)
}

// Client publishes AMT accounts. It is safe for concurrent use; Close it
// to drop pooled connections.
type Client struct {
	cfg  Config
	pool *pool
	log  zerolog.Logger
}

// New validates cfg (after defaults) and returns a Client. It does not dial:
// the first operation does.
func New(cfg Config, log zerolog.Logger) (*Client, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("directory: config: %w", err)
	}
	if cfg.Realm == "" {
		return nil, fmt.Errorf("directory: config: %w", domain.InvalidField("directory.realm", "", "required when base_dn has no DC= components"))
	}
	tc, err := cfg.tlsConfig()
	if err != nil {
		return nil, fmt.Errorf("directory: config: %w", err)
	}
	log = log.With().Str("component", "directory").Logger()
	return &Client{cfg: cfg, pool: newPool(cfg, tc, log), log: log}, nil
}

// Config returns the effective configuration (defaults applied).
func (c *Client) Config() Config { return c.cfg }

// Close closes idle connections; operations in flight finish first.
func (c *Client) Close() error { return c.pool.close() }

// do runs fn on a pooled connection. A network failure on a connection that
// sat idle (the DC restarted, a firewall dropped it) is retried once on a
// fresh connection; anything else is returned as is.
func (c *Client) do(ctx context.Context, fn func(*ldap.Conn) error) error {
	for attempt := 0; ; attempt++ {
		conn, reused, err := c.pool.get(ctx)
		if err != nil {
			return err
		}
		err = withConn(ctx, conn, c.cfg.Timeout, fn)
		broken := brokenConn(err)
		c.pool.put(conn, broken)
		if err != nil && broken && reused && attempt == 0 && ctx.Err() == nil && !pastDeadline(ctx) {
			c.log.Debug().Err(err).Msg("directory connection lost, redialing")
			continue
		}
		return err
	}
}

var accountAttrs = []string{"cn", "sAMAccountName", "description", "managedBy", "servicePrincipalName",
	"msDS-KeyVersionNumber", "msDS-SupportedEncryptionTypes", "userAccountControl", "memberOf"}

func toAccount(e *ldap.Entry) Account {
	atoi := func(name string) uint32 {
		v, _ := strconv.ParseInt(e.GetAttributeValue(name), 10, 64)
		return uint32(v)
	}
	return Account{
		DN:                 e.DN,
		CN:                 e.GetAttributeValue("cn"),
		SAMAccountName:     e.GetAttributeValue("sAMAccountName"),
		Description:        e.GetAttributeValue("description"),
		ManagedBy:          e.GetAttributeValue("managedBy"),
		SPNs:               e.GetAttributeValues("servicePrincipalName"),
		KVNO:               int(atoi("msDS-KeyVersionNumber")),
		EncryptionTypes:    atoi("msDS-SupportedEncryptionTypes"),
		UserAccountControl: atoi("userAccountControl"),
		MemberOf:           e.GetAttributeValues("memberOf"),
	}
}

// Publish creates or updates the AMT account of d (S4), resets its
// password, registers its SPNs (S5) and, when configured, adds it to the
// 802.1X and wireless groups (S6). Publishing again updates the same
// object in place and returns a new password. The account is identified by
// its sAMAccountName (AccountNames): one found in the account OU with the
// same cn is updated even when its description holds another AMT UUID (the
// machine's board was replaced); one elsewhere, or with another cn, is a
// *NameConflictError.
//
// Derive the key for AMT with Published.Keys (first key = the etype the
// KDC will use). Calling Publish again changes the key: hand AMT the key
// of the last successful call.
func (c *Client) Publish(ctx context.Context, d Device) (Published, error) {
	return c.publish(ctx, "publish", d, true)
}

// Update is "update memory of the management controller" (S13): it
// re-registers the SPNs and updates the AMT account, publishing it when it
// is missing. The password is reset only when the account had to be
// created (Published.Password is empty otherwise).
func (c *Client) Update(ctx context.Context, d Device) (Published, error) {
	return c.publish(ctx, "update", d, false)
}

func (c *Client) publish(ctx context.Context, op string, d Device, resetPassword bool) (Published, error) {
	if err := d.validate(); err != nil {
		return Published{}, fail(op, err)
	}
	cn, sam, err := AccountNames(d.ComputerName, c.cfg.AccountSuffix)
	if err != nil {
		return Published{}, fail(op, err)
	}
	op = op + " " + sam + "$"
	out := Published{Realm: c.cfg.Realm, Salt: krbkey.ComputerSalt(c.cfg.Realm, sam), SaltPrincipal: krbkey.ComputerSaltPrincipal(c.cfg.Realm, sam)}
	// password and created outlive a retried attempt (do redials once), so
	// an account created by a lost attempt still gets a known password.
	var password string
	created := false
	err = c.do(ctx, func(conn *ldap.Conn) error {
		winDN, err := c.resolveComputer(conn, d)
		if err != nil {
			return err
		}
		dn, made, err := c.ensureAccount(conn, d, cn, sam, winDN, &password, resetPassword)
		if err != nil {
			return err
		}
		created = made
		if err := c.setSPNs(conn, dn, SPNs(d.FQDN)); err != nil {
			return err
		}
		if c.cfg.AddToGroups {
			if err := c.editGroups(conn, dn, ldap.AddAttribute); err != nil {
				return err
			}
		}
		acct, err := c.readAccount(conn, dn)
		if err != nil {
			return err
		}
		out.Account = acct
		return nil
	})
	if err != nil {
		return Published{}, fail(op, err)
	}
	out.Password, out.Created = secrets.Redacted(password), created
	c.log.Info().Str("op", strings.Fields(op)[0]).Str("account", out.SAMAccountName).Str("dn", out.DN).
		Str("uuid", d.UUID).Int("kvno", out.KVNO).Bool("created", out.Created).
		Bool("password_reset", out.Password != "").Msg("amt account published")
	return out, nil
}

// ensureAccount finds or creates the AMT account of d and sets its
// attributes (and *password, when one is made); it returns the account's
// DN and whether this call created it. *password outlives a retried
// attempt, so an account created by a lost attempt still gets a known one.
func (c *Client) ensureAccount(conn *ldap.Conn, d Device, cn, sam, winDN string, password *string, resetPassword bool) (string, bool, error) {
	created := false
	dn := accountDN(cn, c.cfg.AccountOU)
	existing, err := c.findBySAM(conn, sam+"$")
	if err != nil {
		return "", false, err
	}
	if existing != nil {
		// Same sAMAccountName but elsewhere, or another name that
		// shortened to the same sAMAccountName: not ours to take over.
		if !sameParent(existing.DN, c.cfg.AccountOU) || strings.EqualFold(existing.DN, winDN) ||
			!strings.EqualFold(existing.CN, cn) {
			return "", false, &NameConflictError{Name: sam + "$", HeldBy: existing.DN}
		}
		dn = existing.DN
	}
	if *password == "" && (existing == nil || resetPassword) {
		if *password, err = NewPassword(); err != nil {
			return "", false, err
		}
	}
	if existing == nil {
		err = c.addAccount(conn, dn, cn, sam, winDN, d.UUID, *password)
		if ldap.IsErrorWithCode(err, ldap.LDAPResultEntryAlreadyExists) {
			// The DN is taken: by a concurrent publish of the same
			// device (then update it), or by another object.
			other, ferr := c.findBySAM(conn, sam+"$")
			if ferr != nil {
				return "", false, ferr
			}
			if other == nil || !strings.EqualFold(other.DN, dn) {
				return "", false, &NameConflictError{Name: dn, HeldBy: dn}
			}
			existing, err = other, nil
		}
		if err != nil {
			return "", false, err
		}
		created = existing == nil
	}
	if existing != nil {
		if err := c.updateAccount(conn, dn, winDN, d.UUID, *password); err != nil {
			return "", false, err
		}
	}
	return dn, created, nil
}

// sameParent reports whether dn sits directly in container.
func sameParent(dn, container string) bool {
	d, err1 := ldap.ParseDN(dn)
	p, err2 := ldap.ParseDN(container)
	if err1 != nil || err2 != nil || len(d.RDNs) != len(p.RDNs)+1 {
		return false
	}
	return (&ldap.DN{RDNs: d.RDNs[1:]}).EqualFold(p)
}

func (c *Client) addAccount(conn *ldap.Conn, dn, cn, sam, winDN, uuid, password string) error {
	add := ldap.NewAddRequest(dn, nil)
	add.Attribute("objectClass", []string{"top", "person", "organizationalPerson", "user", "computer"})
	add.Attribute("cn", []string{cn})
	add.Attribute("sAMAccountName", []string{sam + "$"})
	add.Attribute("userAccountControl", []string{strconv.Itoa(accountUAC)})
	add.Attribute("description", []string{uuid})
	add.Attribute("managedBy", []string{winDN})
	add.Attribute("msDS-SupportedEncryptionTypes", []string{strconv.FormatUint(uint64(c.cfg.EncryptionTypes), 10)})
	add.Attribute("unicodePwd", []string{unicodePwd(password)})
	if err := conn.Add(add); err != nil {
		return fmt.Errorf("add %s: %w", dn, err)
	}
	return nil
}

func (c *Client) updateAccount(conn *ldap.Conn, dn, winDN, uuid, password string) error {
	mod := ldap.NewModifyRequest(dn, nil)
	mod.Replace("description", []string{uuid})
	mod.Replace("managedBy", []string{winDN})
	mod.Replace("msDS-SupportedEncryptionTypes", []string{strconv.FormatUint(uint64(c.cfg.EncryptionTypes), 10)})
	mod.Replace("userAccountControl", []string{strconv.Itoa(accountUAC)})
	if password != "" {
		mod.Replace("unicodePwd", []string{unicodePwd(password)})
	}
	if err := conn.Modify(mod); err != nil {
		return fmt.Errorf("modify %s: %w", dn, err)
	}
	return nil
}

// RegisterSPNs replaces the SPNs of the account at dn with those of fqdn
// (S5). A duplicate held by another object is a *SPNConflictError.
func (c *Client) RegisterSPNs(ctx context.Context, dn, fqdn string) error {
	op := "register spns on " + dn
	if fqdn == "" {
		return fail(op, domain.InvalidField("fqdn", "", "required"))
	}
	return fail(op, c.do(ctx, func(conn *ldap.Conn) error { return c.setSPNs(conn, dn, SPNs(fqdn)) }))
}

// DeleteSPNs removes every SPN from the account at dn (S17 when the account
// itself is kept).
func (c *Client) DeleteSPNs(ctx context.Context, dn string) error {
	return fail("delete spns on "+dn, c.do(ctx, func(conn *ldap.Conn) error {
		mod := ldap.NewModifyRequest(dn, nil)
		mod.Replace("servicePrincipalName", nil)
		return conn.Modify(mod)
	}))
}

func (c *Client) setSPNs(conn *ldap.Conn, dn string, spns []string) error {
	mod := ldap.NewModifyRequest(dn, nil)
	mod.Replace("servicePrincipalName", spns)
	err := conn.Modify(mod)
	if err == nil {
		return nil
	}
	if !isSPNConflict(err) {
		return fmt.Errorf("set spns: %w", err)
	}
	for _, spn := range spns {
		holder, ferr := c.spnHolder(conn, spn, dn)
		if ferr != nil {
			return fmt.Errorf("set spns: %w (finding the holder: %v)", err, ferr)
		}
		if holder != "" {
			return &SPNConflictError{SPN: spn, HeldBy: holder, Err: err}
		}
	}
	return &SPNConflictError{SPN: strings.Join(spns, " "), Err: err}
}

// spnHolder finds the object other than self holding spn (matching is
// case-insensitive in AD, as the uniqueness check is).
func (c *Client) spnHolder(conn *ldap.Conn, spn, self string) (string, error) {
	res, err := conn.Search(ldap.NewSearchRequest(c.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		2, 0, false, equalityFilter("servicePrincipalName", spn), []string{"1.1"}, nil))
	if err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
		return "", err
	}
	if res == nil {
		return "", nil
	}
	selfDN, _ := ldap.ParseDN(self)
	for _, e := range res.Entries {
		if d, err := ldap.ParseDN(e.DN); err == nil && selfDN != nil && d.EqualFold(selfDN) {
			continue
		}
		return e.DN, nil
	}
	return "", nil
}

// resolveComputer returns the DN of the Windows computer object of d.
func (c *Client) resolveComputer(conn *ldap.Conn, d Device) (string, error) {
	if d.ComputerDN != "" {
		res, err := conn.Search(ldap.NewSearchRequest(d.ComputerDN, ldap.ScopeBaseObject, ldap.NeverDerefAliases,
			1, 0, false, "(objectClass=computer)", []string{"1.1"}, nil))
		if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) || err == nil && len(res.Entries) == 0 {
			return "", fmt.Errorf("windows computer %s: %w", d.ComputerDN, domain.ErrNotFound)
		}
		if err != nil {
			return "", fmt.Errorf("read windows computer %s: %w", d.ComputerDN, err)
		}
		return res.Entries[0].DN, nil
	}
	for _, filter := range computerFilters(d.ComputerName) {
		res, err := conn.Search(ldap.NewSearchRequest(c.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
			2, 0, false, filter, []string{"1.1"}, nil))
		if err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
			return "", fmt.Errorf("find windows computer %q: %w", d.ComputerName, err)
		}
		switch {
		case res == nil || len(res.Entries) == 0:
			continue
		case len(res.Entries) > 1:
			return "", domain.Permanent(fmt.Errorf("find windows computer %q: ambiguous: %s and %s; give its DN",
				d.ComputerName, res.Entries[0].DN, res.Entries[1].DN))
		}
		return res.Entries[0].DN, nil
	}
	return "", fmt.Errorf("windows computer %q below %s: %w", d.ComputerName, c.cfg.BaseDN, domain.ErrNotFound)
}

func (c *Client) findBySAM(conn *ldap.Conn, sam string) (*Account, error) {
	res, err := conn.Search(ldap.NewSearchRequest(c.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		2, 0, false, equalityFilter("sAMAccountName", sam), accountAttrs, nil))
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", sam, err)
	}
	if len(res.Entries) == 0 {
		return nil, nil
	}
	a := toAccount(res.Entries[0])
	return &a, nil
}

func (c *Client) readAccount(conn *ldap.Conn, dn string) (Account, error) {
	res, err := conn.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		1, 0, false, "(objectClass=computer)", accountAttrs, nil))
	if err != nil {
		return Account{}, fmt.Errorf("read %s: %w", dn, err)
	}
	if len(res.Entries) == 0 {
		return Account{}, fmt.Errorf("read %s: %w", dn, domain.ErrNotFound)
	}
	return toAccount(res.Entries[0]), nil
}

// Lookup returns the AMT account of the Windows computer computerName, or
// an error matching domain.ErrNotFound.
func (c *Client) Lookup(ctx context.Context, computerName string) (Account, error) {
	_, sam, err := AccountNames(computerName, c.cfg.AccountSuffix)
	if err != nil {
		return Account{}, fail("lookup", err)
	}
	var out Account
	err = c.do(ctx, func(conn *ldap.Conn) error {
		a, err := c.findBySAM(conn, sam+"$")
		if err != nil {
			return err
		}
		if a == nil {
			return fmt.Errorf("amt account %s$: %w", sam, domain.ErrNotFound)
		}
		out = *a
		return nil
	})
	return out, fail("lookup "+sam+"$", err)
}

// Delete removes the AMT account of computerName (S17): its SPNs go with
// it and AD drops its group memberships. A missing account is not an
// error; Delete reports whether it removed one.
func (c *Client) Delete(ctx context.Context, computerName string) (bool, error) {
	_, sam, err := AccountNames(computerName, c.cfg.AccountSuffix)
	if err != nil {
		return false, fail("delete", err)
	}
	op := "delete " + sam + "$"
	deleted := false
	err = c.do(ctx, func(conn *ldap.Conn) error {
		a, err := c.findBySAM(conn, sam+"$")
		if err != nil || a == nil {
			return err
		}
		if !sameParent(a.DN, c.cfg.AccountOU) {
			return &NameConflictError{Name: sam + "$", HeldBy: a.DN}
		}
		err = conn.Del(ldap.NewDelRequest(a.DN, nil))
		if ldap.IsErrorWithCode(err, ldap.LDAPResultNotAllowedOnNonLeaf) {
			err = conn.Del(ldap.NewDelRequest(a.DN, []ldap.Control{ldap.NewControlSubtreeDelete()}))
		}
		if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("del %s: %w", a.DN, err)
		}
		deleted = true
		return nil
	})
	if err != nil {
		return false, fail(op, err)
	}
	if deleted {
		c.log.Info().Str("account", sam+"$").Msg("amt account deleted")
	}
	return deleted, nil
}

// AddToGroups adds the account at dn to the configured 802.1X and wireless
// groups (S6); already a member is fine. It acts even when AddToGroups is
// off in the configuration: the caller decides.
func (c *Client) AddToGroups(ctx context.Context, dn string) error {
	return fail("add "+dn+" to groups", c.do(ctx, func(conn *ldap.Conn) error { return c.editGroups(conn, dn, ldap.AddAttribute) }))
}

// RemoveFromGroups removes the account at dn from the configured 802.1X
// and wireless groups; not a member is fine.
func (c *Client) RemoveFromGroups(ctx context.Context, dn string) error {
	return fail("remove "+dn+" from groups", c.do(ctx, func(conn *ldap.Conn) error { return c.editGroups(conn, dn, ldap.DeleteAttribute) }))
}

func (c *Client) editGroups(conn *ldap.Conn, dn string, op uint) error {
	groups := slices.Concat(c.cfg.Groups8021X, c.cfg.GroupsWiFi)
	seen := map[string]bool{}
	for _, g := range groups {
		if key := strings.ToLower(g); seen[key] {
			continue
		} else {
			seen[key] = true
		}
		mod := ldap.NewModifyRequest(g, nil)
		if op == ldap.AddAttribute {
			mod.Add("member", []string{dn})
		} else {
			mod.Delete("member", []string{dn})
		}
		err := conn.Modify(mod)
		switch {
		case err == nil:
		case op == ldap.AddAttribute && ldap.IsErrorAnyOf(err, ldap.LDAPResultAttributeOrValueExists, ldap.LDAPResultEntryAlreadyExists):
			// already a member
		case op == ldap.DeleteAttribute && isNotMember(err):
			// not a member
		case op == ldap.DeleteAttribute && ldap.IsErrorWithCode(err, ldap.LDAPResultUnwillingToPerform):
			// Samba says "already deleted" when the link was removed before;
			// check membership rather than trusting a message text.
			if member, cerr := isMember(conn, g, dn); cerr != nil || member {
				return fmt.Errorf("group %s: %w", g, err)
			}
		default:
			return fmt.Errorf("group %s: %w", g, err)
		}
	}
	return nil
}

// isNotMember recognises "not a member" on member removal: RFC 4511
// noSuchAttribute, or AD's unwillingToPerform with ERROR_MEMBER_NOT_IN_GROUP
// (00000561).
func isNotMember(err error) bool {
	if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchAttribute) {
		return true
	}
	var le *ldap.Error
	return ldap.IsErrorWithCode(err, ldap.LDAPResultUnwillingToPerform) &&
		errors.As(err, &le) && le.Err != nil && strings.Contains(le.Err.Error(), "00000561")
}

// isMember reports whether group lists dn in member.
func isMember(conn *ldap.Conn, group, dn string) (bool, error) {
	res, err := conn.Search(ldap.NewSearchRequest(group, ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		1, 0, false, equalityFilter("member", dn), []string{"1.1"}, nil))
	if err != nil {
		return false, err
	}
	return len(res.Entries) > 0, nil
}
