package amtsim

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"strings"
)

// Namespaces of the WS-Man wire format, as real firmware declares them.
const (
	nsEnvelope    = "http://www.w3.org/2003/05/soap-envelope"
	nsAddressing  = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
	nsWSMan       = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
	nsTrust       = "http://schemas.xmlsoap.org/ws/2005/02/trust"
	nsSecext      = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
	nsCIMBinding  = "http://schemas.dmtf.org/wbem/wsman/1/cimbinding.xsd"
	nsEnumeration = "http://schemas.xmlsoap.org/ws/2004/09/enumeration"
	nsTransfer    = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
	nsWSMID       = "http://schemas.dmtf.org/wbem/wsman/identity/1/wsmanidentity.xsd"
	nsXSI         = "http://www.w3.org/2001/XMLSchema-instance"
	nsXML         = "http://www.w3.org/XML/1998/namespace"

	anonymous = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"

	actionGet         = nsTransfer + "/Get"
	actionPut         = nsTransfer + "/Put"
	actionCreate      = nsTransfer + "/Create"
	actionDelete      = nsTransfer + "/Delete"
	actionEnumerate   = nsEnumeration + "/Enumerate"
	actionPull        = nsEnumeration + "/Pull"
	actionFault       = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
	amtPrefix         = "http://intel.com/wbem/wscim/1/amt-schema/1/"
	cimPrefix         = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/"
	ipsPrefix         = "http://intel.com/wbem/wscim/1/ips-schema/1/"
	maxRequestBytes   = 1 << 20
	defaultPullMaxEls = 1 << 30
)

// elem is a parsed request element: the simulator walks requests itself
// (no shared code with the client) so that it independently checks them.
type elem struct {
	space, local string
	attrs        []xml.Attr
	text         string
	kids         []*elem
}

func parseXML(b []byte) (*elem, error) {
	dec := xml.NewDecoder(bytes.NewReader(b))
	var stack []*elem
	var root *elem
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			e := &elem{space: t.Name.Space, local: t.Name.Local, attrs: t.Attr}
			if len(stack) == 0 {
				if root != nil {
					return nil, fmt.Errorf("more than one root element")
				}
				root = e
			} else {
				p := stack[len(stack)-1]
				p.kids = append(p.kids, e)
			}
			stack = append(stack, e)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 {
				stack[len(stack)-1].text += string(t)
			}
		}
	}
	if root == nil {
		return nil, fmt.Errorf("no root element")
	}
	return root, nil
}

// child returns the first child with the given namespace and local name.
func (e *elem) child(space, local string) *elem {
	if e == nil {
		return nil
	}
	for _, k := range e.kids {
		if k.local == local && k.space == space {
			return k
		}
	}
	return nil
}

func (e *elem) all(space, local string) []*elem {
	if e == nil {
		return nil
	}
	var out []*elem
	for _, k := range e.kids {
		if k.local == local && k.space == space {
			out = append(out, k)
		}
	}
	return out
}

func (e *elem) trimmed() string {
	if e == nil {
		return ""
	}
	return strings.TrimSpace(e.text)
}

func (e *elem) attr(local string) string {
	for _, a := range e.attrs {
		if a.Name.Local == local {
			return a.Value
		}
	}
	return ""
}

// xnode is a response element; namespaces are URIs, prefixes are given
// at serialization in the order real firmware uses (a..f fixed, then g, h...).
type xnode struct {
	ns, name string
	attrs    []xattr
	text     string
	kids     []*xnode
}

type xattr struct{ ns, name, value string }

func el(ns, name string, kids ...*xnode) *xnode { return &xnode{ns: ns, name: name, kids: kids} }
func tx(ns, name, text string) *xnode           { return &xnode{ns: ns, name: name, text: text} }

// writer assigns prefixes like the firmware: the six standard namespaces
// first, then one letter per further namespace in order of first use.
type writer struct {
	uris     []string
	prefixes map[string]string
}

func newWriter() *writer {
	w := &writer{prefixes: map[string]string{}}
	for _, u := range []string{nsEnvelope, nsAddressing, nsWSMan, nsTrust, nsSecext, nsCIMBinding} {
		w.prefix(u)
	}
	return w
}

func (w *writer) prefix(uri string) string {
	if uri == "" {
		return ""
	}
	if uri == nsXSI {
		return "xsi"
	}
	if uri == nsXML {
		return "xml"
	}
	if p, ok := w.prefixes[uri]; ok {
		return p
	}
	p := string(rune('a' + len(w.uris)))
	w.uris = append(w.uris, uri)
	w.prefixes[uri] = p
	return p
}

// qname gives "prefix:local" for QName-valued text such as fault subcodes.
func (w *writer) qname(uri, local string) string { return w.prefix(uri) + ":" + local }

func (w *writer) collect(n *xnode) {
	w.prefix(n.ns)
	for _, a := range n.attrs {
		if a.ns != "" {
			w.prefix(a.ns)
		}
	}
	for _, k := range n.kids {
		w.collect(k)
	}
}

// envelope serializes header and body children in one document.
func (w *writer) envelope(header, body []*xnode) []byte {
	for _, n := range header {
		w.collect(n)
	}
	for _, n := range body {
		w.collect(n)
	}
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>`)
	b.WriteString(`<a:Envelope`)
	for _, u := range w.uris {
		fmt.Fprintf(&b, ` xmlns:%s="%s"`, w.prefixes[u], u)
	}
	b.WriteString(` xmlns:xsi="` + nsXSI + `">`)
	b.WriteString("<a:Header>")
	for _, n := range header {
		w.write(&b, n)
	}
	b.WriteString("</a:Header><a:Body>")
	for _, n := range body {
		w.write(&b, n)
	}
	b.WriteString("</a:Body></a:Envelope>")
	return b.Bytes()
}

func (w *writer) write(b *bytes.Buffer, n *xnode) {
	name := n.name
	if p := w.prefix(n.ns); p != "" {
		name = p + ":" + n.name
	}
	b.WriteString("<" + name)
	for _, a := range n.attrs {
		an := a.name
		if a.ns != "" {
			an = w.prefix(a.ns) + ":" + a.name
		}
		b.WriteString(" " + an + `="`)
		_ = xml.EscapeText(b, []byte(a.value))
		b.WriteString(`"`)
	}
	b.WriteString(">")
	_ = xml.EscapeText(b, []byte(n.text))
	for _, k := range n.kids {
		w.write(b, k)
	}
	b.WriteString("</" + name + ">")
}
