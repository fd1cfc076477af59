package amt

import (
	"context"
	"crypto/md5"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/amtops/amtops/internal/wsman"
)

// AdminDigestPassword is SetAdminAclEntryEx's DigestPassword: base64 of the
// raw MD5 of "<username>:<DigestRealm>:<password>" (the HTTP digest HA1).
func AdminDigestPassword(username, realm, password string) string {
	sum := md5.Sum([]byte(username + ":" + realm + ":" + password))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// SetAdminPassword sets the admin account's name and password (S10). realm
// is the device's DigestRealm; empty means read it from AMT_GeneralSettings.
// The next request must use the new credentials (a new wsman.Client).
func (c *Client) SetAdminPassword(ctx context.Context, username, password, realm string) error {
	if err := ValidateUserName(username); err != nil {
		return err
	}
	if err := ValidatePassword(password); err != nil {
		return err
	}
	if realm == "" {
		gs, err := c.GeneralSettings(ctx)
		if err != nil {
			return err
		}
		realm = gs.DigestRealm
	}
	_, err := c.invoke(ctx, "set admin acl entry", URIAuthorizationService, "SetAdminAclEntryEx", nil,
		field("Username", username), field("DigestPassword", AdminDigestPassword(username, realm, password)))
	return err
}

// maxACLPages bounds paging through EnumerateUserAclEntries.
const maxACLPages = 64

// UserACLHandles lists the handles of all user ACL entries, following
// TotalCount across pages (StartIndex is 1-based).
func (c *Client) UserACLHandles(ctx context.Context) ([]int, error) {
	var handles []int
	start := 1
	for page := 0; page < maxACLPages; page++ {
		out, err := c.invokeRead(ctx, "enumerate user acl entries", URIAuthorizationService, "EnumerateUserAclEntries", nil,
			intField("StartIndex", start))
		if err != nil {
			return nil, err
		}
		total, got, err := parseACLPage(out)
		if err != nil {
			return nil, err
		}
		handles = append(handles, got...)
		if len(got) == 0 || len(handles) >= total {
			return handles, nil
		}
		start += len(got)
	}
	return nil, fmt.Errorf("amt: enumerate user acl entries: more than %d pages", maxACLPages)
}

func parseACLPage(out *wsman.Node) (total int, handles []int, err error) {
	f := read(out, "EnumerateUserAclEntries_OUTPUT")
	total = f.int("TotalCount")
	handles = f.ints("Handles")
	return total, handles, f.err
}

// Access permissions and realms of user ACL entries.
const (
	AccessLocal   = 0
	AccessNetwork = 1
	AccessAny     = 2
)

// UserACLEntry is one user account (digest or Kerberos).
type UserACLEntry struct {
	Handle           int
	DigestUsername   string
	KerberosUserSid  string // base64 binary SID, for Kerberos entries
	AccessPermission int
	Realms           []int
}

// System reports whether the entry is a firmware system account ($$…),
// which cannot and must not be removed.
func (e UserACLEntry) System() bool { return strings.HasPrefix(e.DigestUsername, "$$") }

// UserACLEntry reads one entry by handle.
func (c *Client) UserACLEntry(ctx context.Context, handle int) (*UserACLEntry, error) {
	out, err := c.invokeRead(ctx, "get user acl entry", URIAuthorizationService, "GetUserAclEntryEx", nil, intField("Handle", handle))
	if err != nil {
		return nil, err
	}
	e, err := parseUserACLEntry(out)
	if err != nil {
		return nil, err
	}
	e.Handle = handle
	return e, nil
}

func parseUserACLEntry(out *wsman.Node) (*UserACLEntry, error) {
	f := read(out, "GetUserAclEntryEx_OUTPUT")
	e := &UserACLEntry{
		DigestUsername:   f.str("DigestUsername"),
		KerberosUserSid:  f.str("KerberosUserSid"),
		AccessPermission: f.int("AccessPermission"),
		Realms:           f.ints("Realms"),
	}
	return e, f.err
}

// RemoveUserACLEntry deletes one user account by handle.
func (c *Client) RemoveUserACLEntry(ctx context.Context, handle int) error {
	_, err := c.invoke(ctx, "remove user acl entry", URIAuthorizationService, "RemoveUserAclEntry", nil, intField("Handle", handle))
	return err
}

// RemoveUsers removes every user account except system ($$) ones (S10) and
// returns the names removed (Kerberos entries appear as their SID).
func (c *Client) RemoveUsers(ctx context.Context) ([]string, error) {
	handles, err := c.UserACLHandles(ctx)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, h := range handles {
		e, err := c.UserACLEntry(ctx, h)
		if err != nil {
			return removed, err
		}
		if e.System() {
			continue
		}
		if err := c.RemoveUserACLEntry(ctx, h); err != nil {
			return removed, err
		}
		name := e.DigestUsername
		if name == "" {
			name = "sid:" + e.KerberosUserSid
		}
		removed = append(removed, name)
	}
	return removed, nil
}
