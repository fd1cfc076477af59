package jobs

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/amtops/amtops/internal/amt"
	"github.com/amtops/amtops/internal/directory"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/krbkey"
	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// Directory: the AMT account in Active Directory and the Kerberos key
// derived from its password.

func (r *run) dirDevice() directory.Device {
	return directory.Device{UUID: r.dev.UUID, ComputerName: r.dev.HostName, ComputerDN: r.dev.ComputerDN, FQDN: r.dev.FQDN()}
}

// publish is S4 for provisioning: the AMT account, linked to the Windows
// computer, with a fresh password whose key AMT gets (S10). For update
// (S13) the account is updated, published if missing, and its password
// kept unless it had to be created.
func (r *run) publish(ctx context.Context) (string, error) {
	if r.p.dir == nil {
		return "skipped: no directory configured; Kerberos stays off", nil
	}
	if r.dev.UUID == "" {
		return "", domain.InvalidField("device.uuid", "", "the AMT UUID is needed for the AD account: run discovery first")
	}
	do := r.p.dir.Publish
	if r.t.Kind == domain.KindUpdate {
		do = r.p.dir.Update
	}
	// Publish resets the password (a new kvno); a re-run after a crash
	// simply makes a newer key, which is the one phase 2 installs.
	pub, err := do(ctx, r.dirDevice())
	if err != nil {
		return "", err
	}
	r.accountDN, r.spns = pub.DN, pub.SPNs
	if err := r.kerberos(ctx, pub); err != nil {
		return "", err
	}
	verb := "updated"
	if pub.Created {
		verb = "created"
	}
	return verb + " " + pub.DN + " kvno " + fmt.Sprint(pub.KVNO), nil
}

// kerberos derives AMT's Kerberos key from a fresh account password and
// keeps it sealed, so that an update that leaves the password alone can
// still give the device its key.
func (r *run) kerberos(ctx context.Context, pub directory.Published) error {
	if !r.p.site.Kerberos.Enabled {
		return nil
	}
	var k *pb.Kerberos
	if pub.Password == "" {
		b, err := r.p.store.GetSecret(ctx, kerberosSecret(r.dev.ID))
		if err != nil {
			return fmt.Errorf("kerberos key of %s: %w", r.dev.ID, err)
		}
		k = &pb.Kerberos{}
		if err := proto.Unmarshal(b, k); err != nil {
			return fmt.Errorf("decode kerberos key of %s: %w", r.dev.ID, err)
		}
		firmwareKey(k) // sealed by an earlier version, perhaps with an AES MasterKey
	} else {
		var err error
		if k, err = kerberosKey(pub); err != nil {
			return err
		}
		b, err := proto.Marshal(k)
		if err != nil {
			return fmt.Errorf("encode kerberos key: %w", err)
		}
		if err := r.p.store.PutSecret(ctx, kerberosSecret(r.dev.ID), b); err != nil {
			return err
		}
	}
	k.MaxClockToleranceMinutes = int32(r.p.site.Kerberos.MaxClockTolerance)
	k.Acl = kerberosACL(r.p.site.Kerberos.AdminSIDs)
	r.job.Kerberos = k
	return nil
}

// kerberosKey is what AMT_KerberosSettingData takes for the account
// (AMT-WSMAN.md, Kerberos): the password with its salt and iteration
// count, from which firmware derives its AES keys, and a 16-byte RC4 key
// for firmware without AES. The etype is the account's strongest, which
// the KDC encrypts service tickets with.
func kerberosKey(pub directory.Published) (*pb.Kerberos, error) {
	keys, err := pub.Keys()
	if err != nil {
		return nil, err
	}
	k := &pb.Kerberos{Enabled: true, Realm: pub.Realm, KeyVersion: int32(pub.KVNO), EncryptionType: keys[0].EType,
		Passphrase: pub.Password.Reveal(), Salt: pub.Salt, IterationCount: aesIterations}
	for _, key := range keys {
		if key.EType == krbkey.RC4HMAC {
			k.Rc4Key = key.Value
		}
	}
	firmwareKey(k)
	return k, nil
}

// aesIterations is the RFC 3962 default PBKDF2 count AD uses.
const aesIterations = 4096

// firmwareKey keeps MasterKey for what firmware takes there: the 16-byte
// RC4 key, and only when RC4 is the etype. An AES key is never sent; the
// firmware derives it from Passphrase, Salt and IterationCount.
func firmwareKey(k *pb.Kerberos) {
	k.MasterKey = nil
	if k.EncryptionType == krbkey.RC4HMAC && len(k.Rc4Key) == 16 {
		k.MasterKey = k.Rc4Key
	}
	if len(k.Rc4Key) != 16 {
		k.Rc4Key = nil
	}
}

// kerberosACL grants each administrator SID every realm AMT serves
// remotely (amt.AdminRealms): firmware refuses an entry without realms.
func kerberosACL(sids []string) []*pb.KerberosACL {
	var acl []*pb.KerberosACL
	for _, sid := range sids {
		acl = append(acl, &pb.KerberosACL{Sid: sid, AccessPermission: amt.AccessAny, Realms: int32s(amt.AdminRealms())})
	}
	return acl
}

func int32s(xs []int) []int32 {
	out := make([]int32, len(xs))
	for i, x := range xs {
		out[i] = int32(x)
	}
	return out
}

// registerSPNs is S5: HTTP/fqdn:16992–16995, port-qualified only.
func (r *run) registerSPNs(ctx context.Context) (string, error) {
	if r.p.dir == nil {
		return "skipped: no directory configured", nil
	}
	spns := directory.SPNs(r.dev.FQDN())
	detail := "HTTP/" + r.dev.FQDN() + ":16992-16995"
	if sameSPNs(r.spns, spns) {
		// Publish set them and read the account back in this run: a
		// second modify would only repeat that LDAP write.
		detail += " (set with the account)"
	} else if err := r.p.dir.RegisterSPNs(ctx, r.accountDN, r.dev.FQDN()); err != nil {
		return "", err
	}
	return detail, r.recordAccount(ctx, r.accountDN, spns)
}

// recordAccount keeps on the device what AD now holds for it, so that
// administrators see the account and SPNs without asking AD.
func (r *run) recordAccount(ctx context.Context, dn string, spns []string) error {
	_, err := r.p.store.UpdateDevice(ctx, r.dev.ID, func(d *domain.Device) error {
		d.ADAccountDN, d.SPNs = dn, spns
		return nil
	})
	if err != nil {
		return fmt.Errorf("record AD account of %s: %w", r.dev.ID, err)
	}
	return nil
}

// sameSPNs compares SPN sets as AD does, case-insensitively.
func sameSPNs(have, want []string) bool {
	if len(have) != len(want) {
		return false
	}
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || strings.EqualFold(h, w)
		}
		if !found {
			return false
		}
	}
	return true
}

// addToGroups is S6, off by default.
func (r *run) addToGroups(ctx context.Context) (string, error) {
	if r.p.dir == nil || !r.p.site.AddToGroups {
		return "skipped: adding to 802.1X and wireless groups is off", nil
	}
	if err := r.p.dir.AddToGroups(ctx, r.accountDN); err != nil {
		return "", err
	}
	return "added to the 802.1X and wireless groups", nil
}

// deleteAccount is S17: the AMT account and its SPNs leave AD.
func (r *run) deleteAccount(ctx context.Context) (string, error) {
	if r.p.dir == nil {
		return "skipped: no directory configured", nil
	}
	deleted, err := r.p.dir.Delete(ctx, r.dev.HostName)
	if err != nil {
		return "", err
	}
	if err := r.recordAccount(ctx, "", nil); err != nil {
		return "", err
	}
	if !deleted {
		return "no AMT account to delete", nil
	}
	return "deleted the AMT account and its SPNs", nil
}
