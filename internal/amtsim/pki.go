package amtsim

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
)

// keyPool hands out RSA keys for GenerateKeyPair. Generating RSA-2048 costs
// about 100 ms of CPU, which a 10,000-device run cannot afford per device,
// so keys are generated lazily into a small pool and reused across devices.
type keyPool struct {
	mu   sync.Mutex
	size int
	keys []*rsa.PrivateKey
}

func newKeyPool(size int) *keyPool { return &keyPool{size: size} }

// get returns a key for the n-th generation on device idx: distinct for
// n < size, so a device never sees one key twice while it holds < size keys.
func (p *keyPool) get(idx, n, bits int) (*rsa.PrivateKey, error) {
	if p.size < 0 || bits != 2048 {
		return rsa.GenerateKey(rand.Reader, bits)
	}
	slot := (idx + n) % p.size
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.keys) <= slot {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			return nil, err
		}
		p.keys = append(p.keys, k)
	}
	return p.keys[slot], nil
}

func parsePrivateKey(der []byte) (*rsa.PrivateKey, error) {
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, errors.New("not a PKCS#1 or PKCS#8 RSA private key")
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("not an RSA key")
	}
	return rk, nil
}

func samePublicKey(a, b *rsa.PublicKey) bool {
	return a != nil && b != nil && a.E == b.E && a.N.Cmp(b.N) == 0
}

// signCSR re-signs a client's "null-signed" PKCS#10 request with the
// device's key, as GeneratePKCS10RequestEx does: the request's public key
// must be the key pair's.
func signCSR(nullSigned []byte, key *rsa.PrivateKey, sha1 bool) ([]byte, error) {
	req, err := x509.ParseCertificateRequest(nullSigned)
	if err != nil {
		return nil, fmt.Errorf("parse request: %w", err)
	}
	pub, ok := req.PublicKey.(*rsa.PublicKey)
	if !ok || !samePublicKey(pub, &key.PublicKey) {
		return nil, errors.New("request public key is not the key pair's")
	}
	tmpl := &x509.CertificateRequest{
		RawSubject:         req.RawSubject,
		ExtraExtensions:    req.Extensions,
		SignatureAlgorithm: x509.SHA256WithRSA,
	}
	if sha1 {
		tmpl.SignatureAlgorithm = x509.SHA1WithRSA
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("sign request: %w", err)
	}
	return der, nil
}

// tlsCredential builds what the TLS port serves: the bound leaf with its
// key and the chain found among installed certificates (issuer links).
func tlsCredential(st *nvram, leafHandle int) (*tls.Certificate, error) {
	leaf := st.cert(leafHandle)
	if leaf == nil {
		return nil, fmt.Errorf("certificate handle %d not installed", leafHandle)
	}
	k := st.key(leaf.keyHandle)
	if k == nil {
		return nil, fmt.Errorf("certificate handle %d has no private key on the device", leafHandle)
	}
	out := &tls.Certificate{Certificate: [][]byte{leaf.der}, PrivateKey: k.priv, Leaf: leaf.cert}
	cur := leaf.cert
	for range len(st.certs) {
		if bytes.Equal(cur.RawIssuer, cur.RawSubject) {
			break
		}
		var next *certEntry
		for _, c := range st.certs {
			if bytes.Equal(c.cert.RawSubject, cur.RawIssuer) && cur.CheckSignatureFrom(c.cert) == nil {
				next = c
				break
			}
		}
		if next == nil {
			break
		}
		out.Certificate = append(out.Certificate, next.der)
		cur = next.cert
	}
	return out, nil
}
