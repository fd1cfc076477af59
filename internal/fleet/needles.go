package fleet

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"strings"
	"sync"
)

// Needles is every secret a run made, each under a name for the report
// (never the value), in the encodings a leak would take: as is, base64,
// hex and JSON-escaped for text; for private keys, 24-byte windows at
// multiples of 48 bytes (so that their base64 lies inside one PEM line),
// raw, base64 and hex. The chaos audit and the secrets test search logs,
// Redis values and files for them. Safe for concurrent use.
type Needles struct {
	mu sync.Mutex
	m  map[string][]byte // name → needle
}

// NewNeedles returns an empty set.
func NewNeedles() *Needles { return &Needles{m: map[string][]byte{}} }

// MinNeedle is the shortest value searched for: shorter ones would hit by
// chance.
const MinNeedle = 8

func (s *Needles) put(name string, v []byte) {
	if len(v) < MinNeedle {
		return
	}
	s.mu.Lock()
	s.m[name] = v
	s.mu.Unlock()
}

// All is a copy of the set, name → needle.
func (s *Needles) All() map[string][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.m)
}

// AddText adds a password or token.
func (s *Needles) AddText(name, v string) {
	v = strings.TrimSpace(v)
	s.put(name, []byte(v))
	s.put(name+" (base64)", []byte(base64.StdEncoding.EncodeToString([]byte(v))))
	s.put(name+" (hex)", []byte(hex.EncodeToString([]byte(v))))
	// As a JSON string: zerolog escapes quotes and backslashes only,
	// encoding/json HTML characters too.
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if enc.Encode(v) == nil {
		if q := bytes.TrimSpace(b.Bytes()); string(q[1:len(q)-1]) != v {
			s.put(name+" (JSON)", q[1:len(q)-1])
		}
	}
	if q, err := json.Marshal(v); err == nil && string(q[1:len(q)-1]) != v {
		s.put(name+" (JSON, HTML-escaped)", q[1:len(q)-1])
	}
}

// AddKey adds raw private key bytes.
func (s *Needles) AddKey(name string, der []byte) {
	for off := 0; off+MinNeedle <= len(der) && off < 48*8; off += 48 {
		w := der[off:min(off+24, len(der))]
		n := fmt.Sprintf("%s[%d:]", name, off)
		s.put(n, w)
		s.put(n+" (base64)", []byte(base64.StdEncoding.EncodeToString(w)))
		s.put(n+" (hex)", []byte(hex.EncodeToString(w)))
	}
}

// AddSealed adds what a sealed value holds: a JSON record's private
// fields (certificates and serials are public), PEM private keys, text,
// or raw key bytes.
func (s *Needles) AddSealed(name string, plain []byte) {
	var rec map[string]any
	if json.Unmarshal(plain, &rec) == nil {
		for k, v := range rec {
			str, ok := v.(string)
			lk := strings.ToLower(k)
			if !ok || !(strings.Contains(lk, "key") || strings.Contains(lk, "password") ||
				strings.Contains(lk, "secret") || strings.Contains(lk, "passphrase")) {
				continue
			}
			if b, err := base64.StdEncoding.DecodeString(str); err == nil {
				s.AddSealed(name+"."+k, b)
			} else {
				s.AddText(name+"."+k, str)
			}
		}
		return
	}
	rest, found := plain, false
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		found = true
		if strings.Contains(blk.Type, "PRIVATE KEY") {
			s.AddKey(name+" "+blk.Type, blk.Bytes)
		}
	}
	switch {
	case found:
	case isText(plain):
		s.AddText(name, string(plain))
	default:
		s.AddKey(name, plain)
	}
}

func isText(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return len(b) > 0
}

// SealedMarker reports a sealed record that only marks a job (its device
// ID, its FQDN, the certificate it was issued): sealed to bind it to its
// key, not because it is secret.
func SealedMarker(name string) bool {
	for _, suffix := range []string{"/activation", "/sign-on-device", "/signed", "/result"} {
		if strings.HasSuffix(name, suffix) {
			return true
		}
	}
	return false
}
