package amt_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/amt"
	"github.com/amtops/amtops/internal/wsman"
)

// putBody returns the body of the one Put among the requests.
func putBody(t *testing.T, bodies [][]byte) string {
	t.Helper()
	var put []string
	for _, b := range bodies {
		if bytes.Contains(b, []byte("/transfer/Put<")) {
			put = append(put, string(b))
		}
	}
	if len(put) != 1 {
		t.Fatalf("%d Puts sent, want 1", len(put))
	}
	return put[0]
}

// Kerberos: AES through Passphrase + Salt + IterationCount, RC4 through a
// 16-byte MasterKey, never both and never a 32-byte key.
func TestKerberosKey(t *testing.T) {
	aes := amt.KerberosKey{Passphrase: "Acct-P@ss-1", Salt: "CORP.EXAMPLEhostpc01-amt.corp.example", IterationCount: 4096,
		RC4Key: bytes.Repeat([]byte{0xab}, 16), EType: 18}
	rc4 := amt.KerberosKey{RC4Key: bytes.Repeat([]byte{0xab}, 16), EType: 23}
	tests := []struct {
		name      string
		key       amt.KerberosKey
		supported []int // nil: as the fixture (0, 1, 2)
		golden    string
		want      []string // in the Put
		never     []string // never in the Put
		setErr    string
	}{
		{name: "aes256", key: aes, golden: "kerberos_aes",
			want:  []string{"<h:Passphrase>Acct-P@ss-1</h:Passphrase>", "<h:Salt>CORP.EXAMPLEhostpc01-amt.corp.example</h:Salt>", "<h:IterationCount>4096</h:IterationCount>", "<h:ConfiguredEncryptionAlgorithms>2</h:ConfiguredEncryptionAlgorithms>"},
			never: []string{"MasterKey"}},
		{name: "aes128", key: amt.KerberosKey{Passphrase: "p", Salt: "s", IterationCount: 4096, EType: 17},
			want: []string{"<h:Passphrase>p</h:Passphrase>", "<h:ConfiguredEncryptionAlgorithms>1</h:ConfiguredEncryptionAlgorithms>"}, never: []string{"MasterKey"}},
		{name: "rc4 on amt 8+", key: rc4, golden: "kerberos_rc4",
			want:  []string{"<h:MasterKey>q6urq6urq6urq6urq6urqw==</h:MasterKey>", "<h:ConfiguredEncryptionAlgorithms>0</h:ConfiguredEncryptionAlgorithms>"},
			never: []string{"Passphrase", "Salt", "IterationCount", "<h:ConfiguredEncryptionAlgorithms>1<", "<h:ConfiguredEncryptionAlgorithms>2<"}},
		{name: "aes key on firmware without aes", key: aes, supported: []int{0}, setErr: "does not support"},
		{name: "aes without passphrase", key: amt.KerberosKey{Salt: "s", IterationCount: 4096, EType: 18}, setErr: "Passphrase is empty"},
		{name: "aes without salt", key: amt.KerberosKey{Passphrase: "p", IterationCount: 4096, EType: 18}, setErr: "Salt is empty"},
		{name: "aes without iterations", key: amt.KerberosKey{Passphrase: "p", Salt: "s", EType: 18}, setErr: "IterationCount"},
		{name: "rc4 key of 32 bytes", key: amt.KerberosKey{RC4Key: make([]byte, 32), EType: 23}, setErr: "want 16"},
		{name: "unknown etype", key: amt.KerberosKey{RC4Key: make([]byte, 16)}, setErr: "EType 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, d := newFixtureClient(t, nil)
			ctx := context.Background()
			k, err := c.KerberosSettings(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if tc.supported != nil {
				k.SupportedEncryptionAlgorithms = tc.supported
			}
			k.RealmName, k.KeyVersion, k.KrbEnabled, k.MaximumClockTolerance = "CORP.EXAMPLE", 3, true, 5
			err = k.SetKey(tc.key)
			if tc.setErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.setErr) {
					t.Fatalf("SetKey err = %v, want %q", err, tc.setErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := c.PutKerberosSettings(ctx, k); err != nil {
				t.Fatal(err)
			}
			put := putBody(t, d.bodies)
			for _, w := range tc.want {
				if !strings.Contains(put, w) {
					t.Errorf("Put lacks %s", w)
				}
			}
			for _, n := range tc.never {
				if strings.Contains(put, n) {
					t.Errorf("Put carries %s", n)
				}
			}
			if tc.golden != "" {
				compareGolden(t, tc.golden, d.bodies)
			}
		})
	}
}

// PutKerberosSettings refuses what firmware refuses, before the wire.
func TestKerberosPutRules(t *testing.T) {
	tests := []struct {
		name string
		set  func(k *amt.KerberosSettings)
		want string
	}{
		{"32-byte master key", func(k *amt.KerberosSettings) { k.MasterKey = make([]byte, 32) }, "16-byte RC4-HMAC key only"},
		{"master key and passphrase", func(k *amt.KerberosSettings) {
			k.MasterKey, k.Passphrase, k.Salt, k.IterationCount = make([]byte, 16), "p", "s", 4096
		}, "both set"},
		{"master key for aes", func(k *amt.KerberosSettings) {
			k.MasterKey, k.ConfiguredEncryptionAlgorithms = make([]byte, 16), []int{amt.KerberosAES256}
		}, "lists AES"},
		{"aes without passphrase", func(k *amt.KerberosSettings) {
			k.MasterKey, k.ConfiguredEncryptionAlgorithms = nil, []int{amt.KerberosAES128}
		}, "without a Passphrase"},
		{"on without a key", func(k *amt.KerberosSettings) { k.MasterKey = nil }, "without a key"},
		{"passphrase without salt", func(k *amt.KerberosSettings) { k.MasterKey, k.Passphrase, k.IterationCount = nil, "p", 4096 }, "without Salt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, d := newFixtureClient(t, nil)
			k, err := c.KerberosSettings(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			k.RealmName, k.KrbEnabled, k.MasterKey = "CORP.EXAMPLE", true, make([]byte, 16)
			tc.set(k)
			err = c.PutKerberosSettings(context.Background(), k)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			for _, b := range d.bodies {
				if bytes.Contains(b, []byte("/transfer/Put<")) {
					t.Error("refused settings reached the device")
				}
			}
		})
	}
}

// ACL entries carry realms; an entry without one is refused here with the
// remedy named, as the firmware would refuse it.
func TestKerberosACLRealms(t *testing.T) {
	sid := []byte{1, 5, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x00, 2, 0, 0}
	c, d := newFixtureClient(t, nil)
	ctx := context.Background()
	if _, err := c.AddKerberosUser(ctx, sid, amt.AccessAny, amt.AdminRealms()); err != nil {
		t.Fatal(err)
	}
	compareGolden(t, "add_kerberos_admin", d.bodies)
	got := regexp.MustCompile(`<h:Realms>(\d+)</h:Realms>`).FindAllStringSubmatch(string(d.bodies[0]), -1)
	if len(got) != len(amt.AdminRealms()) || got[0][1] != "2" {
		t.Errorf("realms sent %v, want one element per realm of %v", got, amt.AdminRealms())
	}
	for _, bad := range []struct {
		name   string
		access int
		realms []int
		want   string
	}{
		{"no realms", amt.AccessAny, nil, "AdminRealms"},
		{"realm 1", amt.AccessAny, []int{1}, "not an AMT realm"},
		{"realm 25", amt.AccessAny, []int{3, 25}, "not an AMT realm"},
		{"access 3", 3, []int{3}, "AccessPermission"},
	} {
		t.Run(bad.name, func(t *testing.T) {
			n := len(d.bodies)
			_, err := c.AddKerberosUser(ctx, sid, bad.access, bad.realms)
			if err == nil || !strings.Contains(err.Error(), bad.want) {
				t.Fatalf("err = %v, want %q", err, bad.want)
			}
			if len(d.bodies) != n {
				t.Error("refused entry reached the device")
			}
		})
	}
}

// A refused AddKey is "already there" only when the store lists the key:
// 2068 is NOT_FOUND, never read as a duplicate by itself.
func TestAddKeyRefused(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fixturePath(t, "amt/publickey/management/addkey.xml"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := os.ReadFile(fixturePath(t, "amt/publicprivate/pull.xml"))
	if err != nil {
		t.Fatal(err)
	}
	// handle 1 of the store holds key
	keyReply := regexp.MustCompile(`(?s)<h:DERKey>[^<]*(</h:DERKey>\s*<h:ElementName>Intel\(r\) AMT Key</h:ElementName>\s*<h:InstanceID>Intel\(r\) AMT Key: Handle: 1<)`).
		ReplaceAllString(string(keys), "<h:DERKey>"+base64.StdEncoding.EncodeToString(x509.MarshalPKCS1PublicKey(&key.PublicKey))+"${1}")
	refuse := func(code string) string {
		return regexp.MustCompile(`(?s)<g:AddKey_OUTPUT>.*</g:AddKey_OUTPUT>`).ReplaceAllString(string(b), `<g:AddKey_OUTPUT><g:ReturnValue>`+code+`</g:ReturnValue></g:AddKey_OUTPUT>`)
	}
	tests := []struct {
		name   string
		code   string
		key    *rsa.PrivateKey
		wantID string
		wantRV int
	}{
		{"duplicate, listed", "2058", key, "Intel(r) AMT Key: Handle: 1", 0},
		{"2068, listed", "2068", key, "Intel(r) AMT Key: Handle: 1", 0},
		{"2068, not listed", "2068", other, "", wsman.StatusNotFound},
		{"duplicate, not listed", "2058", other, "", wsman.StatusDuplicate},
		{"invalid key", "2062", key, "", wsman.StatusInvalidKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			routes := withReply(t, withReply(t, nil, "Pull AMT_PublicPrivateKeyPair", keyReply), "AddKey AMT_PublicKeyManagementService", refuse(tc.code))
			c, _ := newFixtureClient(t, routes)
			id, err := c.AddKey(context.Background(), x509.MarshalPKCS1PrivateKey(tc.key))
			if tc.wantRV == 0 {
				if err != nil || id != tc.wantID {
					t.Fatalf("AddKey = %q, %v; want %q", id, err, tc.wantID)
				}
				return
			}
			if !wsman.IsReturnValue(err, tc.wantRV) || id != "" {
				t.Fatalf("AddKey = %q, %v; want ReturnValue %d", id, err, tc.wantRV)
			}
			if tc.wantRV == wsman.StatusNotFound && (!strings.Contains(err.Error(), "NOT_FOUND") || wsman.IsReturnValue(err, wsman.StatusDuplicate)) {
				t.Errorf("2068 named %v", err)
			}
		})
	}
}

func TestRedirectionListener(t *testing.T) {
	on, off := true, false
	tests := []struct {
		name    string
		r       amt.Redirection
		golden  string
		wantPut string // ListenerEnabled value put, "" for no Put
	}{
		// fixture: listener on, IDE-R+SOL
		{"kvm only keeps the listener", amt.Redirection{KVM: &on}, "redirection_kvm_only", ""},
		{"all off turns the listener off last", amt.Redirection{KVM: &off}, "redirection_all_off", "false"},
		{"no kvm on standard manageability", amt.Redirection{SOL: true}, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, d := newFixtureClient(t, nil)
			if err := c.ApplyRedirection(context.Background(), tc.r); err != nil {
				t.Fatal(err)
			}
			all := string(bytes.Join(d.bodies, nil))
			if strings.Contains(all, "CIM_KVMRedirectionSAP") != (tc.r.KVM != nil) {
				t.Errorf("KVM touched %v, want %v", !(tc.r.KVM != nil), tc.r.KVM != nil)
			}
			if tc.wantPut == "" {
				if strings.Contains(all, "/transfer/Put<") {
					t.Error("listener written though already as wanted")
				}
			} else {
				put := putBody(t, d.bodies)
				if !strings.Contains(put, "<h:ListenerEnabled>"+tc.wantPut+"</h:ListenerEnabled>") {
					t.Errorf("Put %s, want ListenerEnabled %s", put, tc.wantPut)
				}
				if !bytes.Contains(d.bodies[len(d.bodies)-1], []byte("/transfer/Put<")) {
					t.Error("listener not turned off after the features")
				}
			}
			if tc.golden != "" {
				compareGolden(t, tc.golden, d.bodies)
			}
		})
	}

	// a device with the listener off: KVM on turns it on first
	b, err := os.ReadFile(fixturePath(t, "amt/redirectionservice/get.xml"))
	if err != nil {
		t.Fatal(err)
	}
	offReply := strings.Replace(string(b), "<g:ListenerEnabled>true</g:ListenerEnabled>", "<g:ListenerEnabled>false</g:ListenerEnabled>", 1)
	c, d := newFixtureClient(t, withReply(t, nil, "Get AMT_RedirectionService", offReply))
	if err := c.SetKVM(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	if len(d.bodies) != 3 || !bytes.Contains(d.bodies[1], []byte("<h:ListenerEnabled>true</h:ListenerEnabled>")) || !bytes.Contains(d.bodies[2], []byte("CIM_KVMRedirectionSAP/RequestStateChange")) {
		t.Errorf("want Get, Put listener on, then KVM on; sent %d requests", len(d.bodies))
	}
}

// CSME 16.1+: the read-only NonSecureConnectionsSupported that a Get shows
// is never put back.
func TestTLSPutLeavesReadOnlyOut(t *testing.T) {
	b, err := os.ReadFile(fixturePath(t, "amt/tls/settingdata/get.xml"))
	if err != nil {
		t.Fatal(err)
	}
	reply := strings.Replace(string(b), "<g:MutualAuthentication>false</g:MutualAuthentication>",
		"<g:MutualAuthentication>false</g:MutualAuthentication>\n<g:NonSecureConnectionsSupported>false</g:NonSecureConnectionsSupported>", 1)
	c, d := newFixtureClient(t, withReply(t, nil, "Get AMT_TLSSettingData", reply))
	if err := c.SetTLS(context.Background(), amt.TLSSettingsRemote, true, true, false); err != nil {
		t.Fatal(err)
	}
	put := putBody(t, d.bodies)
	if strings.Contains(put, "NonSecureConnectionsSupported") {
		t.Errorf("read-only property put back: %s", put)
	}
	if !strings.Contains(put, "<h:MutualAuthentication>true</h:MutualAuthentication>") {
		t.Errorf("Put lacks the change: %s", put)
	}
}

// DERKey is PKCS#1 on some firmware, SubjectPublicKeyInfo on others.
func TestKeyPairDERKeyForms(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pkcs1 := x509.MarshalPKCS1PublicKey(&key.PublicKey)
	for _, tc := range []struct {
		name string
		der  []byte
		ok   bool
	}{{"pkcs1", pkcs1, true}, {"spki", spki, true}, {"junk", []byte("junk"), false}} {
		t.Run(tc.name, func(t *testing.T) {
			pub, err := amt.KeyPair{InstanceID: "k", PublicDER: tc.der}.RSAPublicKey()
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v", err)
			}
			if tc.ok && !pub.Equal(&key.PublicKey) {
				t.Error("wrong key decoded")
			}
		})
	}
	// and from the real reply (PKCS#1)
	c, _ := newFixtureClient(t, nil)
	keys, err := c.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if _, err := k.RSAPublicKey(); err != nil {
			t.Errorf("fixture key %s: %v", k.InstanceID, err)
		}
	}
}

// A replaced certificate goes with its key; the bound one and roots keep
// theirs.
func TestDeleteCertificateAndKey(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "pc01.corp.example"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	spki, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	certs, err := os.ReadFile(fixturePath(t, "amt/publickey/certificate/pull.xml"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := os.ReadFile(fixturePath(t, "amt/publicprivate/pull.xml"))
	if err != nil {
		t.Fatal(err)
	}
	// handle 1 of each becomes our certificate and its key (SPKI form)
	certReply := regexp.MustCompile(`(?s)(Handle: 1</h:InstanceID>.*?<h:X509Certificate>)[^<]*`).
		ReplaceAllString(string(certs), "${1}"+base64.StdEncoding.EncodeToString(der))
	keyReply := regexp.MustCompile(`(?s)<h:DERKey>[^<]*(</h:DERKey>\s*<h:ElementName>Intel\(r\) AMT Key</h:ElementName>\s*<h:InstanceID>Intel\(r\) AMT Key: Handle: 1<)`).
		ReplaceAllString(string(keys), "<h:DERKey>"+base64.StdEncoding.EncodeToString(spki)+"${1}")
	routes := withReply(t, withReply(t, nil, "Pull AMT_PublicKeyCertificate", certReply), "Pull AMT_PublicPrivateKeyPair", keyReply)

	tests := []struct {
		cert       string
		deleteKey  bool
		deleteCert bool
		wantErr    bool
	}{
		{"Intel(r) AMT Certificate: Handle: 1", true, true, false},
		{"Intel(r) AMT Certificate: Handle: 2", false, true, false},  // trusted root
		{"Intel(r) AMT Certificate: Handle: 9", false, false, false}, // already gone
		{"Intel(r) AMT Certificate: Handle: 3", false, false, true},  // serving TLS
	}
	for _, tc := range tests {
		t.Run(tc.cert, func(t *testing.T) {
			c, d := newFixtureClient(t, routes)
			err := c.DeleteCertificateAndKey(context.Background(), tc.cert)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			all := string(bytes.Join(d.bodies, nil))
			delCert := strings.Contains(all, `AMT_PublicKeyCertificate</w:ResourceURI><a:MessageID>`) && strings.Contains(all, "/transfer/Delete</a:Action><a:To>/wsman</a:To><w:ResourceURI>http://intel.com/wbem/wscim/1/amt-schema/1/AMT_PublicKeyCertificate")
			delKey := strings.Contains(all, "/transfer/Delete</a:Action><a:To>/wsman</a:To><w:ResourceURI>http://intel.com/wbem/wscim/1/amt-schema/1/AMT_PublicPrivateKeyPair")
			if delCert != tc.deleteCert || delKey != tc.deleteKey {
				t.Errorf("deleted certificate %v key %v, want %v %v", delCert, delKey, tc.deleteCert, tc.deleteKey)
			}
			if tc.deleteKey && !strings.Contains(all, `<w:Selector Name="InstanceID">Intel(r) AMT Key: Handle: 1</w:Selector>`) {
				t.Error("deleted another key than the certificate's")
			}
			if tc.deleteCert && !strings.Contains(all, `<w:Selector Name="InstanceID">`+tc.cert+`</w:Selector>`) {
				t.Error("deleted another certificate")
			}
		})
	}

	// FindKey: the SPKI-form key is found by its public part, another is not
	c, _ := newFixtureClient(t, routes)
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		pub  *rsa.PublicKey
		want string
	}{{&key.PublicKey, "Intel(r) AMT Key: Handle: 1"}, {&other.PublicKey, ""}} {
		if id, err := c.FindKey(context.Background(), tc.pub); err != nil || id != tc.want {
			t.Errorf("FindKey = %q, %v; want %q", id, err, tc.want)
		}
	}
}
