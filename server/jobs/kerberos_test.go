package jobs

import (
	"context"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/amtops/amtops/internal/amt"
	"github.com/amtops/amtops/internal/directory"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/krbkey"
	"github.com/amtops/amtops/internal/secrets"
	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// fixedDir stands in for Active Directory where Samba is not running
// (AMTOPS_REQUIRE_PEERS unset): it answers Publish with an account of
// the given msDS-SupportedEncryptionTypes and a fixed password, so the
// key material phase 1 derives can be checked. TestProvisionKerberosProof
// checks the same against the real KDC.
type fixedDir struct {
	enc      uint32
	password string // empty: Update leaves the password alone
}

func (d fixedDir) published(dev directory.Device) directory.Published {
	sam := dev.ComputerName + "-AMT$"
	return directory.Published{Account: directory.Account{DN: "CN=" + dev.ComputerName + "-AMT,OU=amt,DC=amt,DC=test",
		SAMAccountName: sam, KVNO: 3, EncryptionTypes: d.enc, SPNs: directory.SPNs(dev.FQDN)},
		Password: secrets.Redacted(d.password), Realm: "AMT.TEST", Salt: krbkey.ComputerSalt("AMT.TEST", sam)}
}
func (d fixedDir) Publish(_ context.Context, dev directory.Device) (directory.Published, error) {
	return d.published(dev), nil
}
func (d fixedDir) Update(_ context.Context, dev directory.Device) (directory.Published, error) {
	return d.published(dev), nil
}
func (fixedDir) RegisterSPNs(context.Context, string, string) error { return nil }
func (fixedDir) AddToGroups(context.Context, string) error          { return nil }
func (fixedDir) Delete(context.Context, string) (bool, error)       { return true, nil }

// The Kerberos payload is what firmware takes (AMT-WSMAN.md): AES comes
// from passphrase, salt and 4096 iterations, MasterKey is only ever the
// 16-byte RC4 key and only when RC4 is the etype, and ACL entries carry
// the administrator realms.
func TestKerberosPayload(t *testing.T) {
	const pw = "Acc0unt-Pa55word!"
	sids := []string{"S-1-5-21-1004336348-1177238915-682003330-512", "S-1-5-21-1004336348-1177238915-682003330-1105"}
	for _, tc := range []struct {
		name    string
		enc     uint32
		etype   int32
		wantRC4 bool
	}{
		{"aes256 aes128 rc4", krbkey.DefaultEnc, krbkey.AES256, true},
		{"aes128 only", krbkey.BitAES128, krbkey.AES128, false},
		{"rc4 only", krbkey.BitRC4, krbkey.RC4HMAC, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, fixedDir{enc: tc.enc, password: pw}, Site{})
			f.prov.site.Kerberos.AdminSIDs = sids
			d := f.device(t, "krb1")
			if err := f.prov.Handle(context.Background(), f.task(t, "k1", d, domain.KindProvision)); err != nil {
				t.Fatal(err)
			}
			job, _ := f.leaseOne(t)
			k := job.GetKerberos()
			if k == nil || !k.Enabled || k.EncryptionType != tc.etype {
				t.Fatalf("kerberos = %+v, want enabled with etype %d", k, tc.etype)
			}
			salt := krbkey.ComputerSalt("AMT.TEST", "krb1-AMT$")
			if k.Passphrase != pw || k.Salt != salt || k.IterationCount != 4096 {
				t.Errorf("passphrase/salt/iterations = %q/%q/%d, want the account password/%q/4096", k.Passphrase, k.Salt, k.IterationCount, salt)
			}
			rc4, err := krbkey.Derive(pw, krbkey.RC4HMAC, "", 3)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(k.Rc4Key) > 0; got != tc.wantRC4 || got && string(k.Rc4Key) != string(rc4.Value) {
				t.Errorf("rc4_key = %x, want the account's RC4 key: %v", k.Rc4Key, tc.wantRC4)
			}
			switch {
			case tc.etype == krbkey.RC4HMAC && string(k.MasterKey) != string(rc4.Value):
				t.Errorf("master_key = %x, want the 16-byte RC4 key", k.MasterKey)
			case tc.etype != krbkey.RC4HMAC && len(k.MasterKey) != 0:
				t.Errorf("master_key is %d bytes for etype %d; AMT takes only an RC4 MasterKey", len(k.MasterKey), k.EncryptionType)
			}
			checkACL(t, k, sids)
		})
	}
}

// An update that keeps the account password reuses the sealed key; one
// sealed before the fix, with a 32-byte AES MasterKey, goes out without it.
func TestKerberosPayloadFromSealedKey(t *testing.T) {
	f := newFixture(t, fixedDir{enc: krbkey.DefaultEnc}, Site{})
	f.prov.site.Kerberos.AdminSIDs = []string{"S-1-5-32-544"}
	d := f.device(t, "krb2")
	old := &pb.Kerberos{Enabled: true, Realm: "AMT.TEST", EncryptionType: krbkey.AES256, MasterKey: make([]byte, 32),
		Passphrase: "Acc0unt-Pa55word!", Salt: "AMT.TESThostkrb2-amt.amt.test", IterationCount: 4096,
		Acl: []*pb.KerberosACL{{Sid: "S-1-5-32-544", AccessPermission: 2}}}
	b, err := proto.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.PutSecret(context.Background(), kerberosSecret(d.ID), b); err != nil {
		t.Fatal(err)
	}
	if err := f.prov.Handle(context.Background(), f.task(t, "k2", d, domain.KindUpdate)); err != nil {
		t.Fatal(err)
	}
	job, _ := f.leaseOne(t)
	k := job.GetKerberos()
	if k == nil || len(k.MasterKey) != 0 || k.Passphrase != old.Passphrase || k.IterationCount != 4096 {
		t.Fatalf("kerberos from the sealed key = %+v, want the passphrase and no AES MasterKey", k)
	}
	checkACL(t, k, []string{"S-1-5-32-544"})
}

func checkACL(t *testing.T, k *pb.Kerberos, sids []string) {
	t.Helper()
	if len(k.Acl) != len(sids) {
		t.Fatalf("%d ACL entries, want %d", len(k.Acl), len(sids))
	}
	want := int32s(amt.AdminRealms())
	for i, e := range k.Acl {
		if e.Sid != sids[i] || e.AccessPermission != amt.AccessAny || !slices.Equal(e.Realms, want) {
			t.Errorf("acl[%d] = %+v, want %s, any access, realms %v", i, e, sids[i], want)
		}
	}
}
