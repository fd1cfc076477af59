package amt

import (
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
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

// AddKerberosUser adds an ACL entry for a Windows account or group by SID
// (binary form) with the given access and realms; returns its handle.
func (c *Client) AddKerberosUser(ctx context.Context, sid []byte, access int, realms []int) (int, error) {
	if len(sid) < 8 || len(sid) > 68 {
		return 0, fmt.Errorf("amt: add kerberos user: KerberosUserSid is %d bytes, want a binary SID (8–68)", len(sid))
	}
	if len(realms) == 0 {
		return 0, errors.New("amt: add kerberos user: Realms is empty")
	}
	in := []wsman.Field{
		field("KerberosUserSid", base64.StdEncoding.EncodeToString(sid)),
		intField("AccessPermission", access),
	}
	for _, r := range realms {
		in = append(in, intField("Realms", r))
	}
	out, err := c.invoke(ctx, "add kerberos user acl entry", URIAuthorizationService, "AddUserAclEntryEx", nil, in...)
	if err != nil {
		return 0, err
	}
	h, err := strconv.Atoi(out.Get("Handle"))
	if err != nil {
		return 0, fmt.Errorf("amt: add kerberos user acl entry: %w: Handle %q", wsman.ErrMalformed, out.Get("Handle"))
	}
	return h, nil
}

// Kerberos encryption algorithms (AMT 8+ ConfiguredEncryptionAlgorithms).
const (
	KerberosRC4HMAC   = 0
	KerberosAES128    = 1
	KerberosAES256    = 2
	MaxClockTolerance = 5 // minutes
)

// KerberosSettingsInstanceID is the single AMT_KerberosSettingData instance
// (note the space in "Intel (r)", as the firmware has it).
const KerberosSettingsInstanceID = "Intel (r) AMT: Kerberos Settings"

// KerberosSettings is AMT_KerberosSettingData.
type KerberosSettings struct {
	InstanceID                     string
	RealmName                      string
	ServicePrincipalName           []string
	ServicePrincipalProtocol       []int
	KeyVersion                     int
	EncryptionAlgorithm            int
	MasterKey                      []byte // 16 bytes (RC4-HMAC) or 32 (AES-256); write-only on the device
	MaximumClockTolerance          int
	KrbEnabled                     bool
	SupportedEncryptionAlgorithms  []int // read-only
	ConfiguredEncryptionAlgorithms []int

	raw wsman.Instance
}

func parseKerberosSettings(n *wsman.Node) (*KerberosSettings, error) {
	f := read(n, "AMT_KerberosSettingData")
	k := &KerberosSettings{
		InstanceID:                     f.str("InstanceID"),
		RealmName:                      f.str("RealmName"),
		ServicePrincipalName:           f.strs("ServicePrincipalName"),
		ServicePrincipalProtocol:       f.ints("ServicePrincipalProtocol"),
		KeyVersion:                     f.int("KeyVersion"),
		EncryptionAlgorithm:            f.int("EncryptionAlgorithm"),
		MasterKey:                      f.b64("MasterKey"),
		MaximumClockTolerance:          f.int("MaximumClockTolerance"),
		KrbEnabled:                     f.bool("KrbEnabled"),
		SupportedEncryptionAlgorithms:  f.ints("SupportedEncryptionAlgorithms"),
		ConfiguredEncryptionAlgorithms: f.ints("ConfiguredEncryptionAlgorithms"),
		raw:                            wsman.InstanceFromNode(URIKerberosSettingData, n),
	}
	return k, f.err
}

// KerberosSettings reads AMT_KerberosSettingData.
func (c *Client) KerberosSettings(ctx context.Context) (*KerberosSettings, error) {
	n, err := c.get(ctx, "get kerberos settings", URIKerberosSettingData)
	if err != nil {
		return nil, err
	}
	return parseKerberosSettings(n)
}

func itoas(v []int) []string {
	out := make([]string, len(v))
	for i, x := range v {
		out[i] = strconv.Itoa(x)
	}
	return out
}

// PutKerberosSettings writes k (read with KerberosSettings, then modified)
// back as a whole instance (S10).
func (c *Client) PutKerberosSettings(ctx context.Context, k *KerberosSettings) error {
	if k == nil || k.raw.Class == "" {
		return errors.New("amt: put kerberos settings: settings were not read from the device")
	}
	if k.KrbEnabled {
		if k.RealmName == "" {
			return errors.New("amt: put kerberos settings: RealmName is empty")
		}
	}
	// 16 bytes is the RC4-HMAC key every firmware takes; 32 (AES-256) only
	// where SupportedEncryptionAlgorithms lists 2.
	if n := len(k.MasterKey); (k.KrbEnabled || n > 0) && n != 16 && n != 32 {
		return fmt.Errorf("amt: put kerberos settings: MasterKey is %d bytes, want 16 (or 32 for AES-256)", n)
	}
	if k.MaximumClockTolerance < 0 || k.MaximumClockTolerance > MaxClockTolerance {
		return fmt.Errorf("amt: put kerberos settings: MaximumClockTolerance %d outside 1..%d", k.MaximumClockTolerance, MaxClockTolerance)
	}
	if len(k.ServicePrincipalProtocol) != 0 && len(k.ServicePrincipalProtocol) != len(k.ServicePrincipalName) {
		return errors.New("amt: put kerberos settings: ServicePrincipalProtocol and ServicePrincipalName differ in length")
	}
	in := k.raw
	in.Fields = append([]wsman.Field(nil), k.raw.Fields...)
	in.Set("RealmName", k.RealmName)
	in.SetAll("ServicePrincipalName", k.ServicePrincipalName...)
	in.SetAll("ServicePrincipalProtocol", itoas(k.ServicePrincipalProtocol)...)
	in.Set("KeyVersion", strconv.Itoa(k.KeyVersion))
	if len(k.ConfiguredEncryptionAlgorithms) > 0 {
		in.SetAll("ConfiguredEncryptionAlgorithms", itoas(k.ConfiguredEncryptionAlgorithms)...)
	} else {
		in.Set("EncryptionAlgorithm", strconv.Itoa(k.EncryptionAlgorithm))
	}
	if len(k.MasterKey) > 0 {
		in.Set("MasterKey", base64.StdEncoding.EncodeToString(k.MasterKey))
	}
	if k.MaximumClockTolerance > 0 { // 0: leave the device's value
		in.Set("MaximumClockTolerance", strconv.Itoa(k.MaximumClockTolerance))
	}
	in.Set("KrbEnabled", fmtBool(k.KrbEnabled))
	in.SortFields()
	id := k.InstanceID
	if id == "" {
		id = KerberosSettingsInstanceID
	}
	_, err := c.put(ctx, "put kerberos settings", in, sel("InstanceID", id)...)
	return err
}
