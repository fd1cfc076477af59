// Package krbkey derives the Kerberos long-term keys that Intel AMT needs
// from the password the site set on the AMT account in Active Directory.
//
// AMT only ever sees a key, never the password: RC4-HMAC (MD4 of the
// UTF-16LE password, unsalted) for every AMT version, and AES128/AES256
// (RFC 3962 PBKDF2 string-to-key, 4096 iterations) for AMT 8 and later. The
// KDC encrypts a service ticket with the strongest type allowed by the
// account's msDS-SupportedEncryptionTypes, so the key handed to AMT must be
// derived for that same type and salt; Strongest picks it.
//
// The AES salt is computed from the account (ComputerSalt), which is what
// AD and Samba do for computer accounts: "<REALM>host<sam-without-$,
// lower-case>.<realm lower-case>". SaltsFromKDC asks the KDC itself (the
// PA-ETYPE-INFO2 of a pre-authentication-required error) and is used by the
// tests to prove that both agree; callers may use it to double-check.
//
// The crypto is gokrb5's; nothing here re-implements a cipher.
package krbkey

import (
	"fmt"
	"strings"

	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/types"
)

// Encryption type numbers (RFC 3961/3962/4757) and the matching bits of
// msDS-SupportedEncryptionTypes.
const (
	RC4HMAC    int32  = etypeID.RC4_HMAC                // 23
	AES128     int32  = etypeID.AES128_CTS_HMAC_SHA1_96 // 17
	AES256     int32  = etypeID.AES256_CTS_HMAC_SHA1_96 // 18
	BitRC4     uint32 = 0x4
	BitAES128  uint32 = 0x8
	BitAES256  uint32 = 0x10
	DefaultEnc        = BitRC4 | BitAES128 | BitAES256 // 28
)

// Key is one long-term key for the AMT account.
type Key struct {
	EType int32  // RC4HMAC, AES128 or AES256
	Value []byte // raw key bytes: 16 for RC4 and AES128, 32 for AES256
	KVNO  int    // key version number (msDS-KeyVersionNumber)
	Salt  string // empty for RC4
}

// Name is the etype's usual name, for logs and errors.
func (k Key) Name() string { return ETypeName(k.EType) }

// String never prints the key bytes.
func (k Key) String() string { return fmt.Sprintf("%s kvno %d", k.Name(), k.KVNO) }

// EncryptionKey converts to gokrb5's type (for decrypting tickets in tests
// and tools).
func (k Key) EncryptionKey() types.EncryptionKey {
	return types.EncryptionKey{KeyType: k.EType, KeyValue: append([]byte(nil), k.Value...)}
}

// ETypeName names an encryption type.
func ETypeName(e int32) string {
	switch e {
	case RC4HMAC:
		return "rc4-hmac"
	case AES128:
		return "aes128-cts-hmac-sha1-96"
	case AES256:
		return "aes256-cts-hmac-sha1-96"
	}
	return fmt.Sprintf("etype-%d", e)
}

// Derive computes the key of type etype from password. salt is ignored for
// RC4 and required for AES.
func Derive(password string, etype int32, salt string, kvno int) (Key, error) {
	if password == "" {
		return Key{}, fmt.Errorf("krbkey: derive %s: password: empty", ETypeName(etype))
	}
	switch etype {
	case RC4HMAC:
		salt = ""
	case AES128, AES256:
		if salt == "" {
			return Key{}, fmt.Errorf("krbkey: derive %s: salt: empty", ETypeName(etype))
		}
	default:
		return Key{}, fmt.Errorf("krbkey: derive: etype %d: not supported (want 23, 17 or 18)", etype)
	}
	et, err := crypto.GetEtype(etype)
	if err != nil {
		return Key{}, fmt.Errorf("krbkey: derive %s: %w", ETypeName(etype), err)
	}
	v, err := et.StringToKey(password, salt, et.GetDefaultStringToKeyParams())
	if err != nil {
		return Key{}, fmt.Errorf("krbkey: derive %s: %w", ETypeName(etype), err)
	}
	return Key{EType: etype, Value: v, KVNO: kvno, Salt: salt}, nil
}

// DeriveAll derives one key per type enabled in supportedEncTypes (the
// msDS-SupportedEncryptionTypes bits), strongest first.
func DeriveAll(password, salt string, kvno int, supportedEncTypes uint32) ([]Key, error) {
	var out []Key
	for _, e := range ETypes(supportedEncTypes) {
		k, err := Derive(password, e, salt, kvno)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("krbkey: derive: supported encryption types %#x: none of RC4, AES128, AES256", supportedEncTypes)
	}
	return out, nil
}

// ETypes lists the etypes enabled by msDS-SupportedEncryptionTypes bits,
// strongest first.
func ETypes(supportedEncTypes uint32) []int32 {
	var out []int32
	if supportedEncTypes&BitAES256 != 0 {
		out = append(out, AES256)
	}
	if supportedEncTypes&BitAES128 != 0 {
		out = append(out, AES128)
	}
	if supportedEncTypes&BitRC4 != 0 {
		out = append(out, RC4HMAC)
	}
	return out
}

// Strongest is the etype the KDC uses for service tickets to an account with
// these msDS-SupportedEncryptionTypes bits (0 when none is usable).
func Strongest(supportedEncTypes uint32) int32 {
	if e := ETypes(supportedEncTypes); len(e) > 0 {
		return e[0]
	}
	return 0
}

// ComputerSalt is the AES salt AD and Samba use for a computer account:
// realm upper-case, then "host", then the sAMAccountName without its
// trailing "$" in lower case, ".", the realm in lower case.
// ComputerSalt("amt.test", "PC01-AMT$") = "AMT.TESThostpc01-amt.amt.test".
func ComputerSalt(realm, samAccountName string) string {
	name := strings.ToLower(strings.TrimSuffix(samAccountName, "$"))
	return strings.ToUpper(realm) + "host" + name + "." + strings.ToLower(realm)
}

// ComputerSaltPrincipal is the principal whose name ComputerSalt encodes,
// "host/<name>.<realm lower>@<REALM>", as shown by samba-tool and klist.
func ComputerSaltPrincipal(realm, samAccountName string) string {
	name := strings.ToLower(strings.TrimSuffix(samAccountName, "$"))
	return "host/" + name + "." + strings.ToLower(realm) + "@" + strings.ToUpper(realm)
}
