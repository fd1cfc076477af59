package phase2

import (
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
	amtopsv1 "github.com/amtops/amtops/proto/amtops/v1"
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
	return candidates(append(append([]string{c.GetPassword()}, c.GetFallbackPasswords()...), c.GetNewAdminPassword()))
}

func candidates(in []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range in {
		if p != "" && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// candidate picks the one password this attempt may try: repeated wrong
// passwords lock the account (AMT-WSMAN.md), so attempts take turns
// through the candidates instead of spraying them, and the server's retry
// delay spaces the turns. Attempt numbers start at 1 (0 is taken as 1).
func candidate(cands []string, attempt int32) (int, string) {
	a := max(int(attempt), 1)
	i := (a - 1) % len(cands)
	return i, cands[i]
}

// refused is the error for a refused candidate. With one candidate it is
// final. With several it stays transient: a turn lost to a fault (a
// dropped connection, a reset, an attempt cut short after it logged in)
// proves nothing about the other candidates, and the agent cannot tell how
// earlier attempts ended, so the site's attempt budget ends the job. Each
// attempt tries only one candidate.
func refused(i, n int, attempt int32, what string) error {
	err := fmt.Errorf("%s: password candidate %d of %d refused on attempt %d: %w", what, i+1, n, max(attempt, 1), wsman.ErrUnauthorized)
	if n <= 1 {
		return err
	}
	return transientError{err}
}

// trust is how we verify the device's TLS certificate: against the chain's
// root with the FQDN as server name, or, with no chain or no name, by
// pinning the job's leaf; the agent's client certificate goes with it for
// a device with mutual TLS on.
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
		return &wsman.TLSConfig{RootCAs: pool, ServerName: r.fqdn(), ClientCertificate: r.clientCert()}, nil
	}
	if leaf := t.GetCertificateDer(); len(leaf) > 0 {
		sum := sha256.Sum256(leaf)
		return &wsman.TLSConfig{PinSHA256: sum[:], ClientCertificate: r.clientCert()}, nil
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
		Username:    r.user,
		Password:    password,
		Timeout:     r.e.cfg.CallTimeout,
		Logger:      r.log,
		DialContext: r.e.cfg.Dial,
		Observe:     r.e.cfg.ObserveCall,
	}
	if useTLS {
		t, err := r.trust()
		if err != nil {
			return nil, err
		}
		if r.prov != nil {
			// The provisioning session: the firmware's own certificate,
			// pinned once seen, and our provisioning certificate.
			t = &wsman.TLSConfig{PinSHA256: r.prov.pin, TrustFirstUse: r.prov.pin == nil, ClientCertificate: r.prov.cert}
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

// connect finds a transport the device accepts this attempt's password
// candidate on. tlsFirst orders the transports: a provisioned device
// normally has HTTP closed. A refusal ends the search: the same wrong
// password on the other port would only count towards the lockout.
func (r *job) connect(ctx context.Context, tlsFirst bool) (string, error) {
	order := []bool{false, true}
	if tlsFirst {
		order = []bool{true, false}
	}
	cands := r.passwords()
	if len(cands) == 0 {
		return "", errors.New("phase2: job: credentials.password is empty")
	}
	i, pw := candidate(cands, r.j.GetAttempt())
	var failed []error
	for _, useTLS := range order {
		dev, err := r.dial(ctx, useTLS, pw)
		how := transport(useTLS)
		if useTLS && untrusted(err) && r.j.GetKind() == amtopsv1.JobKind_JOB_KIND_PROVISION && r.prov == nil {
			// CSME 16.1+ is TLS-only and serves its firmware's self-signed
			// certificate until ours is installed: trusted on first use for
			// this provisioning only, pinned until the TLS stage commits.
			// The refused handshake sent no password.
			r.prov = &provSession{}
			if dev, err = r.dial(ctx, true, pw); err != nil {
				r.prov = nil
			}
			how = "tls (firmware certificate trusted on first use)"
		}
		if err == nil {
			if r.prov != nil {
				r.prov.pin = dev.WSMan().ServerLeafSHA256()
			}
			r.setClient(dev, connInfo{tls: useTLS, password: pw})
			return fmt.Sprintf("%s, password candidate %d of %d", how, i+1, len(cands)), nil
		}
		if ctx.Err() != nil {
			return "", err
		}
		if errors.Is(err, wsman.ErrUnauthorized) {
			return "", refused(i, len(cands), r.j.GetAttempt(), transport(useTLS)+
				" (externally provisioned, or the password was changed elsewhere)")
		}
		failed = append(failed, fmt.Errorf("%s: %w", transport(useTLS), err))
	}
	return "", connectError(failed)
}

// connectError reports why no transport worked. A transport whose port
// answered (a timeout, a reply too large, a document we refuse, a
// redirect) is the reason, not the other one whose port is closed, and
// its error alone decides retry versus give-up (fallbackError); the
// other is kept as text.
func connectError(failed []error) error {
	first := 0
	for k, err := range failed {
		if !portClosed(err) {
			first = k
			break
		}
	}
	if len(failed) == 1 {
		return failed[0]
	}
	return fallbackError{err: failed[first], other: failed[1-first]}
}

// fallbackError is a connect that failed on both transports: err is the
// reason, other only says what the other transport did.
type fallbackError struct{ err, other error }

func (e fallbackError) Error() string { return e.err.Error() + "; " + e.other.Error() }
func (e fallbackError) Unwrap() error { return e.err }

// portClosed reports a failure to connect at all: nothing listens there.
func portClosed(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// untrusted reports a TLS certificate that does not verify against the
// site chain (unknown authority, wrong name).
func untrusted(err error) bool {
	var (
		uae x509.UnknownAuthorityError
		hne x509.HostnameError
	)
	return errors.As(err, &uae) || errors.As(err, &hne)
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
// as trust() says, with the same configuration (suites, versions) the
// WS-Man client uses, so AMT 11/12 answer; it returns the leaf served.
func (r *job) servedLeaf(ctx context.Context) ([]byte, error) {
	t, err := r.trust()
	if err != nil {
		return nil, err
	}
	cfg, err := t.Build()
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
	c := tls.Client(raw, cfg)
	if err := c.HandshakeContext(hctx); err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Raw, nil
}
