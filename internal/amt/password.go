package amt

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// Password and user-name limits of AMT firmware.
const (
	MinPasswordLen = 8
	MaxPasswordLen = 32
	MaxUserNameLen = 16
)

// ValidatePassword applies AMT's rules for admin and MEBx passwords:
// 8–32 printable 7-bit ASCII characters with at least one digit, one lower-
// and one upper-case letter and one non-alphanumeric character ('_' does not
// count); ':' ',' '"' are forbidden. The password itself is never in the error.
func ValidatePassword(p string) error {
	if len(p) < MinPasswordLen || len(p) > MaxPasswordLen {
		return fmt.Errorf("amt: password is %d characters, want %d–%d", len(p), MinPasswordLen, MaxPasswordLen)
	}
	var digit, lower, upper, symbol bool
	for i := 0; i < len(p); i++ {
		ch := p[i]
		switch {
		case ch < 0x20 || ch > 0x7e:
			return fmt.Errorf("amt: password character %d is not printable 7-bit ASCII", i+1)
		case ch == ':' || ch == ',' || ch == '"':
			return fmt.Errorf("amt: password contains %q, which AMT forbids", ch)
		case ch >= '0' && ch <= '9':
			digit = true
		case ch >= 'a' && ch <= 'z':
			lower = true
		case ch >= 'A' && ch <= 'Z':
			upper = true
		case ch == '_':
			// allowed, but not a symbol for the complexity rule
		default:
			symbol = true
		}
	}
	var missing []string
	if !digit {
		missing = append(missing, "a digit")
	}
	if !lower {
		missing = append(missing, "a lower-case letter")
	}
	if !upper {
		missing = append(missing, "an upper-case letter")
	}
	if !symbol {
		missing = append(missing, "a symbol other than '_'")
	}
	if len(missing) > 0 {
		return errors.New("amt: password needs " + strings.Join(missing, ", "))
	}
	return nil
}

// ValidateUserName: 1–16 printable ASCII characters, no ':' (it would break
// digest), not starting with "$$" (reserved for firmware system accounts).
func ValidateUserName(u string) error {
	if u == "" || len(u) > MaxUserNameLen {
		return fmt.Errorf("amt: user name is %d characters, want 1–%d", len(u), MaxUserNameLen)
	}
	if strings.HasPrefix(u, "$$") {
		return fmt.Errorf("amt: user name %q starts with $$, reserved for system accounts", u)
	}
	for i := 0; i < len(u); i++ {
		if u[i] <= 0x20 || u[i] > 0x7e || u[i] == ':' || u[i] == '"' || u[i] == ',' {
			return fmt.Errorf("amt: user name %q: character %d not allowed", u, i+1)
		}
	}
	return nil
}

// Character classes GeneratePassword draws from. Symbols leave out what AMT
// forbids (: , ") and what breaks XML, shells or config files (' < > & space
// \ `).
const (
	pwDigits  = "0123456789"
	pwLower   = "abcdefghijkmnopqrstuvwxyz"
	pwUpper   = "ABCDEFGHJKLMNPQRSTUVWXYZ"
	pwSymbols = "!#$%()*+-./;=?@[]^{|}~"
	pwAll     = pwDigits + pwLower + pwUpper + pwSymbols
)

// GeneratedPasswordLen is the length GeneratePassword produces.
const GeneratedPasswordLen = 24

// GeneratePassword returns a random strong password that ValidatePassword
// accepts, reading randomness from rand (crypto/rand.Reader in production).
// Selection is unbiased (rejection sampling).
func GeneratePassword(rand io.Reader) (string, error) {
	if rand == nil {
		return "", errors.New("amt: generate password: no random source")
	}
	b := make([]byte, GeneratedPasswordLen)
	// one of each required class, the rest from the whole alphabet
	classes := []string{pwDigits, pwLower, pwUpper, pwSymbols}
	for i := range b {
		set := pwAll
		if i < len(classes) {
			set = classes[i]
		}
		ch, err := pick(rand, len(set))
		if err != nil {
			return "", err
		}
		b[i] = set[ch]
	}
	// shuffle so the required classes are not at fixed positions
	for i := len(b) - 1; i > 0; i-- {
		j, err := pick(rand, i+1)
		if err != nil {
			return "", err
		}
		b[i], b[j] = b[j], b[i]
	}
	p := string(b)
	if err := ValidatePassword(p); err != nil {
		return "", fmt.Errorf("amt: generate password: %w", err) // unreachable by construction
	}
	return p, nil
}

// pick returns a uniform integer in [0, n) for n ≤ 256.
func pick(rand io.Reader, n int) (int, error) {
	limit := 256 - 256%n
	var buf [1]byte
	for tries := 0; tries < 1000; tries++ {
		if _, err := io.ReadFull(rand, buf[:]); err != nil {
			return 0, fmt.Errorf("amt: generate password: %w", err)
		}
		if int(buf[0]) < limit {
			return int(buf[0]) % n, nil
		}
	}
	return 0, errors.New("amt: generate password: random source is not random")
}
