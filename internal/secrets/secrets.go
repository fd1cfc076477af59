// Package secrets seals and opens the site's secrets — AMT admin
// passwords, private keys, Kerberos keys — with AES-256-GCM under the site
// key. The site key comes from a file or the environment, never from the
// configuration file, and never appears in a log line or an error.
package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// KeyEnv is the environment variable that may carry the site key
// (64 hex characters or standard base64 of 32 bytes).
const KeyEnv = "AMTOPS_SITE_KEY"

// version prefixes every sealed blob so the format can change later.
const version byte = 1

// ErrOpen is returned for any blob that does not authenticate; it does not
// say why, so that nothing about the key or plaintext leaks.
var ErrOpen = errors.New("secrets: cannot open sealed value")

// Sealer encrypts and authenticates small values. The zero value is not
// usable; build one with New, LoadKey or Generate.
type Sealer struct {
	aead cipher.AEAD
}

// New builds a Sealer from a 32-byte key.
func New(key []byte) (*Sealer, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("secrets: site key must be 32 bytes, got %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secrets: new cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secrets: new gcm: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// Seal encrypts plaintext. ad binds the blob to its place (for example the
// Redis key it is stored under) so a blob copied elsewhere does not open.
func (s *Sealer) Seal(plaintext, ad []byte) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize(), 1+s.aead.NonceSize()+len(plaintext)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("secrets: nonce: %w", err)
	}
	out := append([]byte{version}, nonce...)
	return s.aead.Seal(out, nonce, plaintext, ad), nil
}

// Open decrypts a blob made by Seal with the same ad.
func (s *Sealer) Open(blob, ad []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(blob) < 1+n+s.aead.Overhead() || blob[0] != version {
		return nil, ErrOpen
	}
	pt, err := s.aead.Open(nil, blob[1:1+n], blob[1+n:], ad)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

// ParseKey decodes a site key written as 64 hex characters or base64.
func ParseKey(text string) ([]byte, error) {
	text = strings.TrimSpace(text)
	if k, err := hex.DecodeString(text); err == nil && len(k) == 32 {
		return k, nil
	}
	if k, err := base64.StdEncoding.DecodeString(text); err == nil && len(k) == 32 {
		return k, nil
	}
	return nil, errors.New("secrets: site key must be 32 bytes as 64 hex characters or base64")
}

// LoadKey reads the site key from path, or from $AMTOPS_SITE_KEY when path
// is empty. A key file readable by group or others is refused.
func LoadKey(path string) (*Sealer, error) {
	var text string
	if path == "" {
		text = os.Getenv(KeyEnv)
		if text == "" {
			return nil, fmt.Errorf("secrets: no site key: set site_key_file or $%s", KeyEnv)
		}
	} else {
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("secrets: site key file: %w", err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("secrets: site key file %s: mode %v is readable by others; chmod 600", path, fi.Mode().Perm())
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("secrets: read site key file: %w", err)
		}
		text = string(b)
	}
	key, err := ParseKey(text)
	if err != nil {
		return nil, err
	}
	return New(key)
}

// WriteNewKey creates a key file with a fresh random key, mode 0600. It
// refuses to overwrite an existing file.
func WriteNewKey(path string) error {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("secrets: generate key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("secrets: create key file: %w", err)
	}
	if _, err := f.WriteString(hex.EncodeToString(key) + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("secrets: write key file: %w", err)
	}
	return f.Close()
}

// Redacted is a string that prints as a mask, so that a secret that slips
// into a log field or a %v does not reveal itself.
type Redacted string

func (Redacted) String() string               { return "[redacted]" }
func (Redacted) GoString() string             { return "[redacted]" }
func (Redacted) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// Reveal returns the secret itself; call it only where the value is used.
func (r Redacted) Reveal() string { return string(r) }
