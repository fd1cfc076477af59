package hello

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// wire builds a message from hex pieces so each test shows its bytes.
func wire(t testing.TB, parts ...string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(parts, ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const (
	hdrFlags1   = "0100" + "0300" + "05000000"           // flags 1, version 3, retry 5
	uuidWire    = "33221100554477668899aabbccddeeff"     // GetUuid byte order
	uuidCanon   = "00112233-4455-6677-8899-aabbccddeeff" // what internal/amt prints
	sha256Entry = "0220" + "000102030405060708090a0b0c0d0e0f" + "101112131415161718191a1b1c1d1e1f"
	sha1Entry   = "0114" + "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3"
)

func sha384Entry() string { return "0330" + strings.Repeat("ab", 48) }

func TestParseGood(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want Hello
	}{
		{"no hashes", wire(t, "0000", "0300", "00000000", uuidWire, "00"),
			Hello{UUID: mustUUID(t, uuidCanon)}},
		{"three types", wire(t, hdrFlags1, uuidWire, "03", sha256Entry, sha1Entry, sha384Entry()),
			Hello{Flags: 1, RetryCount: 5, UUID: mustUUID(t, uuidCanon), Hashes: []Hash{
				{SHA256, wire(t, sha256Entry[4:])}, {SHA1, wire(t, sha1Entry[4:])}, {SHA384, bytes.Repeat([]byte{0xab}, 48)}}}},
		{"retry count little-endian", wire(t, "0000", "0300", "01020304", uuidWire, "00"),
			Hello{RetryCount: 0x04030201, UUID: mustUUID(t, uuidCanon)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.in)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Parse = %+v, want %+v", got, tc.want)
			}
			if got.UUID.String() != uuidCanon {
				t.Errorf("UUID = %s, want %s", got.UUID, uuidCanon)
			}
			out, err := got.Encode()
			if err != nil || !bytes.Equal(out, tc.in) {
				t.Errorf("Encode = %x, %v; want %x", out, err, tc.in)
			}
		})
	}
}

// A device with the factory list sends ~25 SHA-256 hashes; that must fit.
func TestParseFactorySizedList(t *testing.T) {
	in := wire(t, hdrFlags1, uuidWire, "19", strings.Repeat(sha256Entry, 25))
	h, err := Parse(in)
	if err != nil || len(h.Hashes) != 25 || len(in) != 25+25*34 {
		t.Fatalf("Parse(%d bytes) = %d hashes, %v", len(in), len(h.Hashes), err)
	}
}

func TestParseBad(t *testing.T) {
	good := wire(t, hdrFlags1, uuidWire, "02", sha256Entry, sha1Entry)
	big := wire(t, hdrFlags1, uuidWire, "ff", strings.Repeat(sha384Entry(), 255))
	for _, tc := range []struct {
		name  string
		in    []byte
		err   error
		field string
	}{
		{"empty", nil, ErrTruncated, "flags"},
		{"one byte", good[:1], ErrTruncated, "flags"},
		{"in version", good[:3], ErrTruncated, "version"},
		{"in retry count", good[:6], ErrTruncated, "retry count"},
		{"in uuid", good[:20], ErrTruncated, "uuid"},
		{"no hash count", good[:24], ErrTruncated, "hash count"},
		{"missing hash", good[:25+34], ErrTruncated, "hashes[1]"},
		{"hash header only", good[:25+34+2], ErrTruncated, "hashes[1].hash"},
		{"short hash", good[:len(good)-1], ErrTruncated, "hashes[1].hash"},
		{"trailing", append(append([]byte{}, good...), 0), ErrTrailing, "message"},
		{"version 1 (PSK one-touch)", wire(t, "0000", "0100", "00000000", uuidWire, "00"), ErrVersion, "version"},
		{"version 4", wire(t, "0000", "0400", "00000000", uuidWire, "00"), ErrVersion, "version"},
		{"flags 2", wire(t, "0200", "0300", "00000000", uuidWire, "00"), ErrFlags, "flags"},
		{"flags negative", wire(t, "00ff", "0300", "00000000", uuidWire, "00"), ErrFlags, "flags"},
		{"hash type 0", wire(t, hdrFlags1, uuidWire, "01", "0020", strings.Repeat("00", 32)), ErrHashType, "hashes[0].type"},
		{"hash type 4", wire(t, hdrFlags1, uuidWire, "02", sha1Entry, "0440", strings.Repeat("00", 64)), ErrHashType, "hashes[1].type"},
		{"sha256 with 20 bytes", wire(t, hdrFlags1, uuidWire, "01", "0214", strings.Repeat("00", 20)), ErrHashLength, "hashes[0].length"},
		{"sha1 with 32 bytes", wire(t, hdrFlags1, uuidWire, "01", "0120", strings.Repeat("00", 32)), ErrHashLength, "hashes[0].length"},
		{"oversized", big, ErrTooLarge, "message"},
		{"over cap by one", append(make([]byte, MaxSize), 0), ErrTooLarge, "message"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := Parse(tc.in)
			if !errors.Is(err, tc.err) {
				t.Fatalf("Parse err = %v, want %v", err, tc.err)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("Parse err = %#v, want field %q", err, tc.field)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("message %q does not name %q", err, tc.field)
			}
			if !reflect.DeepEqual(h, Hello{}) {
				t.Errorf("Parse returned a partial Hello %+v with its error", h)
			}
		})
	}
}

func TestEncodeRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    Hello
		err  error
	}{
		{"flags", Hello{Flags: 7}, ErrFlags},
		{"unknown alg", Hello{Hashes: []Hash{{Alg: 9, Sum: make([]byte, 9)}}}, ErrHashType},
		{"wrong length", Hello{Hashes: []Hash{{Alg: SHA256, Sum: make([]byte, 20)}}}, ErrHashLength},
		{"too many", Hello{Hashes: make([]Hash, 256)}, ErrHashCount},
		{"too large", Hello{Hashes: repeatHash(Hash{SHA384, make([]byte, 48)}, 100)}, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.h.Encode(); !errors.Is(err, tc.err) {
				t.Fatalf("Encode err = %v, want %v", err, tc.err)
			}
		})
	}
}

func TestUUID(t *testing.T) {
	u := mustUUID(t, uuidCanon)
	if hex.EncodeToString(u[:]) != uuidWire {
		t.Fatalf("wire order %x, want %s", u[:], uuidWire)
	}
	for _, bad := range []string{"", "00112233445566778899aabbccddeeff", "00112233-4455-6677-8899-aabbccddeefg", "0011223-34455-6677-8899-aabbccddeeff"} {
		if _, err := ParseUUID(bad); err == nil {
			t.Errorf("ParseUUID(%q) accepted", bad)
		}
	}
}

func mustUUID(t testing.TB, s string) UUID {
	t.Helper()
	u, err := ParseUUID(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func repeatHash(h Hash, n int) []Hash {
	out := make([]Hash, n)
	for i := range out {
		out[i] = h
	}
	return out
}

// FuzzParse: Parse never panics; whatever it accepts re-encodes to the same
// bytes and parses to the same Hello.
func FuzzParse(f *testing.F) {
	f.Add(wire(f, hdrFlags1, uuidWire, "03", sha256Entry, sha1Entry, sha384Entry()))
	f.Add(wire(f, "0000", "0300", "00000000", uuidWire, "00"))
	f.Add(wire(f, hdrFlags1, uuidWire, "19", strings.Repeat(sha256Entry, 25)))
	f.Add([]byte{1, 0, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := Parse(b)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field == "" {
				t.Fatalf("error without field: %v", err)
			}
			return
		}
		out, err := h.Encode()
		if err != nil {
			t.Fatalf("Encode of parsed Hello: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("round trip %x != %x", out, b)
		}
		h2, err := Parse(out)
		if err != nil || !reflect.DeepEqual(h, h2) {
			t.Fatalf("re-parse %+v, %v; want %+v", h2, err, h)
		}
	})
}
