// Package provcert holds the AMT provisioning certificate: the chain a
// provisioning server presents as its TLS client certificate when it opens
// the remote-configuration session on a factory device's 16993.
//
// The site server loads the chain and its private key (PEM or PKCS#12) into
// an Identity, which signs digests and never hands the key out. An agent
// holds only the chain and a Signer whose signatures the server makes. Check
// tells, per device, whether the device will accept the chain and if not
// why.
package provcert

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"software.sslmate.com/src/go-pkcs12"
)

// OIDProvisioning is the Intel AMT provisioning extended key usage.
var OIDProvisioning = asn1.ObjectIdentifier{2, 16, 840, 1, 113741, 1, 2, 3}

// SetupOU is the subject OU firmware accepts instead of the EKU; it is
// compared case-sensitively.
const SetupOU = "Intel(R) Client Setup Certificate"

// Chain is a provisioning certificate chain, leaf first and the
// self-signed root last. The root must be part of it: the device hashes the
// root it receives and looks the hash up in its trusted list.
type Chain struct {
	Certs []*x509.Certificate
}

// Leaf is the provisioning certificate itself.
func (c Chain) Leaf() *x509.Certificate { return c.Certs[0] }

// Root is the last certificate of the chain.
func (c Chain) Root() *x509.Certificate { return c.Certs[len(c.Certs)-1] }

// DER is the chain as a TLS Certificate message carries it.
func (c Chain) DER() [][]byte {
	out := make([][]byte, len(c.Certs))
	for i, x := range c.Certs {
		out[i] = x.Raw
	}
	return out
}

// PEM encodes the chain, leaf first.
func (c Chain) PEM() []byte {
	var b bytes.Buffer
	for _, x := range c.Certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: x.Raw})
	}
	return b.Bytes()
}

// ParseChainPEM reads a chain without a key (what an agent receives).
func ParseChainPEM(chainPEM []byte) (Chain, error) {
	var certs []*x509.Certificate
	rest := chainPEM
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		x, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return Chain{}, fmt.Errorf("provcert: chain certificate %d: %w", len(certs), err)
		}
		certs = append(certs, x)
	}
	if len(certs) == 0 {
		return Chain{}, errors.New("provcert: chain: no CERTIFICATE block")
	}
	return order(certs[0], certs[1:])
}

// order puts the certificates on the leaf's issuer path, leaf first, and
// refuses certificates that are not on it.
func order(leaf *x509.Certificate, others []*x509.Certificate) (Chain, error) {
	chain := []*x509.Certificate{leaf}
	used := make([]bool, len(others))
	for cur := leaf; !bytes.Equal(cur.RawIssuer, cur.RawSubject); {
		next := -1
		for i, o := range others {
			if !used[i] && bytes.Equal(o.RawSubject, cur.RawIssuer) && cur.CheckSignatureFrom(o) == nil {
				next = i
				break
			}
		}
		if next < 0 {
			break // Check reports the missing root
		}
		used[next] = true
		cur = others[next]
		chain = append(chain, cur)
	}
	for i, u := range used {
		if !u && !others[i].Equal(leaf) {
			return Chain{}, fmt.Errorf("provcert: chain: certificate %q is not on the issuer path of leaf %q", others[i].Subject, leaf.Subject)
		}
	}
	return Chain{Certs: chain}, nil
}

// Identity is the loaded provisioning certificate with its private key,
// held in memory only and never exported. The server must seal the files
// it was loaded from (or their bytes) at rest and zero them after loading.
type Identity struct {
	chain Chain
	key   crypto.Signer
}

// Chain is the public part.
func (id *Identity) Chain() Chain { return id.chain }

// LoadPEM reads a PEM chain, leaf first, and its unencrypted PEM private
// key (PKCS#8, PKCS#1 or SEC 1).
func LoadPEM(chainPEM, keyPEM []byte) (*Identity, error) {
	pair, err := tls.X509KeyPair(chainPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("provcert: load pem: %w", err)
	}
	chain, err := ParseChainPEM(chainPEM)
	if err != nil {
		return nil, err
	}
	return newIdentity(chain, pair.PrivateKey)
}

// LoadPEMFiles reads LoadPEM's inputs from files.
func LoadPEMFiles(chainPath, keyPath string) (*Identity, error) {
	c, err := os.ReadFile(chainPath)
	if err != nil {
		return nil, fmt.Errorf("provcert: read chain: %w", err)
	}
	k, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("provcert: read key: %w", err)
	}
	defer clear(k)
	return LoadPEM(c, k)
}

// LoadPKCS12 reads a PKCS#12 (.pfx/.p12) file holding the leaf, its key and
// the rest of the chain.
func LoadPKCS12(pfx []byte, password string) (*Identity, error) {
	key, leaf, cas, err := pkcs12.DecodeChain(pfx, password)
	if err != nil {
		return nil, fmt.Errorf("provcert: load pkcs12: %w", err)
	}
	chain, err := order(leaf, cas)
	if err != nil {
		return nil, err
	}
	return newIdentity(chain, key)
}

// LoadPKCS12File reads LoadPKCS12's input from a file.
func LoadPKCS12File(path, password string) (*Identity, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("provcert: read pkcs12: %w", err)
	}
	defer clear(b)
	return LoadPKCS12(b, password)
}

func newIdentity(chain Chain, key any) (*Identity, error) {
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("provcert: key of type %T cannot sign", key)
	}
	switch s.(type) {
	case *rsa.PrivateKey, *ecdsa.PrivateKey:
	default:
		return nil, fmt.Errorf("provcert: key of type %T: AMT takes RSA (or ECDSA) provisioning keys only", key)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pub, ok := s.Public().(equaler); !ok || !pub.Equal(chain.Leaf().PublicKey) {
		return nil, fmt.Errorf("provcert: key does not match leaf %q", chain.Leaf().Subject)
	}
	return &Identity{chain: chain, key: s}, nil
}
