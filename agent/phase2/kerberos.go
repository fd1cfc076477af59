package phase2

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/amtops/amtops/internal/amt"
	"github.com/amtops/amtops/internal/wsman"
	amtopsv1 "github.com/amtops/amtops/proto/amtops/v1"
)

// kerberos applies the AMT account's key (S10) as the firmware takes it
// (amt.KerberosSettings.SetKey): for an AES ticket key the passphrase,
// salt and iteration count, from which the device derives its keys; for
// RC4 the 16-byte key. The AES key itself is never sent.
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
	if err := cur.SetKey(kerberosKey(k, r.major())); err != nil {
		return "", fmt.Errorf("kerberos: %w", err)
	}
	tol := int(k.GetMaxClockToleranceMinutes())
	if tol < 1 || tol > amt.MaxClockTolerance {
		tol = amt.MaxClockTolerance
	}
	cur.RealmName = strings.ToUpper(k.GetRealm())
	cur.KeyVersion = int(k.GetKeyVersion())
	cur.MaximumClockTolerance = tol
	cur.KrbEnabled = true
	if err := r.dev.PutKerberosSettings(ctx, cur); err != nil {
		return "", err
	}
	return fmt.Sprintf("realm %s, key version %d, algorithms %v", cur.RealmName, cur.KeyVersion, cur.ConfiguredEncryptionAlgorithms), nil
}

// kerberosKey is what the job knows of the account's key. Firmware before
// AMT 8 has no AES: it gets the RC4 key, and the account must allow RC4
// (the KDC then uses it). An RC4 job may carry its key as master_key only.
func kerberosKey(k *amtopsv1.Kerberos, major int) amt.KerberosKey {
	key := amt.KerberosKey{Passphrase: k.GetPassphrase(), Salt: k.GetSalt(), IterationCount: int(k.GetIterationCount()),
		RC4Key: k.GetRc4Key(), EType: k.GetEncryptionType()}
	if key.EType == 0 {
		key.EType = 23
	}
	if key.EType == 23 && len(key.RC4Key) == 0 {
		key.RC4Key = k.GetMasterKey()
	}
	if major > 0 && major < 8 {
		key.EType = 23
	}
	return key
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
		// An entry without realms is refused by the firmware: no realms
		// configured means an administrator's.
		realms := amt.AdminRealms()
		if len(e.GetRealms()) > 0 {
			realms = realms[:0:0]
			for _, rl := range e.GetRealms() {
				realms = append(realms, int(rl))
			}
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
