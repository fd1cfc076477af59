package krbkey_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/krbkey"
	"github.com/amtops/amtops/internal/testpeers"
)

func TestSaltsFromKDC(t *testing.T) {
	peer := testpeers.Samba(t)
	tests := []struct {
		name, principal string
		wantSalt        string // for AES; "" = expect an error containing wantErr
		wantErr         string
	}{
		{"user salt is realm plus name", "Administrator", "AMT.TESTAdministrator", ""},
		{"unknown principal", "nobody-" + time.Now().Format("150405.000"), "", "kdc error 6"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			salts, err := krbkey.SaltsFromKDC(ctx, peer.KDC, peer.Realm, tc.principal)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, s := range salts {
				if s.EType == krbkey.AES256 {
					found = true
					if s.Salt != tc.wantSalt {
						t.Errorf("AES256 salt = %q, want %q", s.Salt, tc.wantSalt)
					}
				}
			}
			if !found {
				t.Errorf("no AES256 entry in %+v", salts)
			}
		})
	}
}

func TestSaltsFromKDCHonoursContext(t *testing.T) {
	// A listener that accepts and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	// Cleanups run last-in first-out: close the listener, then wait.
	t.Cleanup(func() { <-done })
	t.Cleanup(func() { ln.Close() })
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = krbkey.SaltsFromKDC(ctx, ln.Addr().String(), "AMT.TEST", "PC01-AMT$")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}
