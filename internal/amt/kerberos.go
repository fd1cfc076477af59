package amt

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/amtops/amtops/internal/wsman"
)

// AMT realms (AMT_AuthorizationService RealmValues) an ACL entry grants.
const (
	RealmRedirection         = 2
	RealmPTAdministration    = 3
	RealmHardwareAsset       = 4
	RealmRemoteControl       = 5
	RealmStorage             = 6
	RealmEventManager        = 7
	RealmStorageAdmin        = 8
	RealmAgentPresenceLocal  = 9
	RealmAgentPresenceRemote = 10
	RealmCircuitBreaker      = 11
	RealmNetworkTime         = 12
	RealmGeneralInfo         = 13
	RealmEventLogReader      = 19
	RealmAuditLog            = 20
	RealmUserAccessControl   = 21
	realmMax                 = 24 // LocalApps, the highest AMT defines
)

// AdminRealms are the realms a network administrator gets: every realm AMT
// 11+ serves remotely, without the local-only ones (9 agent presence
// local, 16 local user notification, 24 local apps), those gone from
// recent firmware (14 firmware update, 15 EIT; 17 and 18 endpoint access
// control from CSME 18) and the audit log (20), which AMT keeps for a
// separate auditor.
func AdminRealms() []int {
	return []int{RealmRedirection, RealmPTAdministration, RealmHardwareAsset, RealmRemoteControl, RealmStorage,
		RealmEventManager, RealmStorageAdmin, RealmAgentPresenceRemote, RealmCircuitBreaker, RealmNetworkTime,
		RealmGeneralInfo, RealmEventLogReader, RealmUserAccessControl}
}

// AddKerberosUser adds an ACL entry for a Windows account or group by SID
// (binary form) with the given access and realms; returns its handle. An
// entry must name its realms (AdminRealms for administrators): AMT refuses
// one without.
func (c *Client) AddKerberosUser(ctx context.Context, sid []byte, access int, realms []int) (int, error) {
	if len(sid) < 8 || len(sid) > 68 {
		return 0, fmt.Errorf("amt: add kerberos user: KerberosUserSid is %d bytes, want a binary SID (8–68)", len(sid))
	}
	if access < AccessLocal || access > AccessAny {
		return 0, fmt.Errorf("amt: add kerberos user: AccessPermission %d is not 0, 1 or 2", access)
	}
	if len(realms) == 0 {
		return 0, errors.New("amt: add kerberos user: Realms is empty (administrators get amt.AdminRealms)")
	}
	in := []wsman.Field{
		field("KerberosUserSid", base64.StdEncoding.EncodeToString(sid)),
		intField("AccessPermission", access),
	}
	for _, r := range realms {
		if r < RealmRedirection || r > realmMax {
			return 0, fmt.Errorf("amt: add kerberos user: Realms: %d is not an AMT realm (2–%d)", r, realmMax)
		}
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

// Kerberos encryption algorithms (AMT 8+ Supported/ConfiguredEncryptionAlgorithms).
const (
	KerberosRC4HMAC   = 0
	KerberosAES128    = 1
	KerberosAES256    = 2
	MaxClockTolerance = 5 // minutes
)

// KerberosSettingsInstanceID is the single AMT_KerberosSettingData instance
// (note the space in "Intel (r)", as the firmware has it).
const KerberosSettingsInstanceID = "Intel (r) AMT: Kerberos Settings"

// KerberosSettings is AMT_KerberosSettingData. The key reaches the
// firmware one of two ways, never both: MasterKey, a 16-byte RC4-HMAC key;
// or (AMT 8+) Passphrase + Salt + IterationCount, from which the firmware
// derives its AES keys (and RC4). SetKey picks the way.
type KerberosSettings struct {
	InstanceID                     string
	RealmName                      string
	ServicePrincipalName           []string
	ServicePrincipalProtocol       []int
	KeyVersion                     int
	EncryptionAlgorithm            int
	MasterKey                      []byte // 16 bytes, RC4-HMAC only; write-only on the device
	Passphrase                     string // write-only; the AMT account's password
	Salt                           string
	IterationCount                 int
	MaximumClockTolerance          int
	KrbEnabled                     bool
	SupportedEncryptionAlgorithms  []int // read-only; absent before AMT 8
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
		Salt:                           f.str("Salt"),
		IterationCount:                 f.int("IterationCount"),
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

// KerberosKey is what the site knows of the AMT account's key.
type KerberosKey struct {
	Passphrase     string // the account's password, for AES on AMT 8+
	Salt           string // the account's AES salt (krbkey.ComputerSalt)
	IterationCount int    // PBKDF2 iterations; AD and Samba use 4096
	RC4Key         []byte // MD4 of the UTF-16LE password, 16 bytes
	// EType is the RFC 3961 etype the KDC encrypts service tickets with:
	// the strongest the account's msDS-SupportedEncryptionTypes allows
	// (18 AES256, 17 AES128, 23 RC4-HMAC, as krbkey.Strongest).
	EType int32
}

var aesAlgorithm = map[int32]int{17: KerberosAES128, 18: KerberosAES256}

// SetKey sets k's key the way the firmware takes it: for an AES ticket
// key, Passphrase, Salt and IterationCount (the firmware derives the keys
// and configures RC4 plus the AES algorithms it supports) and no
// MasterKey; for RC4, the 16-byte MasterKey alone. A firmware that cannot
// hold the key the KDC will use is an error naming what to change.
func (k *KerberosSettings) SetKey(key KerberosKey) error {
	if alg, ok := aesAlgorithm[key.EType]; ok {
		switch {
		case !slices.Contains(k.SupportedEncryptionAlgorithms, alg):
			return fmt.Errorf("amt: kerberos key: the KDC encrypts with etype %d, which this firmware does not support (SupportedEncryptionAlgorithms %v): allow only RC4 on its AMT account", key.EType, k.SupportedEncryptionAlgorithms)
		case key.Passphrase == "":
			return errors.New("amt: kerberos key: Passphrase is empty (AES keys are derived on the device)")
		case key.Salt == "":
			return errors.New("amt: kerberos key: Salt is empty")
		case key.IterationCount <= 0:
			return fmt.Errorf("amt: kerberos key: IterationCount %d, want > 0", key.IterationCount)
		}
		k.MasterKey = nil
		k.Passphrase, k.Salt, k.IterationCount = key.Passphrase, key.Salt, key.IterationCount
		k.ConfiguredEncryptionAlgorithms = nil
		for _, a := range []int{KerberosRC4HMAC, KerberosAES128, KerberosAES256} {
			if slices.Contains(k.SupportedEncryptionAlgorithms, a) {
				k.ConfiguredEncryptionAlgorithms = append(k.ConfiguredEncryptionAlgorithms, a)
			}
		}
		return nil
	}
	if key.EType != 23 {
		return fmt.Errorf("amt: kerberos key: EType %d is not 17, 18 or 23", key.EType)
	}
	if len(key.RC4Key) != 16 {
		return fmt.Errorf("amt: kerberos key: RC4Key is %d bytes, want 16", len(key.RC4Key))
	}
	k.MasterKey = append([]byte(nil), key.RC4Key...)
	k.Passphrase, k.Salt, k.IterationCount = "", "", 0
	k.EncryptionAlgorithm = KerberosRC4HMAC
	k.ConfiguredEncryptionAlgorithms = nil
	if len(k.SupportedEncryptionAlgorithms) > 0 { // AMT 8+
		k.ConfiguredEncryptionAlgorithms = []int{KerberosRC4HMAC}
	}
	return nil
}

// checkKey enforces the firmware's rule: MasterKey (16 bytes, RC4 only) or
// Passphrase + Salt + IterationCount, never both, never a 32-byte key.
func (k *KerberosSettings) checkKey() error {
	const op = "amt: put kerberos settings: "
	aes := slices.Contains(k.ConfiguredEncryptionAlgorithms, KerberosAES128) || slices.Contains(k.ConfiguredEncryptionAlgorithms, KerberosAES256)
	switch n := len(k.MasterKey); {
	case n > 0 && k.Passphrase != "":
		return errors.New(op + "MasterKey and Passphrase are both set: the firmware takes one or the other")
	case n > 0 && n != 16:
		return fmt.Errorf(op+"MasterKey is %d bytes: AMT takes a 16-byte RC4-HMAC key only; AES keys come from Passphrase, Salt and IterationCount", n)
	case n > 0 && aes:
		return fmt.Errorf(op+"MasterKey is an RC4-HMAC key, but ConfiguredEncryptionAlgorithms %v lists AES", k.ConfiguredEncryptionAlgorithms)
	case k.Passphrase != "" && k.Salt == "":
		return errors.New(op + "Passphrase without Salt")
	case k.Passphrase != "" && k.IterationCount <= 0:
		return fmt.Errorf(op+"Passphrase with IterationCount %d, want > 0", k.IterationCount)
	case aes && k.Passphrase == "":
		return fmt.Errorf(op+"ConfiguredEncryptionAlgorithms %v lists AES without a Passphrase", k.ConfiguredEncryptionAlgorithms)
	case k.KrbEnabled && n == 0 && k.Passphrase == "":
		return errors.New(op + "Kerberos on without a key: set MasterKey (RC4) or Passphrase (AES), see SetKey")
	}
	return nil
}

func itoas(v []int) []string {
	out := make([]string, len(v))
	for i, x := range v {
		out[i] = strconv.Itoa(x)
	}
	return out
}

// PutKerberosSettings writes k (read with KerberosSettings, then modified,
// normally with SetKey) back as a whole instance (S10).
func (c *Client) PutKerberosSettings(ctx context.Context, k *KerberosSettings) error {
	if k == nil || k.raw.Class == "" {
		return errors.New("amt: put kerberos settings: settings were not read from the device")
	}
	if k.KrbEnabled && k.RealmName == "" {
		return errors.New("amt: put kerberos settings: RealmName is empty")
	}
	if err := k.checkKey(); err != nil {
		return err
	}
	if k.MaximumClockTolerance < 0 || k.MaximumClockTolerance > MaxClockTolerance {
		return fmt.Errorf("amt: put kerberos settings: MaximumClockTolerance %d outside 1..%d", k.MaximumClockTolerance, MaxClockTolerance)
	}
	if len(k.ServicePrincipalProtocol) != 0 && len(k.ServicePrincipalProtocol) != len(k.ServicePrincipalName) {
		return errors.New("amt: put kerberos settings: ServicePrincipalProtocol and ServicePrincipalName differ in length")
	}
	in := k.raw
	in.Fields = append([]wsman.Field(nil), k.raw.Fields...)
	// The key fields are written fresh: whatever a Get showed of them is
	// not sent back, so one way never rides along with the other.
	in.Remove("MasterKey", "Passphrase", "Salt", "IterationCount")
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
	if k.Passphrase != "" {
		in.Set("Passphrase", k.Passphrase)
		in.Set("Salt", k.Salt)
		in.Set("IterationCount", strconv.Itoa(k.IterationCount))
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
