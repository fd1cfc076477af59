package phase2

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/amtops/amtops/internal/amt"
	"github.com/amtops/amtops/internal/wsman"
)

// connInfo is how the current client reaches the device.
type connInfo struct {
	tls      bool
	password string
}

// passwords are the candidates in order: the job's password, its
// fallbacks, then the new admin password (this job's own earlier attempt
// may have set it before dying). Duplicates and empties are dropped.
func (r *job) passwords() []string {
	c := r.j.GetCredentials()
	var out []string
	seen := map[string]bool{}
	for _, p := range append(append([]string{c.GetPassword()}, c.GetFallbackPasswords()...), c.GetNewAdminPassword()) {
		if p != "" && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// trust is how we verify the device's TLS certificate: against the chain's
// root with the FQDN as server name, or, with no chain or no name, by
// pinning the job's leaf.
func (r *job) trust() (*wsman.TLSConfig, error) {
	t := r.j.GetTls()
	chain := t.GetChainDer()
	if len(chain) > 0 && r.j.GetTarget().GetHostName() != "" {
		pool := x509.NewCertPool()
		root, err := x509.ParseCertificate(chain[len(chain)-1])
		if err != nil {
			return nil, fmt.Errorf("tls.chain_der: last element is not a certificate: %w", err)
		}
		pool.AddCert(root)
		return &wsman.TLSConfig{RootCAs: pool, ServerName: r.fqdn()}, nil
	}
	if leaf := t.GetCertificateDer(); len(leaf) > 0 {
		sum := sha256.Sum256(leaf)
		return &wsman.TLSConfig{PinSHA256: sum[:]}, nil
	}
	return nil, errors.New("no trust anchor for TLS: job has neither tls.chain_der with target.host_name nor tls.certificate_der")
}

func (r *job) addr(useTLS bool) string {
	port := r.e.cfg.HTTPPort
	if useTLS {
		port = r.e.cfg.TLSPort
	}
	return net.JoinHostPort(r.j.GetTarget().GetIp(), strconv.Itoa(port))
}

// dial builds a client and proves it with one cheap authenticated call.
func (r *job) dial(ctx context.Context, useTLS bool, password string) (*amt.Client, error) {
	cfg := wsman.Config{
		Address:     r.addr(useTLS),
		Username:    r.j.GetCredentials().GetUsername(),
		Password:    password,
		Timeout:     r.e.cfg.CallTimeout,
		Logger:      r.log,
		DialContext: r.e.cfg.Dial,
	}
	if useTLS {
		t, err := r.trust()
		if err != nil {
			return nil, err
		}
		cfg.TLS = t
	}
	ws, err := wsman.New(cfg)
	if err != nil {
		return nil, err
	}
	dev := amt.New(ws)
	if _, err := dev.SetupAndConfiguration(ctx); err != nil {
		ws.Close()
		return nil, err
	}
	return dev, nil
}

// connect finds a transport and password the device accepts. tlsFirst
// orders the transports: a provisioned device normally has HTTP closed.
func (r *job) connect(ctx context.Context, tlsFirst bool) (string, error) {
	order := []bool{false, true}
	if tlsFirst {
		order = []bool{true, false}
	}
	var lastErr error
	refused := false
	for _, useTLS := range order {
		for i, pw := range r.passwords() {
			dev, err := r.dial(ctx, useTLS, pw)
			if err == nil {
				r.setClient(dev, connInfo{tls: useTLS, password: pw})
				return fmt.Sprintf("%s, password candidate %d", transport(useTLS), i+1), nil
			}
			if ctx.Err() != nil {
				return "", err
			}
			if errors.Is(err, wsman.ErrUnauthorized) {
				refused = true
				continue
			}
			// Unreachable or untrusted: other passwords will not help here.
			lastErr = fmt.Errorf("%s: %w", transport(useTLS), err)
			break
		}
	}
	if refused {
		return "", fmt.Errorf("every password candidate was refused (externally provisioned or password changed elsewhere): %w", wsman.ErrUnauthorized)
	}
	return "", lastErr
}

func (r *job) setClient(dev *amt.Client, ci connInfo) {
	if r.dev != nil {
		r.dev.WSMan().Close()
	}
	r.dev, r.conn = dev, ci
}

// reconnect switches the client to another transport or password.
func (r *job) reconnect(ctx context.Context, useTLS bool, password string) (string, error) {
	dev, err := r.dial(ctx, useTLS, password)
	if err != nil {
		return "", err
	}
	r.setClient(dev, connInfo{tls: useTLS, password: password})
	return transport(useTLS), nil
}

func transport(useTLS bool) string {
	if useTLS {
		return "tls"
	}
	return "http"
}

// servedLeaf does a TLS handshake with the device's TLS port, verifying it
// as trust() says, and returns the leaf it serves.
func (r *job) servedLeaf(ctx context.Context) ([]byte, error) {
	t, err := r.trust()
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	dial := d.DialContext
	if r.e.cfg.Dial != nil {
		dial = r.e.cfg.Dial
	}
	hctx, cancel := context.WithTimeout(ctx, r.e.cfg.CallTimeout)
	defer cancel()
	raw, err := dial(hctx, "tcp", r.addr(true))
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: t.RootCAs, ServerName: t.ServerName}
	if t.PinSHA256 != nil {
		// Pinning replaces chain verification: the pin is checked below.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return wsman.ErrPinMismatch
			}
			sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if !bytes.Equal(sum[:], t.PinSHA256) {
				return wsman.ErrPinMismatch
			}
			return nil
		}
	}
	c := tls.Client(raw, cfg)
	if err := c.HandshakeContext(hctx); err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Raw, nil
}
