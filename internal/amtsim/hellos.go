package amtsim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/amtops/amtops/internal/hello"
)

// helloSchedule is when a device in state 0 sends its Hellos, from the
// start of a cycle: at once, every unit for 5 units, every 5 units up to
// an hour, then hourly up to 24 hours (AMT-WSMAN.md; unit 1m is firmware's).
func helloSchedule(unit time.Duration) []time.Duration {
	out := []time.Duration{0}
	t := time.Duration(0)
	for range 5 {
		t += unit
		out = append(out, t)
	}
	for t < 60*unit {
		t += 5 * unit
		out = append(out, t)
	}
	for t < 24*60*unit {
		t += 60 * unit
		out = append(out, t)
	}
	return out
}

// ErrNoHello is returned by TriggerHello for a device that does not send Hellos.
var ErrNoHello = errors.New("amtsim: device sends no Hello")

// TriggerHello is the in-band trigger (an agent on the host's OS asking
// the management engine): a factory device in state 0 starts a new Hello
// cycle at once and opens its remote-configuration window on 16993.
func (s *Sim) TriggerHello(addr netip.Addr) error {
	d := s.device(addr)
	if d == nil {
		return fmt.Errorf("amtsim: trigger hello: %s is not a fleet address", addr)
	}
	if s.stopping() {
		return fmt.Errorf("amtsim: trigger hello %s: simulator not running", addr)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.kind() == KindNotAMT || d.state().provState != 0 {
		return fmt.Errorf("%w: %s is %s in provisioning state %d", ErrNoHello, addr, d.kind().Profile(), d.state().provState)
	}
	d.startHello()
	return nil
}

// startBareMetalHellos: with a Hello address, every device in state 0
// starts sending at power-on (the OEM's bare-metal setting).
func (s *Sim) startBareMetalHellos() {
	if s.cfg.HelloAddr == "" {
		return
	}
	for _, d := range s.devs {
		d.mu.Lock()
		if d.kind() != KindNotAMT && d.state().provState == 0 {
			d.startHello()
		}
		d.mu.Unlock()
	}
}

// startHello (re)starts the Hello cycle and opens the window (mu held).
func (d *device) startHello() {
	if d.helloStop != nil {
		d.helloStop()
	}
	ctx, cancel := context.WithCancel(d.sim.ctx)
	d.helloStop = cancel
	d.helloGen++
	gen := d.helloGen
	if !d.window {
		d.window = true
		d.reopen()
	}
	d.sim.wg.Go(func() { d.helloCycle(ctx, gen) })
}

// reopen re-binds the listeners after a change of what they serve (mu held);
// a device down for a restart picks the change up when it comes back.
func (d *device) reopen() {
	if d.down {
		return
	}
	d.closeListeners(nil)
	if err := d.openListeners(); err != nil {
		d.sim.log.Error().Err(err).Str("device", d.addr.String()).Msg("listener reopen failed")
	}
}

// unprovisioned ends any Hello cycle; the device is dark until the next
// one, which HelloAfterUnprovision starts once it is back up (mu held).
func (d *device) unprovisioned() {
	if d.helloStop != nil {
		d.helloStop()
		d.helloStop = nil
	}
	d.window = false
	d.helloGen++
	d.helloOnRestart = d.sim.cfg.HelloAfterUnprovision
	if !d.sim.cfg.KeepHashesOnUnprovision {
		d.addedHashes = nil
	}
}

func (d *device) helloCycle(ctx context.Context, gen int) {
	s := d.sim
	unit := s.cfg.HelloInterval
	start := time.Now()
	for i, at := range helloSchedule(unit) {
		if !sleepCtx(ctx, time.Until(start.Add(at))) {
			return
		}
		d.mu.Lock()
		sending := d.helloGen == gen && d.state().provState == 0
		msg := d.helloMessage(i)
		d.mu.Unlock()
		if !sending {
			break // a remote configuration has begun (or a new cycle replaced this one)
		}
		if s.cfg.HelloAddr != "" {
			err := d.sendHello(ctx, msg)
			d.mu.Lock()
			if err != nil {
				d.helloFails++
			} else {
				d.hellos++
			}
			d.mu.Unlock()
			if err != nil {
				s.log.Debug().Err(err).Str("device", d.addr.String()).Int("retry", i).Msg("hello not delivered")
			}
		}
	}
	// The window stays open an hour after the last Hello, then closes.
	if !sleepCtx(ctx, 60*unit) {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.helloGen != gen {
		return
	}
	d.helloStop, d.window = nil, false
	if d.remoteConfig() {
		d.reopen()
	}
}

// helloMessage builds the Hello of retry n (mu held).
func (d *device) helloMessage(n int) hello.Hello {
	h := hello.Hello{RetryCount: uint32(n), UUID: hello.UUID(d.wireUUID())}
	if d.state().adminSet {
		h.Flags = 1
	}
	for _, x := range d.trustedHashes() {
		h.Hashes = append(h.Hashes, hello.Hash{Alg: hello.HashAlg(hashType(x)), Sum: slices.Clone(x)})
	}
	return h
}

// sendHello connects from the device's own address, sends, and closes.
func (d *device) sendHello(ctx context.Context, h hello.Hello) error {
	b, err := h.Encode()
	if err != nil {
		return fmt.Errorf("encode hello: %w", err)
	}
	dl := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: d.addr.AsSlice()}}
	c, err := dl.DialContext(ctx, "tcp4", d.sim.cfg.HelloAddr)
	if err != nil {
		return fmt.Errorf("dial %s: %w", d.sim.cfg.HelloAddr, err)
	}
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(b); err != nil {
		return fmt.Errorf("write hello: %w", err)
	}
	return nil
}
