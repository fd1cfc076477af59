package amtsim

import (
	"fmt"
	"strconv"
	"strings"
)

// request is what the simulator reads from a WS-Man envelope.
type request struct {
	identify    bool
	action      string
	resourceURI string
	messageID   string
	selectors   []selector
	body        *elem // first element of the Body, nil if empty
}

func parseRequest(b []byte) (*request, *fault) {
	root, err := parseXML(b)
	if err != nil {
		return nil, errSchema("malformed XML: %v", err)
	}
	if root.space != nsEnvelope || root.local != "Envelope" {
		return nil, errSchema("root element is {%s}%s, want a SOAP 1.2 Envelope", root.space, root.local)
	}
	hdr, body := root.child(nsEnvelope, "Header"), root.child(nsEnvelope, "Body")
	if body == nil {
		return nil, errSchema("no SOAP Body")
	}
	req := &request{}
	if len(body.kids) > 0 {
		req.body = body.kids[0]
	}
	if req.body != nil && req.body.space == nsWSMID && req.body.local == "Identify" {
		req.identify = true
		return req, nil
	}
	if hdr == nil {
		return nil, errSchema("no SOAP Header")
	}
	need := func(space, local string) (string, *fault) {
		e := hdr.child(space, local)
		if e == nil || e.trimmed() == "" {
			return "", faultf(nsAddressing, "MessageInformationHeaderRequired", "A required header property was not present: %s", local)
		}
		return e.trimmed(), nil
	}
	var f *fault
	if req.action, f = need(nsAddressing, "Action"); f != nil {
		return nil, f
	}
	if req.messageID, f = need(nsAddressing, "MessageID"); f != nil {
		return nil, f
	}
	if req.resourceURI, f = need(nsWSMan, "ResourceURI"); f != nil {
		return nil, f
	}
	if _, f = need(nsAddressing, "To"); f != nil {
		return nil, f
	}
	if rt := hdr.child(nsAddressing, "ReplyTo"); rt == nil || rt.child(nsAddressing, "Address").trimmed() != anonymous {
		return nil, faultf(nsAddressing, "MessageInformationHeaderRequired", "ReplyTo/Address must be the anonymous role")
	}
	if ss := hdr.child(nsWSMan, "SelectorSet"); ss != nil {
		for _, s := range ss.all(nsWSMan, "Selector") {
			name := s.attr("Name")
			if name == "" {
				return nil, errSelectors("a Selector has no Name")
			}
			req.selectors = append(req.selectors, selector{name: name, value: s.trimmed()})
		}
	}
	return req, nil
}

// result is a dispatched answer: its Action, Body, or a fault.
type result struct {
	action     string
	body       []*xnode
	fault      *fault
	restart    bool // take the listener down after answering (commit, unprovision)
	tlsChanged bool // the restart changes what 16993 serves: wait TLSRestart
}

type call struct {
	s          *Sim
	d          *device
	req        *request
	cls        *class
	in         *elem // method _INPUT, or the instance of Put/Create
	restart    bool
	tlsChanged bool
}

type methodFn func(c *call) (out []prop, rv int, f *fault)

type method struct {
	fn    methodFn
	write bool // changes NVRAM (copy-on-write before the call)
	// bare renders outputs without namespace and without ReturnValue, as the
	// GetUuid fixture shows.
	bare bool
}

type class struct {
	name, uri string
	id        int
	// list returns every instance (Get selects one, Pull returns all); nil: no Get/Enumerate.
	list   func(c *call, st *nvram) []instance
	put    func(c *call, st *nvram, target instance) *fault
	create func(c *call, st *nvram) (*epr, *fault)
	del    func(c *call, st *nvram, target instance) *fault
	delRV  bool // Delete answers <ReturnValue> in the body (CIM_WiFiEndpointSettings)
	// eprKeys: the keys are EPRs (associations); selectors are accepted as
	// long as the class has a single instance.
	eprKeys bool
	methods map[string]method
}

func (s *Sim) addClass(c *class) {
	if s.classes == nil {
		s.classes = map[string]*class{}
	}
	c.id = len(s.order) + 1
	s.classes[c.uri] = c
	s.order = append(s.order, c)
}

// dispatch runs one operation under the device lock: the firmware handles
// one request at a time.
func (s *Sim) dispatch(d *device, req *request) result {
	cls := s.classes[req.resourceURI]
	if cls == nil {
		return result{fault: errDestination(req.resourceURI)}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	c := &call{s: s, d: d, req: req, cls: cls, in: req.body}
	switch req.action {
	case actionGet:
		if cls.list == nil {
			return result{fault: errAction(req.action)}
		}
		in, f := selectOne(cls, cls.list(c, d.state()), req.selectors)
		if f != nil {
			return result{fault: f}
		}
		return result{action: nsTransfer + "/GetResponse", body: []*xnode{instanceNode(cls, in)}}
	case actionPut:
		if cls.put == nil || cls.list == nil {
			return result{fault: errAction(req.action)}
		}
		target, f := selectOne(cls, cls.list(c, d.state()), req.selectors)
		if f != nil {
			return result{fault: f}
		}
		if c.in == nil || c.in.space != cls.uri || c.in.local != cls.name {
			return result{fault: errRepresentation("body must be a %s instance in namespace %s", cls.name, cls.uri)}
		}
		if f := cls.put(c, d.write(), target); f != nil {
			return result{fault: f}
		}
		d.touched()
		// Answer with the instance as it now is, selected by its key.
		after, f := selectOne(cls, cls.list(c, d.state()), keyOf(target))
		if f != nil {
			return result{fault: f}
		}
		return result{action: nsTransfer + "/PutResponse", body: []*xnode{instanceNode(cls, after)}, restart: c.restart}
	case actionCreate:
		if cls.create == nil {
			return result{fault: errAction(req.action)}
		}
		if c.in == nil || c.in.space != cls.uri || c.in.local != cls.name {
			return result{fault: errRepresentation("body must be a %s instance in namespace %s", cls.name, cls.uri)}
		}
		ref, f := cls.create(c, d.write())
		if f != nil {
			return result{fault: f}
		}
		d.touched()
		n := el(nsTransfer, "ResourceCreated")
		n.kids = eprKids(ref)
		return result{action: nsTransfer + "/CreateResponse", body: []*xnode{n}}
	case actionDelete:
		if cls.del == nil || cls.list == nil {
			return result{fault: errAction(req.action)}
		}
		target, f := selectOne(cls, cls.list(c, d.state()), req.selectors)
		if f != nil {
			return result{fault: f}
		}
		if f := cls.del(c, d.write(), target); f != nil {
			return result{fault: f}
		}
		d.touched()
		var body []*xnode
		if cls.delRV {
			body = []*xnode{tx(cls.uri, "ReturnValue", "0")}
		}
		return result{action: nsTransfer + "/DeleteResponse", body: body, restart: c.restart}
	case actionEnumerate:
		if cls.list == nil {
			return result{fault: errAction(req.action)}
		}
		if c.in == nil || c.in.space != nsEnumeration || c.in.local != "Enumerate" {
			return result{fault: errSchema("Enumerate body missing")}
		}
		ctx := fmt.Sprintf("%08X-%04X-0000-0000-000000000000", s.enumSeq.Add(1), cls.id)
		return result{action: nsEnumeration + "/EnumerateResponse", body: []*xnode{
			el(nsEnumeration, "EnumerateResponse", tx(nsEnumeration, "EnumerationContext", ctx))}}
	case actionPull:
		if cls.list == nil {
			return result{fault: errAction(req.action)}
		}
		return s.pull(c, cls)
	}
	name, ok := strings.CutPrefix(req.action, cls.uri+"/")
	m, known := cls.methods[name]
	if !ok || !known {
		return result{fault: errAction(req.action)}
	}
	if c.in == nil || c.in.space != cls.uri || c.in.local != name+"_INPUT" {
		return result{fault: errSchema("body must be %s_INPUT in namespace %s", name, cls.uri)}
	}
	if m.write {
		d.write()
	}
	out, rv, f := m.fn(c)
	if f != nil {
		return result{fault: f}
	}
	if m.write && rv == rvSuccess && !c.restart {
		d.touched()
	}
	ns := cls.uri
	if m.bare {
		ns = nsEnvelope // the GetUuid fixture's UUID sits in the default (SOAP) namespace
	}
	n := el(cls.uri, name+"_OUTPUT")
	for _, p := range out {
		n.kids = append(n.kids, p.nodes(ns)...)
	}
	if !m.bare {
		n.kids = append(n.kids, tx(cls.uri, "ReturnValue", strconv.Itoa(rv)))
	}
	return result{action: cls.uri + "/" + name + "Response", body: []*xnode{n}, restart: c.restart, tlsChanged: c.tlsChanged}
}

// pull answers from a context made by Enumerate: "SEQ-CLASS-OFFSET-…".
func (s *Sim) pull(c *call, cls *class) result {
	in := c.in
	if in == nil || in.space != nsEnumeration || in.local != "Pull" {
		return result{fault: errSchema("Pull body missing")}
	}
	ctxText := in.child(nsEnumeration, "EnumerationContext").trimmed()
	parts := strings.Split(ctxText, "-")
	invalid := faultf(nsEnumeration, "InvalidEnumerationContext", "The supplied enumeration context %q is invalid.", ctxText)
	if len(parts) != 5 || len(parts[0]) != 8 || len(parts[1]) != 4 || len(parts[2]) != 4 {
		return result{fault: invalid}
	}
	id, err1 := strconv.ParseUint(parts[1], 16, 16)
	off, err2 := strconv.ParseUint(parts[2], 16, 16)
	if _, err := strconv.ParseUint(parts[0], 16, 32); err != nil || err1 != nil || err2 != nil || int(id) != cls.id {
		return result{fault: invalid}
	}
	max := defaultPullMaxEls
	if me := in.child(nsEnumeration, "MaxElements"); me != nil {
		n, err := strconv.Atoi(me.trimmed())
		if err != nil || n < 1 {
			return result{fault: errSchema("MaxElements %q", me.trimmed())}
		}
		max = n
	}
	all := cls.list(c, c.d.state())
	if int(off) > len(all) {
		return result{fault: invalid}
	}
	items := el(nsEnumeration, "Items")
	end := min(len(all), int(off)+max)
	for _, x := range all[off:end] {
		items.kids = append(items.kids, instanceNode(cls, x))
	}
	resp := el(nsEnumeration, "PullResponse")
	if end < len(all) {
		next := fmt.Sprintf("%s-%s-%04X-0000-000000000000", parts[0], parts[1], end)
		resp.kids = append(resp.kids, tx(nsEnumeration, "EnumerationContext", next), items)
	} else {
		resp.kids = append(resp.kids, items, el(nsEnumeration, "EndOfSequence"))
	}
	return result{action: nsEnumeration + "/PullResponse", body: []*xnode{resp}}
}

func keyOf(in instance) []selector {
	for _, k := range []string{"InstanceID", "Name"} {
		if v, ok := in.get(k); ok {
			return []selector{{name: k, value: v}}
		}
	}
	return nil
}

// selectOne picks the instance the selectors name. Every selector must
// name a property of the class and match it; without selectors the class
// must have exactly one instance.
func selectOne(cls *class, all []instance, sels []selector) (instance, *fault) {
	if len(sels) == 0 || (cls.eprKeys && len(all) == 1) {
		switch len(all) {
		case 1:
			return all[0], nil
		case 0:
			return nil, faultf(nsAddressing, "DestinationUnreachable", "No instance of %s exists.", cls.name)
		}
		return nil, errSelectors("%s has %d instances; name one with a selector", cls.name, len(all))
	}
	for _, in := range all {
		match := true
		for _, s := range sels {
			v, ok := in.get(s.name)
			if !ok || v != s.value {
				match = false
				break
			}
		}
		if match {
			return in, nil
		}
	}
	if len(all) > 0 {
		for _, s := range sels {
			if _, ok := all[0].get(s.name); !ok {
				return nil, errSelectors("%s has no key %q", cls.name, s.name)
			}
		}
	}
	return nil, faultf(nsAddressing, "DestinationUnreachable", "No %s instance matches the selectors.", cls.name)
}

// --- helpers for reading method inputs ---

func (c *call) param(name string) *elem { return c.in.child(c.cls.uri, name) }

func (c *call) paramText(name string) (string, bool) {
	e := c.param(name)
	if e == nil {
		return "", false
	}
	return e.trimmed(), true
}

func (c *call) paramInt(name string) (int, bool) {
	v, ok := c.paramText(name)
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	return n, err == nil
}

func (c *call) paramInts(name string) ([]int, bool) {
	var out []int
	for _, e := range c.in.all(c.cls.uri, name) {
		n, err := strconv.Atoi(e.trimmed())
		if err != nil {
			return nil, false
		}
		out = append(out, n)
	}
	return out, true
}

// eprSelector reads a selector value out of an EPR-valued parameter:
// <Param><a:Address/><a:ReferenceParameters><w:ResourceURI/><w:SelectorSet>…
func eprSelector(e *elem, name string) (uri, value string, ok bool) {
	rp := e.child(nsAddressing, "ReferenceParameters")
	if rp == nil {
		return "", "", false
	}
	uri = rp.child(nsWSMan, "ResourceURI").trimmed()
	for _, s := range rp.child(nsWSMan, "SelectorSet").all(nsWSMan, "Selector") {
		if s.attr("Name") == name {
			return uri, s.trimmed(), true
		}
	}
	return uri, "", false
}

func parseBool(s string) (bool, bool) {
	switch strings.TrimSpace(s) {
	case "true", "1":
		return true, true
	case "false", "0":
		return false, true
	}
	return false, false
}
