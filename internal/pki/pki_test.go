package pki_test

import (
	"errors"
	"testing"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/pki"
)

func TestNormalizeFQDN(t *testing.T) {
	tests := []struct {
		name, in, want string
		ok             bool
	}{
		{"plain", "pc01.amt.test", "pc01.amt.test", true},
		{"upper case and trailing dot", "PC01.Amt.Test.", "pc01.amt.test", true},
		{"empty", "", "", false},
		{"single label", "pc01", "", false},
		{"underscore", "pc_01.amt.test", "", false},
		{"empty label", "pc01..amt.test", "", false},
		{"leading hyphen", "-pc01.amt.test", "", false},
		{"space", "pc 01.amt.test", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pki.NormalizeFQDN(tt.in)
			if tt.ok != (err == nil) || got != tt.want {
				t.Fatalf("NormalizeFQDN(%q) = %q, %v", tt.in, got, err)
			}
			var fe *domain.FieldError
			if err != nil && (!errors.As(err, &fe) || fe.Field != "fqdn") {
				t.Errorf("error %v does not name fqdn", err)
			}
		})
	}
}

func TestParseSerial(t *testing.T) {
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"decimal", "340282366920938463463374607431768211455", true},
		{"zero", "0", false},
		{"negative", "-1", false},
		{"plus", "+1", false},
		{"hex", "0x10", false},
		{"spaces", " 12", false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := pki.ParseSerial("serial", tt.in); tt.ok != (err == nil) {
				t.Fatalf("ParseSerial(%q) = %v", tt.in, err)
			}
		})
	}
}

func TestValidateReason(t *testing.T) {
	for r := domain.RevocationReason(-1); r <= 11; r++ {
		want := r >= 0 && r <= 10 && r != 7 && r != 8
		if got := pki.ValidateReason(r) == nil; got != want {
			t.Errorf("ValidateReason(%d) ok = %v, want %v", r, got, want)
		}
	}
}

func TestIssuedChainParts(t *testing.T) {
	i := &pki.Issued{Chain: [][]byte{[]byte("issuing"), []byte("root")}}
	if string(i.Root()) != "root" || len(i.Intermediates()) != 1 || string(i.Intermediates()[0]) != "issuing" {
		t.Errorf("Root %q Intermediates %q", i.Root(), i.Intermediates())
	}
	var empty pki.Issued
	if empty.Root() != nil || empty.Intermediates() != nil {
		t.Error("empty chain has parts")
	}
}
