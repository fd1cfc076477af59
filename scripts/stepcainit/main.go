// Command stepcainit writes a standalone smallstep step-ca into a folder
// for tests and the demo, without the step CLI: an RSA-2048 root and
// intermediate (older AMT firmware accepts no larger CA keys; `step ca init`
// would make EC P-256 ones), a JWK provisioner whose key is encrypted with a
// random password, and ca.json with the CRL enabled. It prints the port it
// chose. scripts/stepca.sh runs it.
package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	_ "crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// leafTemplate is the provisioner's X.509 template. It gives each
// amtops profile its own extended key usage from the token's
// amtops_profile claim (step-ca's default gives serverAuth and clientAuth).
const leafTemplate = `{
	"subject": {{ toJson .Subject }},
	"sans": {{ toJson .SANs }},
{{- if typeIs "*rsa.PublicKey" .Insecure.CR.PublicKey }}
	"keyUsage": ["keyEncipherment", "digitalSignature"],
{{- else }}
	"keyUsage": ["digitalSignature"],
{{- end }}
{{- if and (hasKey .Token "amtops_profile") (eq (toString .Token.amtops_profile) "client-auth") }}
	"extKeyUsage": ["clientAuth"]
{{- else }}
	"extKeyUsage": ["serverAuth"]
{{- end }}
}`

func main() {
	dir := flag.String("dir", "", "folder to write the CA into")
	name := flag.String("provisioner", "amtops", "JWK provisioner name")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "stepcainit: -dir is required")
		os.Exit(2)
	}
	port, err := run(*dir, *name)
	if err != nil {
		fmt.Fprintln(os.Stderr, "stepcainit:", err)
		os.Exit(1)
	}
	fmt.Println(port)
}

func run(dir, name string) (int, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return 0, err
	}
	for _, d := range []string{"certs", "secrets", "config", "db"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return 0, err
		}
	}
	now := time.Now().UTC().Truncate(time.Second)
	rootKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return 0, err
	}
	interKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return 0, err
	}
	rootTmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "amtops test step-ca Root CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(20, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true, MaxPathLen: 1,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		return 0, err
	}
	root, _ := x509.ParseCertificate(rootDER)
	interTmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "amtops test step-ca Intermediate CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
	}
	interDER, err := x509.CreateCertificate(rand.Reader, interTmpl, root, &interKey.PublicKey, rootKey)
	if err != nil {
		return 0, err
	}

	pw := make([]byte, 24)
	if _, err := rand.Read(pw); err != nil {
		return 0, err
	}
	password := base64.RawURLEncoding.EncodeToString(pw)
	pub, encrypted, err := provisionerKey(password)
	if err != nil {
		return 0, err
	}
	port, err := freePort()
	if err != nil {
		return 0, err
	}

	files := []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{"certs/root_ca.crt", pemBytes("CERTIFICATE", rootDER), 0o644},
		{"certs/intermediate_ca.crt", pemBytes("CERTIFICATE", interDER), 0o644},
		{"secrets/root_ca_key", pkcs8PEM(rootKey), 0o600},
		{"secrets/intermediate_ca_key", pkcs8PEM(interKey), 0o600},
		{"secrets/password", []byte(password + "\n"), 0o600},
	}
	cfg := map[string]any{
		"root":     filepath.Join(dir, "certs/root_ca.crt"),
		"crt":      filepath.Join(dir, "certs/intermediate_ca.crt"),
		"key":      filepath.Join(dir, "secrets/intermediate_ca_key"),
		"address":  fmt.Sprintf("127.0.0.1:%d", port),
		"dnsNames": []string{"127.0.0.1", "localhost"},
		"logger":   map[string]any{"format": "text"},
		"db":       map[string]any{"type": "bbolt", "dataSource": filepath.Join(dir, "db/ca.db")},
		"crl":      map[string]any{"enabled": true, "generateOnRevoke": true},
		"authority": map[string]any{
			"provisioners": []any{map[string]any{
				"type":         "JWK",
				"name":         name,
				"key":          pub,
				"encryptedKey": encrypted,
				"claims": map[string]any{
					"minTLSCertDuration":     "5m",
					"maxTLSCertDuration":     "43800h",
					"defaultTLSCertDuration": "8760h",
				},
				"options": map[string]any{"x509": map[string]any{"template": leafTemplate}},
			}},
		},
	}
	caJSON, err := json.MarshalIndent(cfg, "", "\t")
	if err != nil {
		return 0, err
	}
	files = append(files, struct {
		path string
		data []byte
		mode os.FileMode
	}{"config/ca.json", caJSON, 0o600})
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.path), f.data, f.mode); err != nil {
			return 0, err
		}
	}
	return port, nil
}

// provisionerKey makes the JWK provisioner's P-256 key and returns its
// public JWK and the private JWK encrypted with password the way the step
// CLI does it (JWE, PBES2-HS256+A128KW, A256GCM, 600000 iterations).
func provisionerKey(password string) (*jose.JSONWebKey, string, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", err
	}
	jwk := jose.JSONWebKey{Key: k, Algorithm: string(jose.ES256), Use: "sig"}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, "", err
	}
	jwk.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	priv, err := json.Marshal(jwk)
	if err != nil {
		return nil, "", err
	}
	enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{
		Algorithm: jose.PBES2_HS256_A128KW, Key: []byte(password), PBES2Count: 600000,
	}, (&jose.EncrypterOptions{}).WithContentType("jwk+json"))
	if err != nil {
		return nil, "", err
	}
	obj, err := enc.Encrypt(priv)
	if err != nil {
		return nil, "", err
	}
	s, err := obj.CompactSerialize()
	if err != nil {
		return nil, "", err
	}
	pub := jwk.Public()
	return &pub, s, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n.Add(n, big.NewInt(1))
}

func pemBytes(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func pkcs8PEM(k *rsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(err) // an RSA key always marshals
	}
	return pemBytes("PRIVATE KEY", der)
}

// freePort asks the kernel for a free loopback port; step-ca binds it a
// moment later (the script retries on a clash).
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
