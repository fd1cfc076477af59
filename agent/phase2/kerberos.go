package phase2

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/amtops/amtops/internal/amt"
	"github.com/amtops/amtops/internal/wsman"
	amtopsv1 "github.com/amtops/amtops/proto/amtops/v1"
)

// kerberos applies the AMT account's key (S10). The amt package writes
// MasterKey only, so AES on AMT 8+ goes as the AES key itself rather than
// passphrase/salt/iterations.
func (r *job) kerberos(ctx context.Context) (string, error) {
	k := r.j.GetKerberos()
	cur, err := r.dev.KerberosSettings(ctx)
	if err != nil {
		return "", err
	}
	if !k.GetEnabled() {
		if !cur.KrbEnabled {
			return "", skipped{"Kerberos off"}
		}
		cur.KrbEnabled = false
		return "disabled", r.dev.PutKerberosSettings(ctx, cur)
	}
	if k.GetRealm() == "" {
		return "", errors.New("kerberos.realm is empty")
	}
	key, algs, err := kerberosKey(k, r.major(), cur.SupportedEncryptionAlgorithms)
	if err != nil {
		return "", err
	}
	tol := int(k.GetMaxClockToleranceMinutes())
	if tol < 1 || tol > amt.MaxClockTolerance {
		tol = amt.MaxClockTolerance
	}
	cur.RealmName = strings.ToUpper(k.GetRealm())
	cur.KeyVersion = int(k.GetKeyVersion())
	cur.MasterKey = key
	cur.MaximumClockTolerance = tol
	cur.ConfiguredEncryptionAlgorithms = algs
	cur.KrbEnabled = true
	if err := r.dev.PutKerberosSettings(ctx, cur); err != nil {
		return "", err
	}
	return fmt.Sprintf("realm %s, key version %d, algorithms %v", cur.RealmName, cur.KeyVersion, algs), nil
}

// kerberosKey picks the key AMT can use: the job's etype key where the
// firmware supports it (AMT 8+), else the RC4-HMAC key.
func kerberosKey(k *amtopsv1.Kerberos, major int, supported []int) ([]byte, []int, error) {
	mk, rc4 := k.GetMasterKey(), k.GetRc4Key()
	if major >= 8 {
		switch k.GetEncryptionType() {
		case 18:
			if len(mk) == 32 && slices.Contains(supported, amt.KerberosAES256) {
				return mk, []int{amt.KerberosAES256}, nil
			}
		case 17:
			if len(mk) == 16 && slices.Contains(supported, amt.KerberosAES128) {
				return mk, []int{amt.KerberosAES128}, nil
			}
		}
	}
	var algs []int
	if major >= 8 {
		algs = []int{amt.KerberosRC4HMAC}
	}
	if len(rc4) == 16 {
		return rc4, algs, nil
	}
	if et := k.GetEncryptionType(); (et == 23 || et == 0) && len(mk) == 16 {
		return mk, algs, nil
	}
	return nil, nil, fmt.Errorf("kerberos: no key this AMT %d firmware can use (encryption_type %d, master_key %d bytes, rc4_key %d bytes)",
		major, k.GetEncryptionType(), len(mk), len(rc4))
}

func (r *job) major() int {
	if r.ident == nil {
		return 0
	}
	m, _ := strconv.Atoi(strings.SplitN(r.ident.Version, ".", 2)[0])
	return m
}

func (r *job) kerberosACL(ctx context.Context) (string, error) {
	acl := r.j.GetKerberos().GetAcl()
	for i, e := range acl {
		sid, err := parseSID(e.GetSid())
		if err != nil {
			return "", fmt.Errorf("kerberos.acl[%d].sid: %w", i, err)
		}
		realms := make([]int, 0, len(e.GetRealms()))
		for _, rl := range e.GetRealms() {
			realms = append(realms, int(rl))
		}
		if _, err := r.dev.AddKerberosUser(ctx, sid, int(e.GetAccessPermission()), realms); err != nil && !isReturn(err, wsman.StatusDuplicate) {
			return "", fmt.Errorf("kerberos.acl[%d]: %w", i, err)
		}
	}
	return fmt.Sprintf("%d entries", len(acl)), nil
}

// parseSID turns "S-1-5-21-…" into the binary SID AMT takes.
func parseSID(s string) ([]byte, error) {
	parts := strings.Split(s, "-")
	if len(parts) < 3 || !strings.EqualFold(parts[0], "S") {
		return nil, fmt.Errorf("%q is not a SID (S-1-…)", s)
	}
	rev, err := strconv.ParseUint(parts[1], 10, 8)
	if err != nil {
		return nil, fmt.Errorf("SID %q: revision: %w", s, err)
	}
	auth, err := strconv.ParseUint(parts[2], 10, 48)
	if err != nil {
		return nil, fmt.Errorf("SID %q: authority: %w", s, err)
	}
	subs := parts[3:]
	if len(subs) > 15 {
		return nil, fmt.Errorf("SID %q: %d sub-authorities, max 15", s, len(subs))
	}
	out := []byte{byte(rev), byte(len(subs)), 0, 0, 0, 0, 0, 0}
	for i := 0; i < 6; i++ {
		out[2+i] = byte(auth >> (8 * (5 - i)))
	}
	for _, sub := range subs {
		v, err := strconv.ParseUint(sub, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("SID %q: sub-authority %q: %w", s, sub, err)
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(v))
	}
	return out, nil
}
