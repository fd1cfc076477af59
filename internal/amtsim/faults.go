package amtsim

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// DropCall makes the device drop, unanswered and not applied, the call
// of method (an action's last path element, e.g. "CommitChanges") after
// skip more of them go through: the network loss a client cannot tell
// from a restart that came before the answer.
func (s *Sim) DropCall(addr netip.Addr, method string, skip int) error {
	d := s.device(addr)
	if d == nil {
		return fmt.Errorf("amtsim: drop call: %s is not a fleet address", addr)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.drops == nil {
		d.drops = map[string]int{}
	}
	d.drops[method] = skip
	return nil
}

// dropCall acts out DropCall for one request; true when it dropped it.
func (d *device) dropCall(w http.ResponseWriter, action string) bool {
	method := action[strings.LastIndexByte(action, '/')+1:]
	d.mu.Lock()
	left, ok := d.drops[method]
	if ok && left > 0 {
		d.drops[method] = left - 1
	} else if ok {
		delete(d.drops, method)
	}
	d.mu.Unlock()
	if !ok || left > 0 {
		return false
	}
	dropConn(w)
	return true
}

// RebootAfter makes the device restart right after it has answered the
// call of method that comes after skip more of them: its uncommitted
// changes are lost between that answer and the client's next call, as a
// reset there loses them.
func (s *Sim) RebootAfter(addr netip.Addr, method string, skip int) error {
	d := s.device(addr)
	if d == nil {
		return fmt.Errorf("amtsim: reboot after: %s is not a fleet address", addr)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.rebootsAfter == nil {
		d.rebootsAfter = map[string]int{}
	}
	d.rebootsAfter[method] = skip
	return nil
}

// rebootDue acts out RebootAfter's count for one request; true when the
// device is to restart once it has answered it.
func (d *device) rebootDue(action string) bool {
	method := action[strings.LastIndexByte(action, '/')+1:]
	d.mu.Lock()
	defer d.mu.Unlock()
	left, ok := d.rebootsAfter[method]
	switch {
	case !ok:
		return false
	case left > 0:
		d.rebootsAfter[method] = left - 1
		return false
	}
	delete(d.rebootsAfter, method)
	return true
}
