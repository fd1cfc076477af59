package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Proxy is a TCP relay the harness owns between one agent and its server
// replica, so that the chaos suite can cut them apart: Partition drops
// every relayed connection and refuses new ones (accepted, then closed
// at once) until Heal. The listener stays bound throughout, so no other
// process can take its port.
type Proxy struct {
	Addr   string // where the agent connects
	target string

	ln    net.Listener
	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
	// agentSide marks the accepted half of each relayed pair.
	agentSide map[net.Conn]bool
	wg        sync.WaitGroup
	closed    chan struct{}
	// refused counts connections refused while partitioned, dropped the
	// agent-side connections Partition cut.
	refused, dropped int
}

// NewProxy listens on listen and relays every connection to target.
func NewProxy(listen, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("fleet: proxy on %s: %w", listen, err)
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]struct{}{}, agentSide: map[net.Conn]bool{}, closed: make(chan struct{})}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			select {
			case <-p.closed:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // e.g. EMFILE: do not spin
			continue
		}
		p.mu.Lock()
		if p.cut {
			p.refused++
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.agentSide[c] = true
		p.mu.Unlock()
		p.wg.Add(1)
		go p.relay(c)
	}
}

// relay copies both ways until either side ends, then closes both.
func (p *Proxy) relay(c net.Conn) {
	defer p.wg.Done()
	defer p.forget(c)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	up, err := (&net.Dialer{}).DialContext(ctx, "tcp", p.target)
	cancel()
	if err != nil {
		return
	}
	p.mu.Lock()
	if p.cut {
		p.mu.Unlock()
		up.Close()
		return
	}
	p.conns[up] = struct{}{}
	p.mu.Unlock()
	defer p.forget(up)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	c.Close()
	up.Close()
	<-done
}

func (p *Proxy) forget(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.agentSide, c)
	p.mu.Unlock()
}

// Partition closes every relayed connection and refuses new ones.
func (p *Proxy) Partition() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		// A reset, not an orderly close: a link that went away.
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
		if p.agentSide[c] {
			p.dropped++
		}
	}
}

// Stats are the connections cut by Partition and refused while cut.
func (p *Proxy) Stats() (dropped, refused int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped, p.refused
}

// Heal lets connections through again.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

// Close stops the proxy and every connection through it.
func (p *Proxy) Close() error {
	close(p.closed)
	err := p.ln.Close()
	p.Partition()
	p.wg.Wait()
	return err
}
