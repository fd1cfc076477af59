package provcert

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// siteServer is the server side of SignProvisioning as the agent sees it:
// one job with a live lease, signing with the loaded Identity.
type siteServer struct {
	id         *Identity
	job, lease string
	calls      atomic.Int32
	tamper     bool // answer with a signature made by another key
}

func (s *siteServer) SignProvisioning(ctx context.Context, jobID, leaseToken string, digest []byte, opts SignOpts) ([]byte, error) {
	s.calls.Add(1)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if jobID != s.job || leaseToken != s.lease {
		return nil, errors.New("permission denied: no live lease on this job")
	}
	if s.tamper {
		return rootKey.Sign(rand.Reader, digest, opts.SignerOpts())
	}
	return s.id.SignDigest(digest, opts)
}

// device is a TLS server standing in for a factory device's 16993: it
// demands a client certificate and checks it independently of Check, with
// the standard library: a chain to the root it trusts by SHA-256, the AMT
// provisioning EKU on the leaf.
func device(t *testing.T, trusted *x509.Certificate, cfg func(*tls.Config)) (addr string, peer chan *x509.Certificate) {
	t.Helper()
	keys(t)
	self := mk(t, certSpec{subject: pkix.Name{CommonName: "AMT"}, notBefore: now.Add(-time.Hour), notAfter: now.AddDate(1, 0, 0)}, nil, interKey, interKey)
	want := sha256.Sum256(trusted.Raw)
	tc := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{self.Raw}, PrivateKey: interKey}},
		ClientAuth:   tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			var xs []*x509.Certificate
			for _, r := range raw {
				x, err := x509.ParseCertificate(r)
				if err != nil {
					return err
				}
				xs = append(xs, x)
			}
			if got := sha256.Sum256(xs[len(xs)-1].Raw); got != want {
				return fmt.Errorf("root hash %x not trusted", got)
			}
			roots, inter := x509.NewCertPool(), x509.NewCertPool()
			roots.AddCert(xs[len(xs)-1])
			for _, x := range xs[1 : len(xs)-1] {
				inter.AddCert(x)
			}
			if _, err := xs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				return err
			}
			for _, o := range xs[0].UnknownExtKeyUsage {
				if o.String() == "2.16.840.1.113741.1.2.3" {
					return nil
				}
			}
			return errors.New("leaf lacks the AMT provisioning EKU")
		},
	}
	if cfg != nil {
		cfg(tc)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	peer = make(chan *x509.Certificate, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		tl := c.(*tls.Conn)
		_ = tl.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tl.Handshake(); err != nil {
			peer <- nil
			return
		}
		peer <- tl.ConnectionState().PeerCertificates[0]
		_, _ = tl.Write([]byte("ok"))
	}()
	return ln.Addr().String(), peer
}

func TestRemoteSignerTLSHandshake(t *testing.T) {
	p, err := NewTestPair("amt.test")
	if err != nil {
		t.Fatal(err)
	}
	id, err := LoadPEM(p.ChainPEM, p.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	agentChain, err := ParseChainPEM(id.Chain().PEM()) // what the agent receives: no key
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		server  func(*tls.Config)
		job     string
		tamper  bool
		wantErr string
	}{
		{name: "TLS 1.2 ECDHE", server: func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }},
		{name: "TLS 1.2 RSA key exchange only (AMT 11/12)", server: func(c *tls.Config) {
			c.MaxVersion = tls.VersionTLS12
			c.CipherSuites = []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256}
		}},
		{name: "TLS 1.3 (RSA-PSS)", server: func(c *tls.Config) { c.MinVersion = tls.VersionTLS13 }},
		{name: "no lease", job: "job-other", wantErr: "no live lease"},
		{name: "server signs with the wrong key", tamper: true, wantErr: "does not verify with the leaf's public key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := &siteServer{id: id, job: "job-1", lease: "lease-1", tamper: tc.tamper}
			job := "job-1"
			if tc.job != "" {
				job = tc.job
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			signer, err := NewSigner(ctx, agentChain, srv, job, "lease-1")
			if err != nil {
				t.Fatal(err)
			}
			addr, peer := device(t, agentChain.Root(), tc.server)
			// The device's own certificate is self-signed: the agent cannot
			// verify it in this session (AMT-WSMAN.md).
			cc := &tls.Config{
				Certificates:       []tls.Certificate{signer.TLSCertificate()},
				InsecureSkipVerify: true, //nolint:gosec // factory device, self-signed
				MinVersion:         tls.VersionTLS12,
				CipherSuites:       []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256},
			}
			d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cc}
			conn, err := d.DialContext(ctx, "tcp", addr)
			var got *x509.Certificate
			if err == nil {
				buf := make([]byte, 2)
				_, err = io.ReadFull(conn, buf) // TLS 1.3 reports a refused client certificate on the first read
				conn.Close()
				got = <-peer
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("handshake err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if got == nil || !got.Equal(agentChain.Leaf()) {
				t.Fatalf("device saw client certificate %v, want the provisioning leaf", got)
			}
			if n := srv.calls.Load(); n != 1 {
				t.Errorf("%d remote signatures for one handshake, want 1", n)
			}
		})
	}
}

func TestSignerPublicAndOpts(t *testing.T) {
	c := chainOf(t, nil)
	if _, err := NewSigner(context.Background(), c, nil, "j", "l"); err == nil {
		t.Error("NewSigner without a remote")
	}
	if _, err := NewSigner(context.Background(), Chain{}, &siteServer{}, "j", "l"); err == nil {
		t.Error("NewSigner without a chain")
	}
	s, err := NewSigner(context.Background(), c, &siteServer{}, "j", "l")
	if err != nil {
		t.Fatal(err)
	}
	if !leafKey.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(s.Public()) {
		t.Error("Public is not the leaf's key")
	}
	var _ crypto.Signer = s
	for _, o := range []SignOpts{{Hash: crypto.SHA384}, {Hash: crypto.SHA256, PSS: true, SaltLength: -1}} {
		if back := OptsFrom(o.SignerOpts()); back != o {
			t.Errorf("opts round trip %+v → %+v", o, back)
		}
	}
	if !bytes.Equal(c.DER()[0], c.Leaf().Raw) {
		t.Error("DER order")
	}
}
