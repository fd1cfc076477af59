package directory

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/rs/zerolog"
)

// pool is a bounded set of bound LDAP connections. slots limits how many
// exist at once (idle or in use); idle ones are reused newest first.
type pool struct {
	cfg   Config
	tls   *tls.Config
	log   zerolog.Logger
	slots chan struct{}

	mu     sync.Mutex
	idle   []*ldap.Conn
	closed bool
}

var errPoolClosed = errors.New("connection pool closed")

func newPool(cfg Config, tc *tls.Config, log zerolog.Logger) *pool {
	return &pool{cfg: cfg, tls: tc, log: log, slots: make(chan struct{}, cfg.PoolSize)}
}

// get returns a bound connection and whether it came from the idle list.
func (p *pool) get(ctx context.Context) (*ldap.Conn, bool, error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, false, fmt.Errorf("wait for a connection: %w", ctx.Err())
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.slots
		return nil, false, errPoolClosed
	}
	for n := len(p.idle); n > 0; n = len(p.idle) {
		c := p.idle[n-1]
		p.idle = p.idle[:n-1]
		if !c.IsClosing() {
			p.mu.Unlock()
			return c, true, nil
		}
		c.Close()
	}
	p.mu.Unlock()
	c, err := p.dial(ctx)
	if err != nil {
		<-p.slots
		return nil, false, err
	}
	return c, false, nil
}

// put returns c to the pool, or closes it when it is broken.
func (p *pool) put(c *ldap.Conn, broken bool) {
	p.mu.Lock()
	if broken || p.closed || c.IsClosing() {
		p.mu.Unlock()
		c.Close()
	} else {
		p.idle = append(p.idle, c)
		p.mu.Unlock()
	}
	<-p.slots
}

func (p *pool) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, c := range p.idle {
		c.Close()
	}
	p.idle = nil
	return nil
}

// dial tries each URL in turn: connect (TLS), StartTLS if configured, bind.
func (p *pool) dial(ctx context.Context) (*ldap.Conn, error) {
	var errs []error
	for _, raw := range p.cfg.URLs {
		c, err := p.dialOne(ctx, raw)
		if err == nil {
			return c, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", raw, err))
		if permanent(err) || ctx.Err() != nil {
			break // wrong credentials or certificate: another DC will say the same
		}
	}
	return nil, errors.Join(errs...)
}

func (p *pool) dialOne(ctx context.Context, raw string) (*ldap.Conn, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	tc := p.tls.Clone()
	if tc.ServerName == "" {
		tc.ServerName = u.Hostname()
	}
	deadline := time.Now().Add(p.cfg.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	dialer := &net.Dialer{Deadline: deadline}
	c, err := ldap.DialURL(raw, ldap.DialWithDialer(dialer), ldap.DialWithTLSConfig(tc))
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	err = withConn(ctx, c, p.cfg.Timeout, func(c *ldap.Conn) error {
		if p.cfg.StartTLS {
			if err := c.StartTLS(tc); err != nil {
				return fmt.Errorf("starttls: %w", err)
			}
		}
		if err := c.Bind(p.cfg.BindDN, p.cfg.Password.Reveal()); err != nil {
			return fmt.Errorf("bind as %s: %w", p.cfg.BindDN, err)
		}
		return nil
	})
	if err != nil {
		c.Close()
		return nil, err
	}
	p.log.Debug().Str("url", raw).Msg("directory connection bound")
	return c, nil
}

// withConn runs fn on c with the request timeout capped by ctx's deadline,
// and closes c if ctx ends first: go-ldap does not take a context, so
// closing the connection is the only way to abandon a request in flight.
func withConn(ctx context.Context, c *ldap.Conn, timeout time.Duration, fn func(*ldap.Conn) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok {
		if left := time.Until(d); left < timeout {
			timeout = max(left, time.Millisecond)
		}
	}
	c.SetTimeout(timeout)
	stop := context.AfterFunc(ctx, func() { c.Close() })
	err := fn(c)
	switch {
	case !stop():
		// ctx ended while fn ran and the connection was closed under it.
		if err == nil {
			err = ctx.Err()
		} else {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
	case err != nil && pastDeadline(ctx):
		// The request timeout was cut to ctx's deadline and fired first.
		c.Close()
		err = fmt.Errorf("%w (%v)", context.DeadlineExceeded, err)
	}
	return err
}

func pastDeadline(ctx context.Context) bool {
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}
