package wsman

import (
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
)

// TLSConfig says how the device's certificate is verified — exactly one
// of three ways, there is no "skip verification" mode:
//   - RootCAs (with ServerName, normally the FQDN we put in the
//     certificate): the site chain, once the device serves our certificate;
//   - PinSHA256: the SHA-256 of the leaf's DER, for a device whose
//     certificate we know (ours, or one pinned earlier in the same job);
//   - TrustFirstUse: the provisioning session of a factory device, whose
//     firmware certificate is self-signed and cannot be verified. The
//     first handshake's leaf is accepted and pinned for the Client's life;
//     Client.ServerLeafSHA256 tells the caller what to pin for the rest of
//     the job.
type TLSConfig struct {
	RootCAs       *x509.CertPool
	ServerName    string
	PinSHA256     []byte
	TrustFirstUse bool

	// ClientCertificate, when set, is presented whenever the device asks
	// for one: the provisioning certificate in the remote-configuration
	// session, the site's client certificate with mutual TLS.
	ClientCertificate *ClientCertificate

	// MaxVersion caps the protocol version (tls.VersionTLS12 …); zero
	// lets the device choose. AMT 11–18 only speak TLS 1.2 and pick it
	// from our offer of 1.2 and 1.3, as they do from Intel's own client.
	MaxVersion uint16
}

// ClientCertificate is a TLS client certificate whose private key is only
// reachable through Sign, so a signer that forwards to the site server
// (where the provisioning key never leaves) fits. For an RSA key the
// handshake asks for PKCS#1 v1.5 or PSS signatures over a SHA-256/384/512
// digest (opts is crypto.Hash or *rsa.PSSOptions).
type ClientCertificate struct {
	Chain [][]byte // DER, leaf first, then intermediates (the root may follow)
	Key   crypto.Signer
}

// cipherSuites is what we offer for TLS 1.2 (1.3 suites are not
// configurable). AMT 11 and 12 speak only RSA key exchange, which Go since
// 1.22 drops from its default list; listing the suites explicitly brings
// them back without GODEBUG=tlsrsakex=1 (crypto/tls filters an explicit
// list only against what it implements). The ECDHE suites come first in
// Go's own preference order whatever the order here.
var cipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_RSA_WITH_AES_128_CBC_SHA,
	tls.TLS_RSA_WITH_AES_256_CBC_SHA,
}

// leafSeen remembers the SHA-256 of the last verified leaf and, in
// trust-on-first-use mode, holds the pin the first handshake set.
type leafSeen struct {
	mu   sync.Mutex
	last []byte
	pin  []byte
	tofu bool
}

func (s *leafSeen) get() []byte {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.last...)
}

// check runs after crypto/tls's own verification (if any) on every
// handshake, resumptions included.
func (s *leafSeen) check(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return ErrPinMismatch
	}
	sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tofu && s.pin == nil {
		s.pin = sum[:]
	}
	if s.pin != nil && subtle.ConstantTimeCompare(sum[:], s.pin) != 1 {
		return ErrPinMismatch
	}
	s.last = sum[:]
	return nil
}

// Build returns the crypto/tls client configuration the Client uses, for
// callers that probe the TLS port without WS-Man (waiting for a device to
// serve its new certificate). Each call has its own first-use pin.
func (t *TLSConfig) Build() (*tls.Config, error) {
	c, _, err := t.build()
	return c, err
}

func (t *TLSConfig) build() (*tls.Config, *leafSeen, error) {
	modes := 0
	for _, set := range []bool{len(t.PinSHA256) > 0, t.RootCAs != nil, t.TrustFirstUse} {
		if set {
			modes++
		}
	}
	switch {
	case modes == 0:
		return nil, nil, errors.New("wsman: config: TLS needs RootCAs, PinSHA256 or TrustFirstUse")
	case modes > 1:
		return nil, nil, errors.New("wsman: config: TLS: set one of RootCAs, PinSHA256 and TrustFirstUse")
	case len(t.PinSHA256) > 0 && len(t.PinSHA256) != sha256.Size:
		return nil, nil, fmt.Errorf("wsman: config: TLS PinSHA256 is %d bytes, want %d", len(t.PinSHA256), sha256.Size)
	case t.MaxVersion != 0 && t.MaxVersion < tls.VersionTLS12:
		return nil, nil, fmt.Errorf("wsman: config: TLS MaxVersion %#x is below TLS 1.2", t.MaxVersion)
	}
	seen := &leafSeen{tofu: t.TrustFirstUse}
	if len(t.PinSHA256) > 0 {
		seen.pin = append([]byte(nil), t.PinSHA256...)
	}
	c := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		MaxVersion:   t.MaxVersion,
		CipherSuites: append([]uint16(nil), cipherSuites...),
		// Classical curves only: no AMT firmware offers the hybrid
		// post-quantum exchange Go would otherwise put first, whose key
		// share costs an ML-KEM key generation per handshake (4% of the
		// agent's CPU in the fleet bench) and grows the ClientHello past
		// 1 KB for nothing.
		CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384},
		RootCAs:          t.RootCAs,
		ServerName:       t.ServerName,
		VerifyConnection: seen.check,
		// A pin or first use replaces chain verification; seen.check
		// enforces it.
		InsecureSkipVerify: t.RootCAs == nil, //nolint:gosec // pinned or first-use leaf checked in VerifyConnection
	}
	if t.ClientCertificate != nil {
		cert, err := t.ClientCertificate.certificate()
		if err != nil {
			return nil, nil, err
		}
		// Offered whatever CAs the device names: AMT's request may list none.
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return c, seen, nil
}

func (cc *ClientCertificate) certificate() (*tls.Certificate, error) {
	if len(cc.Chain) == 0 {
		return nil, errors.New("wsman: config: TLS ClientCertificate.Chain is empty")
	}
	if cc.Key == nil {
		return nil, errors.New("wsman: config: TLS ClientCertificate.Key is nil")
	}
	leaf, err := x509.ParseCertificate(cc.Chain[0])
	if err != nil {
		return nil, fmt.Errorf("wsman: config: TLS ClientCertificate.Chain[0]: %w", err)
	}
	pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cc.Key.Public()) {
		return nil, errors.New("wsman: config: TLS ClientCertificate.Key does not belong to Chain[0]")
	}
	chain := make([][]byte, len(cc.Chain))
	for i, der := range cc.Chain {
		chain[i] = append([]byte(nil), der...)
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: cc.Key, Leaf: leaf}, nil
}

// ServerLeafSHA256 is the SHA-256 of the device's TLS leaf certificate as
// verified in the latest handshake (nil before the first, or over plain
// HTTP). After a TrustFirstUse session it is the pin for the rest of the
// job.
func (c *Client) ServerLeafSHA256() []byte { return c.leaf.get() }
