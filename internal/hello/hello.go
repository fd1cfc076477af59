// Package hello encodes and strictly parses the Intel AMT Hello message: the
// packet a factory (ProvisioningState 0) device sends over TCP to the
// provisioning server's port 9971 to ask for remote configuration.
//
// Wire layout, little-endian, no length prefix (the device writes the message
// and closes the connection):
//
//	offset size field
//	0      2    flags (0, or 1: admin credentials already set)
//	2      2    version (3; 1 and 2 were the PSK "one-touch" variants)
//	4      4    retry count
//	8      16   UUID, first three fields little-endian as GetUuid returns it
//	24     1    hash count
//	25     …    per hash: 1 type (1 SHA-1, 2 SHA-256, 3 SHA-384), 1 length, hash
//
// The hashes are those of the root certificates the device trusts for a
// provisioning certificate chain.
package hello

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Version is the only Hello version sent by firmware that supports PKI
// remote configuration.
const Version = 3

// MaxSize caps a Hello. A real device sends about 25–40 hashes (≈1.4 KB); the
// cap leaves room for roots added in the MEBx and bounds what a listener reads.
const MaxSize = 4096

// headerSize is flags + version + retry count + UUID + hash count.
const headerSize = 2 + 2 + 4 + 16 + 1

// Sentinel reasons; a parse error wraps one of them in a *FieldError.
var (
	ErrTruncated  = errors.New("truncated")
	ErrTrailing   = errors.New("trailing bytes")
	ErrTooLarge   = errors.New("message too large")
	ErrVersion    = errors.New("unsupported version")
	ErrFlags      = errors.New("unknown flags")
	ErrHashType   = errors.New("unknown hash type")
	ErrHashLength = errors.New("hash length does not match its type")
	ErrHashCount  = errors.New("too many hashes")
)

// FieldError names the field and byte offset where a Hello is malformed.
type FieldError struct {
	Field  string // e.g. "version", "hashes[3].length"
	Offset int
	Err    error // one of the Err* sentinels
	Detail string
}

func (e *FieldError) Error() string {
	s := fmt.Sprintf("hello: %s at offset %d: %v", e.Field, e.Offset, e.Err)
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	return s
}

func (e *FieldError) Unwrap() error { return e.Err }

// HashAlg is the hash type byte of a trusted-root entry.
type HashAlg uint8

// Hash types as firmware numbers them.
const (
	SHA1   HashAlg = 1
	SHA256 HashAlg = 2
	SHA384 HashAlg = 3
)

// Size is the digest length of the algorithm, 0 if unknown.
func (a HashAlg) Size() int {
	switch a {
	case SHA1:
		return 20
	case SHA256:
		return 32
	case SHA384:
		return 48
	}
	return 0
}

func (a HashAlg) String() string {
	switch a {
	case SHA1:
		return "sha1"
	case SHA256:
		return "sha256"
	case SHA384:
		return "sha384"
	}
	return fmt.Sprintf("hashalg(%d)", uint8(a))
}

// Hash is one trusted provisioning root, by the digest of its DER certificate.
type Hash struct {
	Alg HashAlg
	Sum []byte
}

// Hex is the lower-case hex digest.
func (h Hash) Hex() string { return hex.EncodeToString(h.Sum) }

// UUID is the device UUID in wire (GetUuid) byte order.
type UUID [16]byte

// String is the canonical form internal/amt returns for GetUuid: the first
// three fields byte-swapped from little-endian.
func (u UUID) String() string {
	return fmt.Sprintf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%x-%x",
		u[3], u[2], u[1], u[0], u[5], u[4], u[7], u[6], u[8:10], u[10:16])
}

// ParseUUID reads the canonical string form (as String writes it).
func ParseUUID(s string) (UUID, error) {
	var u UUID
	raw, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(raw) != 16 || len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, fmt.Errorf("hello: uuid %q is not of the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", s)
	}
	u = UUID{raw[3], raw[2], raw[1], raw[0], raw[5], raw[4], raw[7], raw[6]}
	copy(u[8:], raw[8:])
	return u, nil
}

// Hello is one decoded Hello message.
type Hello struct {
	// Flags is 1 when the device's admin credentials are already set.
	Flags      uint16
	RetryCount uint32
	UUID       UUID
	Hashes     []Hash
}

// AdminCredentialsSet reports the flags bit.
func (h Hello) AdminCredentialsSet() bool { return h.Flags != 0 }

// Encode writes h in wire form; it refuses what Parse would refuse.
func (h Hello) Encode() ([]byte, error) {
	if h.Flags > 1 {
		return nil, &FieldError{Field: "flags", Offset: 0, Err: ErrFlags, Detail: fmt.Sprintf("%d", h.Flags)}
	}
	if len(h.Hashes) > 255 {
		return nil, &FieldError{Field: "hash count", Offset: 24, Err: ErrHashCount, Detail: fmt.Sprintf("%d > 255", len(h.Hashes))}
	}
	size := headerSize
	for _, x := range h.Hashes {
		size += 2 + len(x.Sum)
	}
	if size > MaxSize {
		return nil, &FieldError{Field: "message", Offset: 0, Err: ErrTooLarge, Detail: fmt.Sprintf("%d > %d bytes", size, MaxSize)}
	}
	b := make([]byte, headerSize, size)
	binary.LittleEndian.PutUint16(b[0:], h.Flags)
	binary.LittleEndian.PutUint16(b[2:], Version)
	binary.LittleEndian.PutUint32(b[4:], h.RetryCount)
	copy(b[8:24], h.UUID[:])
	b[24] = byte(len(h.Hashes))
	for i, x := range h.Hashes {
		if err := checkHash(i, len(b), x.Alg, len(x.Sum)); err != nil {
			return nil, err
		}
		b = append(b, byte(x.Alg), byte(len(x.Sum)))
		b = append(b, x.Sum...)
	}
	return b, nil
}

func checkHash(i, off int, alg HashAlg, n int) error {
	if alg.Size() == 0 {
		return &FieldError{Field: fmt.Sprintf("hashes[%d].type", i), Offset: off, Err: ErrHashType, Detail: fmt.Sprintf("%d", uint8(alg))}
	}
	if n != alg.Size() {
		return &FieldError{Field: fmt.Sprintf("hashes[%d].length", i), Offset: off + 1, Err: ErrHashLength,
			Detail: fmt.Sprintf("%s with %d bytes, want %d", alg, n, alg.Size())}
	}
	return nil
}

// Parse decodes exactly one Hello and nothing else: a wrong version, unknown
// flags or hash type, a length that does not match its type, truncation,
// trailing bytes or more than MaxSize bytes are errors (*FieldError).
func Parse(b []byte) (Hello, error) {
	var h Hello
	if len(b) > MaxSize {
		return h, &FieldError{Field: "message", Offset: MaxSize, Err: ErrTooLarge, Detail: fmt.Sprintf("%d > %d bytes", len(b), MaxSize)}
	}
	if len(b) < headerSize {
		return h, &FieldError{Field: headerField(len(b)), Offset: len(b), Err: ErrTruncated, Detail: fmt.Sprintf("%d of %d header bytes", len(b), headerSize)}
	}
	h.Flags = binary.LittleEndian.Uint16(b[0:])
	if h.Flags > 1 {
		return Hello{}, &FieldError{Field: "flags", Offset: 0, Err: ErrFlags, Detail: fmt.Sprintf("%d", h.Flags)}
	}
	if v := binary.LittleEndian.Uint16(b[2:]); v != Version {
		return Hello{}, &FieldError{Field: "version", Offset: 2, Err: ErrVersion, Detail: fmt.Sprintf("%d, want %d", v, Version)}
	}
	h.RetryCount = binary.LittleEndian.Uint32(b[4:])
	copy(h.UUID[:], b[8:24])
	n := int(b[24])
	off := headerSize
	if n > 0 {
		h.Hashes = make([]Hash, 0, n)
	}
	for i := 0; i < n; i++ {
		if off+2 > len(b) {
			return Hello{}, &FieldError{Field: fmt.Sprintf("hashes[%d]", i), Offset: len(b), Err: ErrTruncated, Detail: fmt.Sprintf("%d of %d hashes", i, n)}
		}
		alg, l := HashAlg(b[off]), int(b[off+1])
		if err := checkHash(i, off, alg, l); err != nil {
			return Hello{}, err
		}
		if off+2+l > len(b) {
			return Hello{}, &FieldError{Field: fmt.Sprintf("hashes[%d].hash", i), Offset: len(b), Err: ErrTruncated}
		}
		h.Hashes = append(h.Hashes, Hash{Alg: alg, Sum: append([]byte(nil), b[off+2:off+2+l]...)})
		off += 2 + l
	}
	if off != len(b) {
		return Hello{}, &FieldError{Field: "message", Offset: off, Err: ErrTrailing, Detail: fmt.Sprintf("%d bytes after the last hash", len(b)-off)}
	}
	return h, nil
}

// headerField names the header field a message of n bytes stops in.
func headerField(n int) string {
	switch {
	case n < 2:
		return "flags"
	case n < 4:
		return "version"
	case n < 8:
		return "retry count"
	case n < 24:
		return "uuid"
	}
	return "hash count"
}
