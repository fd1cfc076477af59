package amtsim

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Sim is a fleet of simulated AMT devices served by one process.
type Sim struct {
	cfg     Config
	log     zerolog.Logger
	devs    []*device
	srv     *http.Server
	ready   chan struct{}
	secret  [32]byte // keys digest nonces so they need no per-device memory
	msgID   atomic.Uint64
	enumSeq atomic.Uint32
	keys    *keyPool
	fwKeys  *keyPool // firmware self-signed certificates' keys
	classes map[string]*class

	defaultHashes [][]byte
	order         []*class

	runMu   sync.Mutex
	ctx     context.Context // set by Run; nil before
	running bool
	wg      sync.WaitGroup
}

type connKey struct{}

type connInfo struct {
	d    *device
	conn net.Conn
}

// New validates cfg and prepares the fleet; nothing listens until Run.
func New(cfg Config) (*Sim, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Sim{cfg: cfg, log: cfg.Log.With().Str("component", "amtsim").Logger(), ready: make(chan struct{})}
	if _, err := rand.Read(s.secret[:]); err != nil {
		return nil, fmt.Errorf("amtsim: nonce secret: %w", err)
	}
	s.keys = newKeyPool(cfg.KeyPoolSize)
	s.fwKeys = newKeyPool(4)
	s.defaultHashes = defaultHashes()
	s.registerClasses()
	s.devs = make([]*device, cfg.Devices)
	for i := range s.devs {
		a, _ := addrAdd(cfg.BaseIP, i)
		ov := cfg.Overrides[a]
		if ov.Password == "" {
			ov.Password = cfg.Password
		}
		if ov.Version == "" {
			ov.Version = cfg.Version
		}
		if ov.Link == "" {
			ov.Link = cfg.Link
		}
		if ov.Kind == 0 {
			ov.Kind = cfg.Kind
		}
		if ov.SKU == "" {
			ov.SKU = cfg.SKU
		}
		s.devs[i] = &device{sim: s, idx: i, addr: a, ov: ov, addedHashes: cloneHashes(cfg.TrustHashes)}
	}
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){}, // firmware speaks HTTP/1.1 only
		// Refused handshakes are part of the act (a client without the
		// provisioning certificate): into the simulator's own log, not
		// the process's stderr.
		ErrorLog: stdlog.New(cfg.Log.With().Str("part", "http").Logger(), "", 0),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			tc, ok := c.(*trackedConn)
			if t, isTLS := c.(*tls.Conn); isTLS {
				tc, ok = t.NetConn().(*trackedConn)
			}
			if !ok {
				return ctx
			}
			return context.WithValue(ctx, connKey{}, &connInfo{d: tc.d, conn: c})
		},
	}
	return s, nil
}

// Addrs lists every fleet address in order, including KindNotAMT ones.
func (s *Sim) Addrs() []netip.Addr {
	out := make([]netip.Addr, len(s.devs))
	for i, d := range s.devs {
		out[i] = d.addr
	}
	return out
}

// Ready is closed once every device's listener is up.
func (s *Sim) Ready() <-chan struct{} { return s.ready }

// HTTPPort and TLSPort report the ports in use (defaults applied).
func (s *Sim) HTTPPort() int { return s.cfg.HTTPPort }
func (s *Sim) TLSPort() int  { return s.cfg.TLSPort }

// Run opens every device's listener and serves until ctx is done; then it
// closes every listener and connection and waits for its goroutines.
func (s *Sim) Run(ctx context.Context) error {
	s.runMu.Lock()
	if s.running || s.ctx != nil {
		s.runMu.Unlock()
		return errors.New("amtsim: run: already started")
	}
	s.running, s.ctx = true, ctx
	s.runMu.Unlock()

	var err error
	for _, d := range s.devs {
		d.mu.Lock()
		err = d.openListeners()
		d.mu.Unlock()
		if err != nil {
			break
		}
	}
	if err == nil {
		s.log.Info().Int("devices", len(s.devs)).Str("first", s.devs[0].addr.String()).
			Str("last", s.devs[len(s.devs)-1].addr.String()).Int("http_port", s.cfg.HTTPPort).
			Int("tls_port", s.cfg.TLSPort).Msg("simulator listening")
		close(s.ready)
		s.startBareMetalHellos()
		<-ctx.Done()
	}
	s.runMu.Lock()
	s.running = false
	s.runMu.Unlock()
	for _, d := range s.devs {
		d.mu.Lock()
		d.closeListeners(nil)
		d.mu.Unlock()
	}
	_ = s.srv.Close()
	s.wg.Wait()
	if err != nil {
		return fmt.Errorf("amtsim: run: %w", err)
	}
	return nil
}

func (s *Sim) stopping() bool {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	return !s.running
}

func (s *Sim) device(a netip.Addr) *device {
	i, ok := addrIndex(s.cfg.BaseIP, a)
	if !ok || i >= len(s.devs) {
		return nil
	}
	return s.devs[i]
}

// trackedListener remembers a device's connections so a restart can cut them.
type trackedListener struct {
	net.Listener
	d *device
}

type trackedConn struct {
	net.Conn
	d    *device
	once sync.Once
}

func (l *trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, d: l.d}
	l.d.mu.Lock()
	if l.d.conns == nil {
		l.d.conns = map[net.Conn]struct{}{}
	}
	l.d.conns[tc] = struct{}{}
	l.d.mu.Unlock()
	return tc, nil
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.d.mu.Lock()
		delete(c.d.conns, c)
		if len(c.d.conns) == 0 {
			c.d.conns = nil // idle devices keep no map
		}
		c.d.mu.Unlock()
	})
	return c.Conn.Close()
}

// openListeners binds what the committed configuration serves (mu held).
func (d *device) openListeners() error {
	s := d.sim
	if d.kind() == KindNotAMT || d.linkDown || s.stopping() {
		return nil
	}
	httpOn, tlsCfg, err := d.plan()
	if err != nil {
		return err
	}
	lc := net.ListenConfig{}
	listen := func(port int) (net.Listener, error) {
		ln, err := lc.Listen(s.ctx, "tcp4", netip.AddrPortFrom(d.addr, uint16(port)).String())
		if err != nil {
			return nil, fmt.Errorf("listen %s:%d: %w", d.addr, port, err)
		}
		return &trackedListener{Listener: ln, d: d}, nil
	}
	if httpOn {
		ln, err := listen(s.cfg.HTTPPort)
		if err != nil {
			return err
		}
		d.httpLn = ln
		s.wg.Go(func() { _ = s.srv.Serve(ln) })
	}
	if tlsCfg != nil {
		ln, err := listen(s.cfg.TLSPort)
		if err != nil {
			d.closeListeners(nil)
			return err
		}
		tln := tls.NewListener(ln, tlsCfg)
		d.tlsLn = tln
		s.wg.Go(func() { _ = s.srv.Serve(tln) })
	}
	return nil
}

// plan says what the device serves now (mu held): whether 16992 is open
// and the TLS configuration of 16993 (nil: closed).
func (d *device) plan() (httpOn bool, tlsCfg *tls.Config, err error) {
	v := d.fwv()
	if d.remoteConfig() {
		// State 0/1: no management on 16992; 16993 only while a Hello
		// cycle has opened the remote-configuration window.
		if d.window {
			tlsCfg, err = d.provisioningTLS()
		}
		return d.sim.cfg.FactoryHTTP && !v.tlsOnly(), tlsCfg, err
	}
	cert := d.live.cert
	if cert == nil && v.tlsOnly() {
		// CSME 16.1+: TLS is on from activation with the firmware certificate.
		if cert, err = d.firmwareCert(); err != nil {
			return false, nil, err
		}
	}
	if cert != nil && (d.live.tls || v.tlsOnly()) {
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{*cert}}
		tlsVersions(tlsCfg, v)
		d.mutualTLS(tlsCfg)
	}
	httpOn = !v.tlsOnly() && (!d.live.tls || d.live.acceptNonSecure)
	return httpOn, tlsCfg, nil
}

// mutualTLS makes 16993 demand, while mutual authentication is live, a
// client certificate chaining to one of the device's trusted root
// certificates as committed (from 11.8 an added intermediate is an anchor
// too, which a pool of anchors models) and, when TrustedCN is set, whose
// CN ends in one of those FQDN suffixes. TrustedCN is read at each
// handshake: Intel documents that changing it needs no commit.
func (d *device) mutualTLS(cfg *tls.Config) {
	if !d.live.mutual {
		return
	}
	anchors := d.live.clientCAs
	cfg.ClientAuth = tls.RequireAnyClientCert
	cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
		d.mu.Lock()
		cns, now := d.state().tls8023.trustedCN, d.clock()
		d.mu.Unlock()
		err := verifyClientChain(raw, anchors, cns, now, d.sim.cfg.MutualTLSAnyEKU)
		if err != nil {
			d.mu.Lock()
			d.stats.mtlsRefusals++
			d.lastRefusal = err.Error()
			d.mu.Unlock()
		}
		return err
	}
}

// verifyClientChain checks a mutual-TLS client chain (leaf first) as the
// firmware does: it chains to an anchor, is valid at the device's clock,
// carries clientAuth unless anyEKU, and matches trustedCN when set.
func verifyClientChain(raw [][]byte, anchors *x509.CertPool, trustedCN []string, now time.Time, anyEKU bool) error {
	certs, err := parseClientChain(raw)
	if err != nil {
		return fmt.Errorf("mutual TLS: %w", err)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	eku := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if anyEKU {
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageAny}
	}
	if anchors == nil {
		anchors = x509.NewCertPool()
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: anchors, Intermediates: inter, CurrentTime: now, KeyUsages: eku}); err != nil {
		return fmt.Errorf("mutual TLS: client certificate %q does not chain to a trusted root: %w", certs[0].Subject.CommonName, err)
	}
	if len(trustedCN) == 0 {
		return nil
	}
	for _, suffix := range trustedCN {
		if domainMatch(certs[0].Subject.CommonName, suffix) {
			return nil
		}
	}
	return fmt.Errorf("mutual TLS: client CN %q matches no TrustedCN entry", certs[0].Subject.CommonName)
}

func cloneHashes(hs [][]byte) [][]byte {
	out := make([][]byte, len(hs))
	for i, h := range hs {
		out[i] = slices.Clone(h)
	}
	return out
}

// closeListeners closes listeners and every connection but keep (mu held).
func (d *device) closeListeners(keep net.Conn) {
	for _, ln := range []net.Listener{d.httpLn, d.tlsLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
	d.httpLn, d.tlsLn = nil, nil
	var cs []net.Conn
	for c := range d.conns {
		if keep == nil || (c != keep && !sameConn(c, keep)) {
			cs = append(cs, c)
		}
	}
	// Close outside the lock: Close takes mu through trackedConn.
	if len(cs) > 0 {
		d.sim.wg.Go(func() {
			for _, c := range cs {
				_ = c.Close()
			}
		})
	}
}

func sameConn(tracked, c net.Conn) bool {
	if t, ok := c.(*tls.Conn); ok {
		return t.NetConn() == tracked
	}
	return false
}

// restart takes the device off the network for delay, as the firmware does
// after CommitChanges or a reset; keep is the connection answering the call.
func (d *device) restart(delay time.Duration, keep net.Conn) {
	s := d.sim
	d.mu.Lock()
	d.closeListeners(keep)
	d.down = true
	d.mu.Unlock()
	s.wg.Go(func() {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-s.ctx.Done():
			return
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		d.down = false
		if d.httpLn == nil && d.tlsLn == nil {
			if err := d.openListeners(); err != nil {
				s.log.Error().Err(err).Str("device", d.addr.String()).Msg("listener restart failed")
			}
		}
		if d.helloOnRestart {
			d.helloOnRestart = false
			d.startHello()
		}
	})
}

// ServeHTTP answers one WS-Man request for the device that owns the connection.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ci, ok := r.Context().Value(connKey{}).(*connInfo)
	if !ok {
		http.Error(w, "no device", http.StatusInternalServerError)
		return
	}
	d := ci.d
	w.Header().Set("Server", "Intel(R) Active Management Technology "+d.version())
	if r.URL.Path != "/wsman" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBytes+1))
	if err != nil {
		return
	}
	if len(body) > maxRequestBytes {
		http.Error(w, "request too large", http.StatusRequestEntityTooLarge)
		return
	}
	if !sleepCtx(r.Context(), s.cfg.Latency) {
		return
	}
	req, perr := parseRequest(body)
	if perr == nil && req.identify {
		s.writeEnvelope(w, http.StatusOK, nil, s.identifyBody(d))
		return
	}
	if d.fwv().closePerCall() && r.TLS != nil {
		w.Header().Set("Connection", "close")
	}
	if ok, stale := s.authenticate(d, r); !ok {
		s.challenge(w, d, stale)
		return
	}

	if s.injectFault(w, r, d) || (perr == nil && d.dropCall(w, req.action)) {
		return
	}

	if perr != nil {
		s.writeFault(w, "", perr)
		return
	}
	res := s.dispatch(d, req)
	if res.fault != nil {
		s.log.Debug().Str("device", d.addr.String()).Str("action", req.action).Str("fault", res.fault.code).Msg("fault answered")
		s.writeFault(w, req.messageID, res.fault)
		return
	}
	reboot := !res.restart && d.rebootDue(req.action)
	if res.restart || reboot {
		w.Header().Set("Connection", "close")
	}
	s.writeEnvelope(w, http.StatusOK, s.header(req, res.action), res.body)
	if reboot {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		d.mu.Lock()
		d.revert()
		d.stats.reboots++
		d.mu.Unlock()
		d.restart(s.cfg.CommitDelay, ci.conn)
		return
	}
	if res.restart {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		delay := s.cfg.CommitDelay
		if res.tlsChanged && s.cfg.TLSRestart > 0 {
			delay = s.cfg.TLSRestart
		}
		d.restart(delay, ci.conn)
	}
}

// injectFault draws this request's fault and acts it out; true when the
// request has been answered (or dropped) by it.
func (s *Sim) injectFault(w http.ResponseWriter, r *http.Request, d *device) bool {
	d.mu.Lock()
	n := d.reqs
	d.reqs++
	d.stats.requests++
	fk := s.cfg.Faults.pick(s.cfg.Seed, d.idx, n)
	if fk != faultNone {
		d.stats.faults++
	}
	d.mu.Unlock()
	if fk != faultNone {
		s.log.Debug().Str("device", d.addr.String()).Str("fault", fk.String()).Uint64("request", n).Msg("fault injected")
	}
	switch fk {
	case faultDrop:
		dropConn(w)
		return true
	case faultHTTP500:
		http.Error(w, "Internal Server Error", http.StatusInternalServerError)
		return true
	case faultSlow:
		if !sleepCtx(r.Context(), s.cfg.Faults.SlowFor) {
			return true
		}
	case faultReboot:
		d.mu.Lock()
		d.revert()
		d.stats.reboots++
		d.mu.Unlock()
		dropConn(w)
		d.restart(s.cfg.CommitDelay, nil)
		return true
	}
	return false
}

func dropConn(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if c, _, err := hj.Hijack(); err == nil {
			_ = c.Close()
			return
		}
	}
	panic(http.ErrAbortHandler) // net/http closes the connection silently
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *Sim) header(req *request, action string) []*xnode {
	h := []*xnode{
		tx(nsAddressing, "To", anonymous),
		tx(nsAddressing, "RelatesTo", req.messageID),
		{ns: nsAddressing, name: "Action", text: action, attrs: []xattr{{ns: nsEnvelope, name: "mustUnderstand", value: "true"}}},
		tx(nsAddressing, "MessageID", fmt.Sprintf("uuid:00000000-8086-8086-8086-%012X", s.msgID.Add(1))),
	}
	if req.resourceURI != "" {
		h = append(h, tx(nsWSMan, "ResourceURI", req.resourceURI))
	}
	return h
}

func (s *Sim) writeEnvelope(w http.ResponseWriter, status int, header, body []*xnode) {
	b := newWriter().envelope(header, body)
	w.Header().Set("Content-Type", "application/soap+xml; charset=UTF-8")
	w.WriteHeader(status)
	if f, ok := w.(http.Flusher); ok {
		f.Flush() // firmware answers with chunked transfer encoding
	}
	_, _ = w.Write(b)
}

func (s *Sim) writeFault(w http.ResponseWriter, relatesTo string, f *fault) {
	wr := newWriter()
	header := []*xnode{
		tx(nsAddressing, "To", anonymous),
		tx(nsAddressing, "RelatesTo", relatesTo),
		{ns: nsAddressing, name: "Action", text: actionFault, attrs: []xattr{{ns: nsEnvelope, name: "mustUnderstand", value: "true"}}},
		tx(nsAddressing, "MessageID", fmt.Sprintf("uuid:00000000-8086-8086-8086-%012X", s.msgID.Add(1))),
	}
	code := "Sender"
	if f.code == "InternalError" {
		code = "Receiver"
	}
	fn := el(nsEnvelope, "Fault",
		el(nsEnvelope, "Code",
			tx(nsEnvelope, "Value", wr.qname(nsEnvelope, code)),
			el(nsEnvelope, "Subcode", tx(nsEnvelope, "Value", wr.qname(f.codeNS, f.code)))),
		el(nsEnvelope, "Reason", &xnode{ns: nsEnvelope, name: "Text", text: f.reason, attrs: []xattr{{ns: nsXML, name: "lang", value: "en-US"}}}),
	)
	if f.detail != "" {
		fn.kids = append(fn.kids, el(nsEnvelope, "Detail", tx(nsWSMan, "FaultDetail", f.detail)))
	}
	b := wr.envelope(header, []*xnode{fn})
	w.Header().Set("Content-Type", "application/soap+xml; charset=UTF-8")
	w.WriteHeader(http.StatusBadRequest)
	_, _ = w.Write(b)
}

// identifyBody is the unauthenticated WS-Management Identify answer.
func (s *Sim) identifyBody(d *device) []*xnode {
	const dash = "http://schemas.dmtf.org/wbem/dash/1/dash.xsd"
	return []*xnode{el(nsWSMID, "IdentifyResponse",
		tx(nsWSMID, "ProtocolVersion", nsWSMan),
		tx(nsWSMID, "ProductVendor", "Intel Corporation"),
		tx(nsWSMID, "ProductVersion", "AMT "+d.version()),
		tx(dash, "DASHVersion", "1.0.0"),
		el(nsWSMID, "SecurityProfiles",
			tx(nsWSMID, "SecurityProfileName", "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/http/digest"),
			tx(nsWSMID, "SecurityProfileName", "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/digest"),
		),
	)}
}

// --- HTTP Digest (RFC 2617, qop=auth, MD5), server side ---

const unauthorizedHTML = `<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01 Transitional//EN" >
<html><head><link rel=stylesheet href=/styles.css>
<meta http-equiv="Content-Type" content="text/html; charset=utf-8">
<title>Intel&reg; Active Management Technology</title></head>
<body>
<table class=header>
<tr><td valign=top nowrap>
<p class=top1>Intel<font class=r><sup>&reg;</sup></font> Active Management Technology
</td></tr></table>
<br><h2 class=warn>Log on failed. Incorrect user name or password, or user account temporarily locked.</h2>
<p>
<form METHOD="GET" action="index.htm"><h2><input type=submit value="Try again">
</h2></form>
<p>
</body>
</html>
`

func (s *Sim) challenge(w http.ResponseWriter, d *device, stale bool) {
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Digest realm="%s", nonce="%s", stale="%t", qop="auth"`,
		d.realm(), s.newNonce(d), stale))
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = io.WriteString(w, unauthorizedHTML)
}

// A nonce is issue-time + MAC(device, time): verifiable and expirable
// without storing anything per device.
func (s *Sim) newNonce(d *device) string {
	var b [8 + 16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(s.cfg.Now().UnixNano()))
	copy(b[8:], s.nonceMAC(d, b[:8]))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (s *Sim) nonceMAC(d *device, ts []byte) []byte {
	m := hmac.New(sha256.New, s.secret[:])
	m.Write(ts)
	m.Write(d.addr.AsSlice())
	return m.Sum(nil)[:16]
}

// checkNonce reports whether the nonce was issued by this device, and when.
func (s *Sim) checkNonce(d *device, nonce string) (time.Time, bool) {
	b, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(b) != 24 || !hmac.Equal(b[8:], s.nonceMAC(d, b[:8])) {
		return time.Time{}, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(b[:8]))), true
}

func parseDigestHeader(h string) (map[string]string, bool) {
	rest, ok := strings.CutPrefix(h, "Digest ")
	if !ok {
		return nil, false
	}
	out := map[string]string{}
	for rest = strings.TrimSpace(rest); rest != ""; rest = strings.TrimLeft(strings.TrimSpace(rest), ",") {
		rest = strings.TrimSpace(rest)
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			return nil, false
		}
		k = strings.ToLower(strings.TrimSpace(k))
		v = strings.TrimSpace(v)
		if strings.HasPrefix(v, `"`) {
			end := strings.Index(v[1:], `"`)
			if end < 0 {
				return nil, false
			}
			out[k], rest = v[1:1+end], v[2+end:]
		} else {
			val, after, _ := strings.Cut(v, ",")
			out[k], rest = strings.TrimSpace(val), after
		}
	}
	return out, true
}

// authenticate verifies a qop=auth MD5 digest against the HA1 the device
// keeps. A device in remote configuration logs in over TLS only; an
// account locked by repeated wrong passwords refuses even the right one.
func (s *Sim) authenticate(d *device, r *http.Request) (ok, stale bool) {
	p, good := parseDigestHeader(r.Header.Get("Authorization"))
	if !good {
		return false, false
	}
	if a := p["algorithm"]; a != "" && !strings.EqualFold(a, "MD5") {
		return false, false
	}
	if p["qop"] != "auth" || p["nc"] == "" || p["cnonce"] == "" || p["realm"] != d.realm() || p["uri"] != r.URL.RequestURI() {
		return false, false
	}
	user := p["username"]
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.remoteConfig() && r.TLS == nil {
		return false, false
	}
	secret, found := d.userHA1(user)
	if !found {
		return false, false
	}
	issued, valid := s.checkNonce(d, p["nonce"])
	if !valid {
		return false, false
	}
	now := s.cfg.Now()
	if now.Before(d.lockedTill[user]) {
		return false, false
	}
	h2 := md5.Sum([]byte(r.Method + ":" + p["uri"]))
	want := md5.Sum([]byte(hex.EncodeToString(secret[:]) + ":" + p["nonce"] + ":" + p["nc"] + ":" + p["cnonce"] + ":auth:" + hex.EncodeToString(h2[:])))
	if !hmac.Equal([]byte(hex.EncodeToString(want[:])), []byte(strings.ToLower(p["response"]))) {
		d.loginFailed(user, now)
		return false, false
	}
	delete(d.failures, user)
	if !s.nonceFresh(d, issued, now) {
		return false, true // right credentials, old nonce: client retries without prompting
	}
	return true, false
}

// loginFailed counts a wrong password and locks the account at the
// threshold (mu held).
func (d *device) loginFailed(user string, now time.Time) {
	th := d.sim.cfg.LockoutThreshold
	if th <= 0 {
		return
	}
	if d.failures == nil {
		d.failures = map[string]int{}
	}
	d.failures[user]++
	if d.failures[user] >= th {
		delete(d.failures, user)
		if d.lockedTill == nil {
			d.lockedTill = map[string]time.Time{}
		}
		d.lockedTill[user] = now.Add(d.sim.cfg.LockoutDuration)
		d.stats.lockouts++
		d.sim.log.Debug().Str("device", d.addr.String()).Str("user", user).Msg("account locked")
	}
}

// nonceFresh: within NonceTTL, not before the last user-list change, and
// in the current NonceReset period.
func (s *Sim) nonceFresh(d *device, issued, now time.Time) bool {
	age := now.Sub(issued)
	if age < -time.Minute || age > s.cfg.NonceTTL || issued.Before(d.nonceFloor) {
		return false
	}
	if p := s.cfg.NonceReset; p > 0 && issued.UnixNano()/int64(p) != now.UnixNano()/int64(p) {
		return false
	}
	return true
}

// userHA1 finds the digest secret of a user (mu held).
func (d *device) userHA1(user string) ([16]byte, bool) {
	st := d.state()
	if user == st.adminUser {
		return st.adminHA1, true
	}
	for _, u := range st.users {
		if u.name != "" && u.name == user {
			return u.ha1, true
		}
	}
	return [16]byte{}, false
}

func atoiDefault(s string, def int) int {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return def
	}
	return n
}
