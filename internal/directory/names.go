package directory

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/big"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/go-ldap/ldap/v3"

	"github.com/amtops/amtops/internal/domain"
)

// AMT's service ports; S5 registers one SPN per port, port-qualified only,
// so that they never collide with the Windows computer's HOST/ SPNs.
var amtPorts = [...]int{16992, 16993, 16994, 16995}

// SPNs are the service principal names of the AMT account for fqdn:
// HTTP/<fqdn>:16992 … :16995, the FQDN lower-cased.
func SPNs(fqdn string) []string {
	fqdn = strings.ToLower(strings.TrimSuffix(fqdn, "."))
	out := make([]string, 0, len(amtPorts))
	for _, p := range amtPorts {
		out = append(out, fmt.Sprintf("HTTP/%s:%d", fqdn, p))
	}
	return out
}

const (
	maxSAM     = 15 // sAMAccountName of a computer, without the "$"
	maxCN      = 64 // rangeUpper of cn
	hashLen    = 6  // hex characters of SHA-256 used to keep shortened names unique
	maxSuffix  = 8
	maxNameLen = 63
)

// AccountNames derives the AMT account's names from the Windows computer
// name and the configured suffix:
//
//   - cn is the computer name plus suffix, exactly ("PC01" -> "PC01-amt");
//     it may contain any character (it is escaped in DNs).
//   - sam (without the trailing "$") is cn upper-cased when it fits in 15
//     characters and uses only [A-Z0-9_-]. Otherwise every other character
//     becomes "-", and the name is cut and made unique again with six hex
//     digits of SHA-256 of the lower-cased computer name placed before the
//     suffix: "WORKSTATION-0042" -> "WORKS3F9A1C-AMT". Computer names are
//     case-insensitive, so the hash is too. Two names that still collide are
//     refused by Publish with a conflict naming the other object.
func AccountNames(computerName, suffix string) (cn, sam string, err error) {
	if err := validComputerName(computerName); err != nil {
		return "", "", err
	}
	if err := validSuffix(suffix); err != nil {
		return "", "", err
	}
	cn = computerName + suffix
	if utf8.RuneCountInString(cn) > maxCN {
		return "", "", domain.InvalidField("computer_name", computerName, fmt.Sprintf("with suffix %q longer than %d characters", suffix, maxCN))
	}
	clean, changed := samClean(computerName)
	if !changed && len(clean)+len(suffix) <= maxSAM {
		return cn, strings.ToUpper(clean + suffix), nil
	}
	sum := sha256.Sum256([]byte(strings.ToLower(computerName)))
	room := maxSAM - len(suffix) - hashLen
	if len(clean) > room {
		clean = clean[:room]
	}
	return cn, strings.ToUpper(clean + hex.EncodeToString(sum[:])[:hashLen] + suffix), nil
}

// samClean keeps [A-Za-z0-9_-] and turns anything else into "-".
func samClean(s string) (string, bool) {
	var b strings.Builder
	changed := false
	for _, r := range s {
		if samChar(r) {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
			changed = true
		}
	}
	return b.String(), changed
}

func samChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_'
}

func validComputerName(name string) error {
	if name == "" {
		return domain.InvalidField("computer_name", "", "required")
	}
	if utf8.RuneCountInString(name) > maxNameLen {
		return domain.InvalidField("computer_name", name, fmt.Sprintf("longer than %d characters", maxNameLen))
	}
	if !utf8.ValidString(name) {
		return domain.InvalidField("computer_name", name, "not UTF-8")
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return domain.InvalidField("computer_name", name, "contains a control character")
		}
	}
	return nil
}

func validSuffix(s string) error {
	if s == "" || len(s) > maxSuffix {
		return domain.InvalidField("directory.account_suffix", s, fmt.Sprintf("must be 1 to %d characters (the AMT account must not take the Windows computer's name)", maxSuffix))
	}
	for _, r := range s {
		if !samChar(r) {
			return domain.InvalidField("directory.account_suffix", s, "only letters, digits, '-' and '_' are allowed")
		}
	}
	return nil
}

// EscapeRDNValue escapes a value for use in an RDN (RFC 4514 section 2.4):
// `, + " \ < > ; =` anywhere, '#' and space at the start, space at the end,
// and control characters as \XX. Other UTF-8 is kept as is, as AD does.
func EscapeRDNValue(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == ',' || c == '+' || c == '"' || c == '\\' || c == '<' || c == '>' || c == ';' || c == '=':
			b.WriteByte('\\')
			b.WriteByte(c)
		case i == 0 && (c == '#' || c == ' '):
			b.WriteByte('\\')
			b.WriteByte(c)
		case i == len(v)-1 && c == ' ':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, "\\%02X", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// accountDN is the DN of the AMT account cn in the organisational unit ou.
func accountDN(cn, ou string) string { return "CN=" + EscapeRDNValue(cn) + "," + ou }

// equalityFilter matches attr equal to value, whatever value holds.
func equalityFilter(attr, value string) string {
	return "(" + attr + "=" + ldap.EscapeFilter(value) + ")"
}

// computerFilters find a Windows computer by name: its sAMAccountName
// (name$), then its cn.
func computerFilters(name string) []string {
	return []string{
		"(&(objectClass=computer)" + equalityFilter("sAMAccountName", name+"$") + ")",
		"(&(objectClass=computer)" + equalityFilter("cn", name) + ")",
	}
}

// passwordAlphabet avoids characters that trouble AMT or shells
// (: , " ' < > & space backslash) while giving all four AD complexity
// classes.
const (
	pwUpper   = "ABCDEFGHJKLMNPQRSTUVWXYZ"
	pwLower   = "abcdefghijkmnopqrstuvwxyz"
	pwDigits  = "23456789"
	pwSymbols = "!#%()*+-./=?@[]^_{}~"
	pwLength  = 32
)

// NewPassword returns a random password of 32 characters with at least one
// upper-case letter, lower-case letter, digit and symbol (AD complexity).
func NewPassword() (string, error) {
	all := pwUpper + pwLower + pwDigits + pwSymbols
	pick := func(set string) (byte, error) {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(set))))
		if err != nil {
			return 0, fmt.Errorf("directory: random password: %w", err)
		}
		return set[n.Int64()], nil
	}
	out := make([]byte, pwLength)
	for i := range out {
		set := all
		if i < 4 {
			set = [...]string{pwUpper, pwLower, pwDigits, pwSymbols}[i]
		}
		c, err := pick(set)
		if err != nil {
			return "", err
		}
		out[i] = c
	}
	// Shuffle so the classes are not at fixed positions.
	for i := len(out) - 1; i > 0; i-- {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(i+1)))
		if err != nil {
			return "", fmt.Errorf("directory: random password: %w", err)
		}
		j := n.Int64()
		out[i], out[j] = out[j], out[i]
	}
	return string(out), nil
}

// unicodePwd is the value AD wants for a password: the password in double
// quotes, encoded UTF-16LE.
func unicodePwd(password string) string {
	u := utf16.Encode([]rune(`"` + password + `"`))
	b := make([]byte, 2*len(u))
	for i, r := range u {
		binary.LittleEndian.PutUint16(b[2*i:], r)
	}
	return string(b)
}
