package amtsim

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"math/big"
	"testing"
	"time"
)

// testCA is a small CA standing in for the site's issuing CA.
type testCA struct {
	cert *x509.Certificate
	der  []byte
	key  crypto.Signer
}

func newTestCA(t testing.TB, name string, bits int) *testCA {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name, Organization: []string{"amtops test"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, der: der, key: k}
}

// issue signs a server certificate for the public key in a CSR.
func (ca *testCA) issue(t testing.TB, csrDER []byte, dns string) []byte {
	t.Helper()
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		t.Fatalf("parse CSR: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatalf("CSR signature (device must sign with its key): %v", err)
	}
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: n, Subject: pkix.Name{CommonName: dns}, DNSNames: []string{dns},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// nullSignedCSR builds a PKCS#10 request for the device's public key with
// an all-zero signature: the "null-signed" request AMT re-signs.
func nullSignedCSR(t testing.TB, pubPKCS1B64, cn string) string {
	t.Helper()
	pub, err := x509.ParsePKCS1PublicKey(mustB64(t, pubPKCS1B64))
	if err != nil {
		t.Fatal(err)
	}
	throwaway, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn}}, throwaway)
	if err != nil {
		t.Fatal(err)
	}
	var outer struct {
		TBS    asn1.RawValue
		SigAlg pkix.AlgorithmIdentifier
		Sig    asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &outer); err != nil {
		t.Fatal(err)
	}
	var tbs struct {
		Version    int
		Subject    asn1.RawValue
		PublicKey  asn1.RawValue
		Attributes asn1.RawValue `asn1:"optional"`
	}
	if _, err := asn1.Unmarshal(outer.TBS.FullBytes, &tbs); err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	tbs.PublicKey = asn1.RawValue{FullBytes: spki}
	tbsDER, err := asn1.Marshal(tbs)
	if err != nil {
		t.Fatal(err)
	}
	outer.TBS = asn1.RawValue{FullBytes: tbsDER}
	outer.SigAlg = pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}, Parameters: asn1.NullRawValue}
	outer.Sig = asn1.BitString{Bytes: make([]byte, 256), BitLength: 2048}
	csr, err := asn1.Marshal(outer)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(csr)
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func eprXML(name, uri, selName, selValue string) string {
	return `<h:` + name + `><a:Address>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address><a:ReferenceParameters><w:ResourceURI>` +
		uri + `</w:ResourceURI><w:SelectorSet><w:Selector Name="` + selName + `">` + selValue + `</w:Selector></w:SelectorSet></a:ReferenceParameters></h:` + name + `>`
}

// provisionTLS runs stage 1 of S7 over c: root, on-device key, CSR, leaf,
// credential context, TLS settings. It returns the CA and the leaf handle.
func provisionTLS(t testing.TB, c *wsman, dns string, acceptNonSecure bool) (*testCA, string) {
	t.Helper()
	pkm := amtPrefix + "AMT_PublicKeyManagementService"
	ca := newTestCA(t, "amtops test root", 2048)
	if rv := c.rv(pkm, "AddTrustedRootCertificate", `<h:CertificateBlob>`+b64(ca.der)+`</h:CertificateBlob>`); rv != "0" {
		t.Fatalf("AddTrustedRootCertificate: %s", rv)
	}
	out := c.invoke(pkm, "GenerateKeyPair", nil, `<h:KeyAlgorithm>0</h:KeyAlgorithm><h:KeyLength>2048</h:KeyLength>`)
	keyID := textOf(t, out, "Selector")
	keys := c.pull(amtPrefix + "AMT_PublicPrivateKeyPair")
	csr := nullSignedCSR(t, textOf(t, keys, "DERKey"), dns)
	out = c.invoke(pkm, "GeneratePKCS10RequestEx", nil, eprXML("KeyPair", amtPrefix+"AMT_PublicPrivateKeyPair", "InstanceID", keyID)+
		`<h:SigningAlgorithm>1</h:SigningAlgorithm><h:NullSignedCertificateRequest>`+csr+`</h:NullSignedCertificateRequest>`)
	if rv := textOf(t, out, "ReturnValue"); rv != "0" {
		t.Fatalf("GeneratePKCS10RequestEx: %s", rv)
	}
	signed, _ := base64.StdEncoding.DecodeString(textOf(t, out, "SignedCertificateRequest"))
	leaf := ca.issue(t, signed, dns)
	out = c.invoke(pkm, "AddCertificate", nil, `<h:CertificateBlob>`+b64(leaf)+`</h:CertificateBlob>`)
	leafID := textOf(t, out, "Selector")
	ctxURI := amtPrefix + "AMT_TLSCredentialContext"
	c.ok(actionCreate, ctxURI, nil, credentialContextXML(leafID))
	c.put(amtPrefix+"AMT_TLSSettingData", map[string]string{"InstanceID": tls8023ID}, "AMT_TLSSettingData",
		`<h:AcceptNonSecureConnections>`+boolStr(acceptNonSecure)+`</h:AcceptNonSecureConnections><h:ElementName>`+tls8023ID+
			`</h:ElementName><h:Enabled>true</h:Enabled><h:InstanceID>`+tls8023ID+`</h:InstanceID><h:MutualAuthentication>false</h:MutualAuthentication>`)
	return ca, leafID
}

func credentialContextXML(leafID string) string {
	uri := amtPrefix + "AMT_TLSCredentialContext"
	return `<h:AMT_TLSCredentialContext xmlns:h="` + uri + `">` +
		eprXML("ElementInContext", amtPrefix+"AMT_PublicKeyCertificate", "InstanceID", leafID) +
		eprXML("ElementProvidingContext", collectionURI, "ElementName", collectionEl) + `</h:AMT_TLSCredentialContext>`
}

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func mustB64(t testing.TB, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("base64 %q: %v", s, err)
	}
	return b
}

// x509PKCS1 makes a fresh RSA key as AddKey's PKCS#1 blob.
func x509PKCS1(t testing.TB) []byte {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return x509.MarshalPKCS1PrivateKey(k)
}
