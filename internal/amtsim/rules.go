package amtsim

import (
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// ReturnValues of AMT methods (AMT-WSMAN.md and the AMT SDK status list).
const (
	rvSuccess          = 0
	rvInternalError    = 1
	rvNotPermitted     = 16
	rvMaxLimit         = 23
	rvInvalidParameter = 36
	rvInvalidHandle    = 2053
	rvInvalidPassword  = 2054
	rvDataMissing      = 2057
	rvDuplicate        = 2058
	rvInvalidKey       = 2062
	rvInvalidCert      = 2063
	rvCertKeyMismatch  = 2064
	rvNotFound         = 2068 // not "duplicate key": that is 2058
	rvInvalidState     = 5    // CIM RequestStateChange: invalid parameter
)

// Firmware limits. Real AMT sizes its NVRAM tables roughly like this; the
// exact numbers vary by version and only the existence of a limit matters.
const (
	maxCertificates = 16 // AddTrustedRootCertificate + AddCertificate → 23 beyond
	maxKeys         = 8  // AddKey + GenerateKeyPair → 23 beyond
	maxUserEntries  = 7  // AddUserAclEntryEx → 23 beyond ($$ entries don't count)
	maxWiFiProfiles = 8  // AddWiFiSettings → 23 beyond
	maxUserName     = 16
	maxHostName     = 63
	maxDomainName   = 191
	maxClockTol     = 5 // AMT_KerberosSettingData.MaximumClockTolerance, minutes
	maxCAKeyBitsOld = 2048
)

// checkPassword is the AMT admin/MEBx password rule: 8–32 printable 7-bit
// ASCII with a digit, a lower-case and an upper-case letter and a
// non-alphanumeric character where '_' does not count; ':' ',' '"' are
// forbidden (they break the digest header). Firmware answers 2054.
func checkPassword(p string) error {
	if len(p) < 8 || len(p) > 32 {
		return fmt.Errorf("length %d not in 8..32", len(p))
	}
	var digit, lower, upper, symbol bool
	for _, r := range p {
		switch {
		case r < 0x20 || r > 0x7e:
			return errors.New("non-printable or non-ASCII character")
		case r == ':' || r == ',' || r == '"':
			return fmt.Errorf("forbidden character %q", r)
		case r >= '0' && r <= '9':
			digit = true
		case r >= 'a' && r <= 'z':
			lower = true
		case r >= 'A' && r <= 'Z':
			upper = true
		case r == '_':
		default:
			symbol = true
		}
	}
	if !digit || !lower || !upper || !symbol {
		return errors.New("needs a digit, a lower-case, an upper-case and a non-alphanumeric character other than '_'")
	}
	return nil
}

// checkUserName: at most 16 characters, printable ASCII, and names starting
// with "$$" are reserved for firmware system accounts.
func checkUserName(u string) error {
	if u == "" || len(u) > maxUserName {
		return fmt.Errorf("user name length %d not in 1..%d", len(u), maxUserName)
	}
	if strings.HasPrefix(u, "$$") {
		return errors.New("user names starting with $$ are reserved")
	}
	for _, r := range u {
		if r <= 0x20 || r > 0x7e || r == ':' || r == ',' || r == '"' {
			return fmt.Errorf("user name has forbidden character %q", r)
		}
	}
	return nil
}

// ha1 is MD5(user:realm:password), the digest secret AMT keeps.
func ha1(user, realm, password string) [16]byte {
	return md5.Sum([]byte(user + ":" + realm + ":" + password))
}

// decodeDigestPassword: SetAdminAclEntryEx/AddUserAclEntryEx carry
// base64(MD5(user:realm:password)); the firmware cannot see the password,
// so it keeps the hash and uses it as the digest HA1.
func decodeDigestPassword(s string) ([16]byte, bool) {
	var out [16]byte
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != 16 {
		return out, false
	}
	copy(out[:], b)
	return out, true
}

// commitPreconditions: CommitChanges answers 2057 (data missing) when
// mutual TLS is on without a trusted root to check clients against, and,
// for a remote configuration, when the admin password or the clock was
// never set in it (the certificate checks that follow need a clock).
func (d *device) commitPreconditions(st *nvram) int {
	if st.tls8023.enabled && st.tls8023.mutual {
		roots := 0
		for _, ce := range st.certs {
			if ce.trustedRoot {
				roots++
			}
		}
		if roots == 0 {
			return rvDataMissing
		}
	}
	if d.remoteConfig() && (!st.adminSet || !st.clockSet) {
		return rvDataMissing
	}
	return rvSuccess
}
