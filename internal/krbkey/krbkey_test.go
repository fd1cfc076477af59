package krbkey

import (
	"encoding/hex"
	"slices"
	"strings"
	"testing"
)

// The expected keys were computed by MIT krb5 1.20 ktutil (add_entry
// -password -s <salt>), an implementation independent of gokrb5, and by the
// well-known NT hash of "password".
func TestDeriveKnownAnswers(t *testing.T) {
	const salt = "AMT.TESThostpc01-amt.amt.test"
	tests := []struct {
		name     string
		password string
		etype    int32
		salt     string
		want     string
	}{
		{"rc4 nt hash of password", "password", RC4HMAC, "", "8846f7eaee8fb117ad06bdd830b7586c"},
		{"rc4 ignores salt", "password", RC4HMAC, "anything", "8846f7eaee8fb117ad06bdd830b7586c"},
		{"rc4 mit ktutil", "S3cret-Pass!word", RC4HMAC, "", "59d7b848a9078496ead6328c7cd6ce14"},
		{"aes128 mit ktutil", "S3cret-Pass!word", AES128, salt, "ef4fb122a0504c87caaf743738052185"},
		{"aes256 mit ktutil", "S3cret-Pass!word", AES256, salt, "df7c7f124ddd6c70e03d9f7d49297d486f130f383a38094e0a97ec509e67e50f"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := Derive(tc.password, tc.etype, tc.salt, 7)
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(k.Value); got != tc.want {
				t.Errorf("key = %s, want %s", got, tc.want)
			}
			if k.EType != tc.etype || k.KVNO != 7 {
				t.Errorf("etype/kvno = %d/%d, want %d/7", k.EType, k.KVNO, tc.etype)
			}
			if strings.Contains(k.String(), hex.EncodeToString(k.Value)) {
				t.Errorf("String() leaks the key: %s", k)
			}
		})
	}
}

func TestDeriveErrors(t *testing.T) {
	tests := []struct {
		name     string
		password string
		etype    int32
		salt     string
		want     string
	}{
		{"empty password", "", RC4HMAC, "", "password: empty"},
		{"aes without salt", "x", AES256, "", "salt: empty"},
		{"des not supported", "x", 3, "s", "not supported"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Derive(tc.password, tc.etype, tc.salt, 1)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestETypes(t *testing.T) {
	tests := []struct {
		name      string
		bits      uint32
		want      []int32
		strongest int32
	}{
		{"default 28", DefaultEnc, []int32{AES256, AES128, RC4HMAC}, AES256},
		{"rc4 only", BitRC4, []int32{RC4HMAC}, RC4HMAC},
		{"aes128 and rc4", BitAES128 | BitRC4, []int32{AES128, RC4HMAC}, AES128},
		{"des bits only", 0x3, nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ETypes(tc.bits); !slices.Equal(got, tc.want) {
				t.Errorf("ETypes = %v, want %v", got, tc.want)
			}
			if got := Strongest(tc.bits); got != tc.strongest {
				t.Errorf("Strongest = %d, want %d", got, tc.strongest)
			}
			keys, err := DeriveAll("S3cret-Pass!word", "SALT", 2, tc.bits)
			if len(tc.want) == 0 {
				if err == nil {
					t.Fatal("DeriveAll succeeded with no usable etype")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i, k := range keys {
				if k.EType != tc.want[i] {
					t.Errorf("key %d etype = %d, want %d", i, k.EType, tc.want[i])
				}
			}
		})
	}
}

func TestComputerSalt(t *testing.T) {
	tests := []struct {
		name, realm, sam, salt, principal string
	}{
		{"upper sam with dollar", "AMT.TEST", "PC01-AMT$", "AMT.TESThostpc01-amt.amt.test", "host/pc01-amt.amt.test@AMT.TEST"},
		{"lower realm no dollar", "amt.test", "pc01-amt", "AMT.TESThostpc01-amt.amt.test", "host/pc01-amt.amt.test@AMT.TEST"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ComputerSalt(tc.realm, tc.sam); got != tc.salt {
				t.Errorf("ComputerSalt = %q, want %q", got, tc.salt)
			}
			if got := ComputerSaltPrincipal(tc.realm, tc.sam); got != tc.principal {
				t.Errorf("ComputerSaltPrincipal = %q, want %q", got, tc.principal)
			}
		})
	}
}
