package wsman

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/icholy/digest"
	"github.com/rs/zerolog"
)

// Default ports of AMT's WS-Man listener.
const (
	PortHTTP  = 16992
	PortHTTPS = 16993
)

// Defaults applied by New for zero Config fields.
const (
	DefaultTimeout          = 60 * time.Second // matches OperationTimeout PT60S
	DefaultMaxResponseBytes = 4 << 20
)

// Config describes how to reach one device.
type Config struct {
	// Address is "host" or "host:port". Without a port the client uses 16992
	// for plain HTTP and 16993 when TLS is set.
	Address string
	// TLS, when non-nil, makes the client use HTTPS and verify the device.
	TLS *TLSConfig
	// Username and Password for HTTP Digest authentication.
	Username string
	Password string
	// Timeout bounds each HTTP exchange (one Get, one Pull…). Default 60 s.
	Timeout time.Duration
	// MaxResponseBytes caps a reply body. Default 4 MiB.
	MaxResponseBytes int64
	// Logger receives debug lines per call; never credentials.
	Logger zerolog.Logger
	// DialContext overrides how connections are made (tests, proxies).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// ReadRetries is how often a Get or Enumerate that failed transiently
	// (Retryable), or a write the device answered with a 5xx, is tried
	// again; default 2, negative for none.
	ReadRetries int
	// Observe, when set, is told of every call: its action, how long it
	// took and its error (metrics).
	Observe func(action string, took time.Duration, err error)
}

// Client is a WS-Man client for ONE device. It serialises its requests (AMT
// firmware handles one request at a time well, and the digest nonce count is
// per client), so use one Client per device and share it between goroutines
// freely; use separate Clients for separate devices.
type Client struct {
	url         string
	user        string
	password    string
	timeout     time.Duration
	maxBody     int64
	readRetries int
	log         zerolog.Logger
	observe     func(action string, took time.Duration, err error)
	http        *http.Client
	leaf        *leafSeen // nil over plain HTTP

	sem chan struct{} // one request in flight; guards the fields below
	// msgID is the last MessageID sent; deterministic so golden tests can
	// compare envelopes byte for byte.
	msgID uint64
	chal  *digest.Challenge
	nc    int
}

// New builds a Client. It does not touch the network.
func New(cfg Config) (*Client, error) {
	if cfg.Address == "" {
		return nil, errors.New("wsman: config: Address is empty")
	}
	scheme, port := "http", PortHTTP
	var (
		tlsConf *tls.Config
		leaf    *leafSeen
	)
	if cfg.TLS != nil {
		scheme, port = "https", PortHTTPS
		var err error
		if tlsConf, leaf, err = cfg.TLS.build(); err != nil {
			return nil, err
		}
	}
	host := cfg.Address
	if h, p, err := net.SplitHostPort(cfg.Address); err == nil {
		if _, perr := strconv.ParseUint(p, 10, 16); perr != nil || h == "" {
			return nil, fmt.Errorf("wsman: config: Address %q: bad host or port", cfg.Address)
		}
	} else {
		host = net.JoinHostPort(cfg.Address, strconv.Itoa(port))
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = DefaultMaxResponseBytes
	}
	switch {
	case cfg.ReadRetries == 0:
		cfg.ReadRetries = 2
	case cfg.ReadRetries < 0:
		cfg.ReadRetries = 0
	}
	dial := cfg.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	tr := &http.Transport{
		DialContext:         dial,
		TLSClientConfig:     tlsConf,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxConnsPerHost:     1,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}
	return &Client{
		url:         scheme + "://" + host + "/wsman",
		user:        cfg.Username,
		password:    cfg.Password,
		timeout:     cfg.Timeout,
		maxBody:     cfg.MaxResponseBytes,
		readRetries: cfg.ReadRetries,
		log:         cfg.Logger,
		observe:     cfg.Observe,
		http: &http.Client{
			Transport: tr,
			// AMT never redirects; following one would leak the digest exchange.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		leaf: leaf,
		sem:  make(chan struct{}, 1),
	}, nil
}

// URL is the endpoint this client posts to.
func (c *Client) URL() string { return c.url }

// Close releases idle connections. The Client stays usable.
func (c *Client) Close() { c.http.CloseIdleConnections() }

func (c *Client) acquire(ctx context.Context) error {
	select {
	case c.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Client) release() { <-c.sem }

// call sends one request and interprets the reply (faults become errors).
func (c *Client) call(ctx context.Context, r Request) (*Envelope, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := c.acquire(ctx); err != nil {
		return nil, err
	}
	defer c.release()
	c.msgID++
	start := time.Now()
	status, data, err := c.post(ctx, r.Envelope(c.msgID), true)
	c.log.Debug().Str("action", r.Action).Str("resource", r.ResourceURI).Int("status", status).
		Dur("took", time.Since(start)).Err(err).Msg("wsman call")
	var env *Envelope
	if err == nil {
		env, err = interpret(status, data)
	}
	if c.observe != nil {
		c.observe(r.Action, time.Since(start), err)
	}
	return env, err
}

func interpret(status int, data []byte) (*Envelope, error) {
	env, derr := Decode(data)
	if derr == nil {
		if f := faultFromEnvelope(env, status); f != nil {
			return nil, f
		}
	}
	if status != http.StatusOK {
		return nil, &HTTPError{StatusCode: status, Status: strconv.Itoa(status) + " " + http.StatusText(status)}
	}
	if derr != nil {
		return nil, derr
	}
	return env, nil
}

// post performs the HTTP exchange including the digest handshake: a cached
// challenge is reused with an increasing nonce count; a 401 carrying a new
// challenge (no auth sent yet, stale=true, or a cached nonce the device has
// forgotten) is answered once more; a 401 against a fresh nonce means the
// credentials are wrong.
func (c *Client) post(ctx context.Context, body []byte, auth bool) (int, []byte, error) {
	fresh := false // the challenge in use came from a 401 within this call
	staleRetried := false
	for attempt := 0; attempt < 3; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("Content-Type", "application/soap+xml; charset=utf-8")
		sentAuth := false
		if auth && c.chal != nil {
			c.nc++
			cred, err := authorization(c.chal, c.user, c.password, req.URL.RequestURI(), c.nc)
			if err != nil {
				c.chal = nil
				return 0, nil, fmt.Errorf("%w: %v", ErrUnauthorized, err)
			}
			req.Header.Set("Authorization", cred)
			sentAuth = true
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return 0, nil, err
		}
		data, rerr := readLimited(resp.Body, c.maxBody)
		resp.Body.Close()
		if resp.StatusCode >= 300 && resp.StatusCode < 400 {
			loc := resp.Header.Get("Location")
			if len(loc) > 200 {
				loc = loc[:200] + "…"
			}
			return resp.StatusCode, nil, &HTTPError{StatusCode: resp.StatusCode, Status: resp.Status, Location: loc}
		}
		if resp.StatusCode != http.StatusUnauthorized {
			if rerr != nil {
				return resp.StatusCode, nil, rerr
			}
			return resp.StatusCode, data, nil
		}
		if !auth {
			return resp.StatusCode, nil, ErrUnauthorized
		}
		chal, err := findChallenge(resp.Header)
		if err != nil {
			c.chal = nil
			return resp.StatusCode, nil, fmt.Errorf("%w: %v", ErrUnauthorized, err)
		}
		retry := !sentAuth || !fresh || (chal.Stale && !staleRetried)
		if chal.Stale && fresh {
			staleRetried = true
		}
		c.chal, c.nc, fresh = chal, 0, true
		if !retry {
			return resp.StatusCode, nil, ErrUnauthorized
		}
	}
	return http.StatusUnauthorized, nil, ErrUnauthorized
}

// findChallenge picks the digest challenge AMT sent with a 401.
func findChallenge(h http.Header) (*digest.Challenge, error) {
	return digest.FindChallenge(h)
}

// authorization computes the Authorization header for a POST to uri.
func authorization(chal *digest.Challenge, user, password, uri string, nc int) (string, error) {
	cred, err := digest.Digest(chal, digest.Options{
		Method: http.MethodPost, URI: uri, Count: nc, Username: user, Password: password,
	})
	if err != nil {
		return "", err
	}
	return cred.String(), nil
}

func readLimited(r io.Reader, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrResponseTooLarge, limit)
	}
	return data, nil
}

// Get reads one instance and returns its element (the first child of Body).
// A transient failure is retried (see Config.ReadRetries).
func (c *Client) Get(ctx context.Context, resourceURI string, selectors ...Selector) (*Node, error) {
	return retryRead(ctx, c, func() (*Node, error) { return c.get(ctx, resourceURI, selectors...) })
}

func (c *Client) get(ctx context.Context, resourceURI string, selectors ...Selector) (*Node, error) {
	env, err := c.call(ctx, Request{Action: ActionGet, ResourceURI: resourceURI, Selectors: selectors})
	if err != nil {
		return nil, fmt.Errorf("wsman: get %s: %w", resourceURI, err)
	}
	p := env.Payload()
	if p == nil {
		return nil, fmt.Errorf("wsman: get %s: %w: empty body", resourceURI, ErrMalformed)
	}
	return p, nil
}

// Put replaces an instance with in (AMT wants the whole instance) and
// returns the instance element of the reply, which may be nil.
func (c *Client) Put(ctx context.Context, in Instance, selectors ...Selector) (*Node, error) {
	env, err := c.callWrite(ctx, Request{Action: ActionPut, ResourceURI: in.ResourceURI, Selectors: selectors, Body: in.Body()})
	if err != nil {
		return nil, fmt.Errorf("wsman: put %s: %w", in.ResourceURI, err)
	}
	return env.Payload(), nil
}

// Create creates an instance and returns the reference AMT gives back
// (ResourceCreated).
func (c *Client) Create(ctx context.Context, in Instance) (*EPR, error) {
	env, err := c.callWrite(ctx, Request{Action: ActionCreate, ResourceURI: in.ResourceURI, Body: in.Body()})
	if err != nil {
		return nil, fmt.Errorf("wsman: create %s: %w", in.ResourceURI, err)
	}
	epr := ParseEPR(env.Body.Child("ResourceCreated"))
	if epr == nil {
		return nil, fmt.Errorf("wsman: create %s: %w: no ResourceCreated reference", in.ResourceURI, ErrMalformed)
	}
	return epr, nil
}

// Delete removes the addressed instance. Some AMT classes answer with a bare
// ReturnValue in the body; a non-zero one is returned as *ReturnValueError.
func (c *Client) Delete(ctx context.Context, resourceURI string, selectors ...Selector) error {
	env, err := c.callWrite(ctx, Request{Action: ActionDelete, ResourceURI: resourceURI, Selectors: selectors})
	if err == nil {
		err = checkReturnValue("Delete", env.Body)
	}
	if err != nil {
		return fmt.Errorf("wsman: delete %s: %w", resourceURI, err)
	}
	return nil
}

// maxPulls bounds an enumeration so a device that never says EndOfSequence
// cannot keep us busy forever.
const maxPulls = 1000

// Enumerate runs Enumerate and then Pull until EndOfSequence, following the
// EnumerationContext each Pull returns, and yields the item elements. A
// transient failure reruns the whole enumeration: a half-pulled context
// cannot be trusted.
func (c *Client) Enumerate(ctx context.Context, resourceURI string, selectors ...Selector) ([]*Node, error) {
	return retryRead(ctx, c, func() ([]*Node, error) { return c.enumerate(ctx, resourceURI, selectors...) })
}

// retryRead reruns a read that failed transiently, with a short backoff.
//
// A timed-out call is not retried here: a device that hangs would cost
// the whole timeout again; the step above decides.
func retryRead[T any](ctx context.Context, c *Client, read func() (T, error)) (T, error) {
	return retry(ctx, c, read, func(err error) bool {
		var ne net.Error
		return Retryable(err) && !errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &ne) && ne.Timeout())
	})
}

// callWrite sends a write. Only a 5xx is retried: the device answered
// that it did not do it, so sending it again is safe. After a dropped
// connection the write may have happened; the step above, which knows
// whether repeating it is safe, decides.
func (c *Client) callWrite(ctx context.Context, r Request) (*Envelope, error) {
	return retry(ctx, c, func() (*Envelope, error) { return c.call(ctx, r) }, func(err error) bool {
		var he *HTTPError
		return errors.As(err, &he) && he.StatusCode >= 500
	})
}

func retry[T any](ctx context.Context, c *Client, op func() (T, error), again func(error) bool) (T, error) {
	for n := 0; ; n++ {
		v, err := op()
		if err == nil || n >= c.readRetries || !again(err) || ctx.Err() != nil {
			return v, err
		}
		c.log.Debug().Err(err).Int("retry", n+1).Msg("wsman call failed, retrying")
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(retryBackoff << n):
		}
	}
}

// retryBackoff is the first wait before a read is retried; it doubles.
const retryBackoff = 250 * time.Millisecond

func (c *Client) enumerate(ctx context.Context, resourceURI string, selectors ...Selector) ([]*Node, error) {
	env, err := c.call(ctx, Request{Action: ActionEnumerate, ResourceURI: resourceURI, Selectors: selectors, Body: enumerateBody()})
	if err != nil {
		return nil, fmt.Errorf("wsman: enumerate %s: %w", resourceURI, err)
	}
	er := env.Body.Child("EnumerateResponse")
	if er == nil {
		return nil, fmt.Errorf("wsman: enumerate %s: %w: no EnumerateResponse", resourceURI, ErrMalformed)
	}
	items := append([]*Node(nil), er.Child("Items").Elements()...)
	ectx := er.Get("EnumerationContext")
	if er.Has("EndOfSequence") {
		return items, nil
	}
	empty := 0
	for i := 0; ; i++ {
		if i >= maxPulls {
			return nil, fmt.Errorf("wsman: pull %s: no EndOfSequence after %d pulls", resourceURI, maxPulls)
		}
		if ectx == "" {
			return nil, fmt.Errorf("wsman: pull %s: %w: no EnumerationContext", resourceURI, ErrMalformed)
		}
		env, err := c.call(ctx, Request{Action: ActionPull, ResourceURI: resourceURI, Selectors: selectors, Body: pullBody(ectx)})
		if err != nil {
			return nil, fmt.Errorf("wsman: pull %s: %w", resourceURI, err)
		}
		pr := env.Body.Child("PullResponse")
		if pr == nil {
			return nil, fmt.Errorf("wsman: pull %s: %w: no PullResponse", resourceURI, ErrMalformed)
		}
		got := pr.Child("Items").Elements()
		items = append(items, got...)
		if pr.Has("EndOfSequence") {
			return items, nil
		}
		if next := pr.Get("EnumerationContext"); next != "" {
			ectx = next
		}
		if len(got) == 0 {
			if empty++; empty >= 3 {
				return nil, fmt.Errorf("wsman: pull %s: %w: three empty pulls without EndOfSequence", resourceURI, ErrMalformed)
			}
		} else {
			empty = 0
		}
	}
}

// Invoke calls a method (Action <resourceURI>/<method>) with a
// <h:<method>_INPUT> body and returns the <method>_OUTPUT element. A
// non-zero ReturnValue yields the output AND a *ReturnValueError.
func (c *Client) Invoke(ctx context.Context, resourceURI, method string, selectors []Selector, input []Field) (*Node, error) {
	return c.invoke(ctx, c.callWrite, resourceURI, method, selectors, input)
}

// InvokeRead is Invoke for a method that only reads (GetUuid,
// EnumerateUserAclEntries…): a transient failure is retried as a Get's is.
func (c *Client) InvokeRead(ctx context.Context, resourceURI, method string, selectors []Selector, input []Field) (*Node, error) {
	return retryRead(ctx, c, func() (*Node, error) { return c.invoke(ctx, c.call, resourceURI, method, selectors, input) })
}

func (c *Client) invoke(ctx context.Context, call func(context.Context, Request) (*Envelope, error), resourceURI, method string, selectors []Selector, input []Field) (*Node, error) {
	env, err := call(ctx, Request{
		Action: resourceURI + "/" + method, ResourceURI: resourceURI, Selectors: selectors,
		Body: MethodInput(resourceURI, method, input),
	})
	if err != nil {
		return nil, fmt.Errorf("wsman: invoke %s %s: %w", resourceURI, method, err)
	}
	out := env.Body.Child(method + "_OUTPUT")
	if out == nil {
		return nil, fmt.Errorf("wsman: invoke %s %s: %w: no %s_OUTPUT", resourceURI, method, ErrMalformed, method)
	}
	if err := checkReturnValue(method, out); err != nil {
		return out, fmt.Errorf("wsman: invoke %s %s: %w", resourceURI, method, err)
	}
	return out, nil
}

// ReturnValue reads n's ReturnValue; ok is false when there is none (some
// outputs, e.g. GetUuid, carry no ReturnValue).
func ReturnValue(n *Node) (code int, ok bool, err error) {
	rv := n.Child("ReturnValue")
	if rv == nil {
		return 0, false, nil
	}
	v, err := strconv.Atoi(rv.Value())
	if err != nil {
		return 0, true, fmt.Errorf("%w: ReturnValue %q is not a number", ErrMalformed, rv.Value())
	}
	return v, true, nil
}

func checkReturnValue(method string, n *Node) error {
	code, ok, err := ReturnValue(n)
	if err != nil {
		return err
	}
	if ok && code != StatusSuccess {
		return &ReturnValueError{Method: method, Code: code, Name: StatusName(code)}
	}
	return nil
}

// IdentifyResponse is what a WS-Man Identify tells about the listener.
type IdentifyResponse struct {
	ProtocolVersion  string
	ProductVendor    string
	ProductVersion   string
	DASHVersion      string
	SecurityProfiles []string
}

// Identify sends the unauthenticated WS-Man Identify (no Authorization
// header, no digest handshake). Discovery uses it: any AMT answers it on
// 16992/16993. A 401 comes back as ErrUnauthorized, which still proves a
// WS-Man listener is there.
func (c *Client) Identify(ctx context.Context) (*IdentifyResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := c.acquire(ctx); err != nil {
		return nil, fmt.Errorf("wsman: identify: %w", err)
	}
	defer c.release()
	status, data, err := c.post(ctx, []byte(identifyEnvelope), false)
	if err != nil {
		return nil, fmt.Errorf("wsman: identify: %w", err)
	}
	env, err := interpret(status, data)
	if err != nil {
		return nil, fmt.Errorf("wsman: identify: %w", err)
	}
	ir := env.Body.Child("IdentifyResponse")
	if ir == nil {
		return nil, fmt.Errorf("wsman: identify: %w: no IdentifyResponse", ErrMalformed)
	}
	return &IdentifyResponse{
		ProtocolVersion:  ir.Get("ProtocolVersion"),
		ProductVendor:    ir.Get("ProductVendor"),
		ProductVersion:   ir.Get("ProductVersion"),
		DASHVersion:      ir.Get("DASHVersion"),
		SecurityProfiles: ir.Child("SecurityProfiles").Values("SecurityProfileName"),
	}, nil
}
