package provcert

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"time"

	"github.com/amtops/amtops/internal/pki"
)

// TestPair is a provisioning root and leaf made by amtops for tests and the
// demo; simulated devices trust RootSHA256. Never for production: the key
// is written in the clear.
type TestPair struct {
	Domain     string // the trusted domain suffix the leaf is for
	LeafCN     string // "prov." + Domain
	ChainPEM   []byte // leaf, then root
	KeyPEM     []byte // leaf key, PKCS#8
	RootPEM    []byte
	RootSHA256 string // lower-case hex, what a device's trust list holds
}

// NewTestPair makes an RSA-2048 root and a leaf "prov.<domainSuffix>" with
// the AMT provisioning EKU, serverAuth and clientAuth, and the setup OU.
func NewTestPair(domainSuffix string) (*TestPair, error) {
	d, err := pki.NormalizeFQDN(domainSuffix)
	if err != nil {
		return nil, fmt.Errorf("provcert: test pair: domain: %w", err)
	}
	rootKey, err := pki.GenerateKey()
	if err != nil {
		return nil, err
	}
	leafKey, err := pki.GenerateKey()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	root, err := makeCert(certSpec{
		subject: pkix.Name{CommonName: "amtops test provisioning root", Organization: []string{"amtops test"}},
		ca:      true, notBefore: now.Add(-time.Hour), notAfter: now.AddDate(10, 0, 0),
	}, nil, rootKey, rootKey)
	if err != nil {
		return nil, err
	}
	leaf, err := makeCert(certSpec{
		subject:   pkix.Name{CommonName: "prov." + d, OrganizationalUnit: []string{SetupOU}, Organization: []string{"amtops test"}},
		eku:       []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		amtEKU:    true,
		notBefore: now.Add(-time.Hour), notAfter: now.AddDate(2, 0, 0),
	}, root, leafKey, rootKey)
	if err != nil {
		return nil, err
	}
	kd, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		return nil, fmt.Errorf("provcert: test pair: key: %w", err)
	}
	sum := sha256.Sum256(root.Raw)
	rootPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw})
	return &TestPair{
		Domain: d, LeafCN: "prov." + d,
		ChainPEM:   append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}), rootPEM...),
		KeyPEM:     pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}),
		RootPEM:    rootPEM,
		RootSHA256: hex.EncodeToString(sum[:]),
	}, nil
}

type certSpec struct {
	subject             pkix.Name
	ca                  bool
	eku                 []x509.ExtKeyUsage
	amtEKU              bool
	notBefore, notAfter time.Time
	sigAlg              x509.SignatureAlgorithm
}

// makeCert signs spec for pub (the public half of key) with signer, as
// issued by parent (self-signed when parent is nil).
func makeCert(spec certSpec, parent *x509.Certificate, key, signer crypto.Signer) (*x509.Certificate, error) {
	serial, err := pki.RandomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: spec.subject,
		NotBefore: spec.notBefore, NotAfter: spec.notAfter,
		BasicConstraintsValid: true, IsCA: spec.ca,
		ExtKeyUsage: spec.eku, SignatureAlgorithm: spec.sigAlg,
	}
	if spec.ca {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	} else {
		tmpl.KeyUsage = pki.KeyUsage(key.Public())
	}
	if spec.amtEKU {
		tmpl.UnknownExtKeyUsage = []asn1.ObjectIdentifier{OIDProvisioning}
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("provcert: make certificate %q: %w", spec.subject.CommonName, err)
	}
	return x509.ParseCertificate(der)
}
