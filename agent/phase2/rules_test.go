package phase2_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/amt"
	"github.com/amtops/amtops/internal/amtsim"
	"github.com/amtops/amtops/internal/amtsim/amtsimtest"
	"github.com/amtops/amtops/internal/wsman"
	amtopsv1 "github.com/amtops/amtops/proto/amtops/v1"
)

// Each attempt tries one password candidate, in turns; a refusal is
// retryable until every candidate had two turns, and the device sees one
// wrong login per attempt at most.
func TestPasswordTurns(t *testing.T) {
	const other, another = "0ther!Pass1", "An0ther!pw2"
	cases := []struct {
		name    string
		attempt int32
		newPw   string // the job's new password; the device has newPassword
		wantOK  bool
	}{
		{"attempt 1 tries the job's password (wrong)", 1, newPassword, false},
		{"attempt 2 tries the new password (right)", 2, newPassword, true},
		{"attempt 3 is the job's password again", 3, newPassword, false},
		{"attempt 4 is the new password again", 4, newPassword, true},
		{"attempt 0 counts as 1", 0, newPassword, false},
		{"neither right: one wrong login, no lockout", 1, another, false},
	}
	// Two wrong logins in a row lock the account: spraying would show.
	sim := amtsimtest.Start(t, amtsim.Config{Devices: len(cases), BaseIP: base86(t), Kind: amtsim.KindMEBx, Password: provPassword,
		CommitDelay: 30 * time.Millisecond, Firmware: amtsim.Firmware{LockoutThreshold: 2, LockoutDuration: time.Minute}}, nil)
	c := newCA(t)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := sim.Addrs()[i]
			job := provisionJob(t, c, a, fmt.Sprintf("turn%d", i))
			// The device's password is the job's new one, as after an
			// attempt that set it and died.
			mustRun(t, newExecutor(sim), job)
			job.Credentials.Password, job.Credentials.NewAdminPassword = other, tc.newPw
			job.Attempt = tc.attempt
			res := newExecutor(sim).Run(context.Background(), job, nil)
			if tc.wantOK != (res.Err == nil) {
				t.Fatalf("attempt %d: err %v, want ok %t", tc.attempt, res.Err, tc.wantOK)
			}
			if res.Err != nil && (!errors.Is(res.Err, wsman.ErrUnauthorized) || res.Permanent) {
				t.Errorf("err %v permanent %t, want a retryable refusal", res.Err, res.Permanent)
			}
			if st := device(t, sim, a); st.Lockouts != 0 {
				t.Errorf("%d lockouts: an attempt sent more than one wrong password", st.Lockouts)
			}
		})
	}
	t.Run("one candidate only: refusal is final at once", func(t *testing.T) {
		job := provisionJob(t, c, sim.Addrs()[0], "turn0")
		job.Credentials = &amtopsv1.Credentials{Username: "admin", Password: other}
		res := newExecutor(sim).Run(context.Background(), job, nil)
		if !errors.Is(res.Err, wsman.ErrUnauthorized) || !res.Permanent {
			t.Errorf("err %v permanent %t, want a permanent refusal", res.Err, res.Permanent)
		}
	})
}

// Firmware rules in the settings stage: Kerberos AES from the passphrase
// (never a 32-byte MasterKey), ACL entries without realms get an
// administrator's, the redirection listener follows KVM/SOL/IDE-R, and
// the Wi-Fi port is switched on with the profiles.
func TestFirmwareRules(t *testing.T) {
	sim := startSim(t, 3, map[int]amtsim.Override{0: {Version: "16.1.25"}})
	c := newCA(t)

	t.Run("kerberos AES from passphrase, ACL with admin realms", func(t *testing.T) {
		job := provisionJob(t, c, sim.Addrs()[0], "krb")
		job.Settings.WebUi = false
		job.Kerberos = &amtopsv1.Kerberos{Enabled: true, Realm: "corp.example", KeyVersion: 2, EncryptionType: 18,
			MasterKey: make([]byte, 32), Passphrase: "Acc0unt-Pass!", Salt: "CORP.EXAMPLEhostkrb.corp.example", IterationCount: 4096,
			Rc4Key: krbKey, Acl: []*amtopsv1.KerberosACL{{Sid: testSID, AccessPermission: 2}}}
		mustRun(t, newExecutor(sim), job)
		st := device(t, sim, sim.Addrs()[0])
		k := st.Kerberos
		if !k.Enabled || !k.PassphraseSet || k.MasterKeyHex != "" || !slices.Contains(k.EncryptionAlgorithms, amt.KerberosAES256) {
			t.Errorf("kerberos %+v, want passphrase-derived AES256 and no master key", k)
		}
		var acl *amtsim.UserState
		for i, u := range st.Users {
			if u.KerberosSID != "" {
				acl = &st.Users[i]
			}
		}
		if acl == nil || !slices.Equal(acl.Realms, amt.AdminRealms()) {
			t.Errorf("kerberos ACL entry %+v, want the admin realms %v", acl, amt.AdminRealms())
		}
	})

	t.Run("listener follows redirection", func(t *testing.T) {
		a := sim.Addrs()[1]
		job := provisionJob(t, c, a, "redir")
		job.Settings = &amtopsv1.Settings{Kvm: true}
		mustRun(t, newExecutor(sim), job)
		if st := device(t, sim, a); !st.KVM || !st.ListenerEnabled {
			t.Errorf("KVM only: kvm %t listener %t, want both on", st.KVM, st.ListenerEnabled)
		}
		up := updateJob(job, nil, false)
		up.Settings = &amtopsv1.Settings{}
		mustRun(t, newExecutor(sim), up)
		if st := device(t, sim, a); st.KVM || st.SOL || st.IDER || st.ListenerEnabled {
			t.Errorf("all off: kvm %t sol %t ider %t listener %t, want all off", st.KVM, st.SOL, st.IDER, st.ListenerEnabled)
		}
	})

	t.Run("wifi port on with the profiles", func(t *testing.T) {
		a := sim.Addrs()[2]
		job := provisionJob(t, c, a, "wifi")
		job.Networks = []*amtopsv1.NetworkProfile{netProfile(t, c, amtopsv1.NetworkProfile_KIND_WIRELESS, "wifi.corp.example")}
		if device(t, sim, a).WiFiPortEnabled {
			t.Fatal("wifi port on before provisioning")
		}
		mustRun(t, newExecutor(sim), job)
		if st := device(t, sim, a); !st.WiFiPortEnabled || len(st.WiFi) != 1 {
			t.Errorf("wifi port %t, %d profiles; want on with one", st.WiFiPortEnabled, len(st.WiFi))
		}
	})
}

// Every update brings new 802.1X and Wi-Fi client certificates (S14); the
// replaced ones are deleted, so the device's stores (23 entries) never
// fill however many updates run.
// A thousand updates in a row on one device never fill its stores (23
// certificates or keys): each brings new 802.1X and wireless client
// certificates, as phase 1's re-issue does, and the agent deletes what
// they replaced. The certificates rotate through a few pre-issued sets, so
// every update replaces something without paying for a thousand RSA keys.
func TestManyUpdatesKeepStoresSmall(t *testing.T) {
	const updates, sets = 1000, 3
	sim := amtsimtest.Start(t, amtsim.Config{Devices: 1, BaseIP: base86(t), Kind: amtsim.KindMEBx, Password: provPassword,
		CommitDelay: time.Millisecond}, nil)
	c := newCA(t)
	a := sim.Addrs()[0]
	prov := provisionJob(t, c, a, "many")
	mustRun(t, newExecutor(sim), prov)
	base := device(t, sim, a)
	var pool [][]*amtopsv1.NetworkProfile
	for range sets {
		pool = append(pool, []*amtopsv1.NetworkProfile{
			netProfile(t, c, amtopsv1.NetworkProfile_KIND_WIRED_8021X, "many.corp.example"),
			netProfile(t, c, amtopsv1.NetworkProfile_KIND_WIRELESS, "many.corp.example"),
		})
	}
	ex := newExecutor(sim)
	maxCerts, maxKeys := 0, 0
	for i := range updates {
		nets := pool[i%sets]
		job := updateJob(prov, nets, true)
		if res := ex.Run(context.Background(), job, nil); res.Err != nil {
			t.Fatalf("update %d: step %s: %v", i+1, res.ErrorStep, res.Err)
		}
		st := device(t, sim, a)
		maxCerts, maxKeys = max(maxCerts, len(st.Certificates)), max(maxKeys, len(st.Keys))
		if !st.IEEE8021.Enabled || len(st.WiFi) != 1 {
			t.Fatalf("update %d: 802.1X %t, %d Wi-Fi profiles", i+1, st.IEEE8021.Enabled, len(st.WiFi))
		}
		if k := slices.IndexFunc(st.Certificates, func(c amtsim.CertState) bool { return c.Handle == st.IEEE8021.ClientCertHandle }); k < 0 ||
			!bytes.Equal(st.Certificates[k].DER, nets[0].GetClientCertificateDer()) {
			t.Fatalf("update %d: 802.1X does not use the update's client certificate", i+1)
		}
	}
	// Provisioning's chain, leaf and key, plus one RADIUS root and the two
	// current client certificates and keys.
	if wantCerts, wantKeys := len(base.Certificates)+3, len(base.Keys)+2; maxCerts > wantCerts || maxKeys > wantKeys {
		t.Errorf("after %d updates: up to %d certificates and %d keys on the device, want at most %d and %d",
			updates, maxCerts, maxKeys, wantCerts, wantKeys)
	}
	t.Logf("%d updates: at most %d certificates and %d keys on the device (store limit 23)", updates, maxCerts, maxKeys)
}

// A CSME 16.1 device activated by hand in the MEBx (state 2) is TLS-only
// and serves its firmware's self-signed certificate: provisioning trusts
// it on first use, then the site certificate is served and verified.
func TestProvisionTLSOnlyDevice(t *testing.T) {
	sim := amtsimtest.Start(t, amtsim.Config{Devices: 1, BaseIP: base86(t), Kind: amtsim.KindMEBx, Version: "16.1.25",
		Password: provPassword, CommitDelay: 30 * time.Millisecond}, nil)
	c := newCA(t)
	job := provisionJob(t, c, sim.Addrs()[0], "tlsonly")
	job.Settings.WebUi = false
	res := mustRun(t, newExecutor(sim), job)
	checkProvisioned(t, sim, job, res)
	if res.Facts.GetControlMode() != 2 {
		t.Errorf("control mode %d, want 2 (ACM, set in the MEBx)", res.Facts.GetControlMode())
	}
}
