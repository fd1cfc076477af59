package wsman

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Namespace URIs used by AMT's WS-Man dialect. Elements are matched by local
// name (and where it matters by namespace URI), never by prefix: real replies
// use a:, b:, g:, h: … freely.
const (
	NSEnvelope    = "http://www.w3.org/2003/05/soap-envelope"
	NSAddressing  = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
	NSWSMan       = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
	NSEnumeration = "http://schemas.xmlsoap.org/ws/2004/09/enumeration"
	NSTransfer    = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
	NSIdentity    = "http://schemas.dmtf.org/wbem/wsman/identity/1/wsmanidentity.xsd"
	NSXSI         = "http://www.w3.org/2001/XMLSchema-instance"
	NSXSD         = "http://www.w3.org/2001/XMLSchema"

	// AddressAnonymous is the WS-Addressing anonymous role used in ReplyTo.
	AddressAnonymous = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
)

// Decoder limits: a reply is at most MaxResponseBytes anyway; these bound
// the work on hostile input.
const (
	maxDepth = 64
	maxNodes = 200000
)

// Node is one XML element of a decoded reply. The zero value and a nil *Node
// are both usable: lookups on nil return nil or "".
type Node struct {
	Space    string // namespace URI, resolved
	Local    string // local name
	Attrs    []xml.Attr
	Text     string // character data directly inside this element
	Children []*Node

	buf []byte // text being collected while decoding
}

// Child returns the first child with the given local name, or nil.
func (n *Node) Child(local string) *Node {
	if n == nil {
		return nil
	}
	for _, c := range n.Children {
		if c.Local == local {
			return c
		}
	}
	return nil
}

// Elements returns all child elements (nil-safe).
func (n *Node) Elements() []*Node {
	if n == nil {
		return nil
	}
	return n.Children
}

// ChildrenNamed returns every child with the given local name, in order.
func (n *Node) ChildrenNamed(local string) []*Node {
	if n == nil {
		return nil
	}
	var out []*Node
	for _, c := range n.Children {
		if c.Local == local {
			out = append(out, c)
		}
	}
	return out
}

// Path follows children by local name: n.Path("Body", "PullResponse", "Items").
func (n *Node) Path(locals ...string) *Node {
	for _, l := range locals {
		n = n.Child(l)
	}
	return n
}

// Value is the trimmed text of the element ("" for nil). AMT sometimes
// breaks lines inside values (Action), so surrounding space never counts.
func (n *Node) Value() string {
	if n == nil {
		return ""
	}
	return strings.TrimSpace(n.Text)
}

// Get is the trimmed text of the first child named local ("" if absent).
func (n *Node) Get(local string) string { return n.Child(local).Value() }

// Has reports whether a child named local exists.
func (n *Node) Has(local string) bool { return n.Child(local) != nil }

// Values returns the trimmed texts of every child named local: CIM arrays
// arrive as repeated elements (Handles, SupportedEncryptionAlgorithms).
func (n *Node) Values(local string) []string {
	var out []string
	for _, c := range n.ChildrenNamed(local) {
		out = append(out, c.Value())
	}
	return out
}

// Attr returns the value of the attribute with the given local name.
func (n *Node) Attr(local string) string {
	if n == nil {
		return ""
	}
	for _, a := range n.Attrs {
		if a.Name.Local == local {
			return a.Value
		}
	}
	return ""
}

// Map returns child local name → values for the element's leaf children;
// handy for generic inspection of an instance.
func (n *Node) Map() map[string][]string {
	m := map[string][]string{}
	if n == nil {
		return m
	}
	for _, c := range n.Children {
		m[c.Local] = append(m[c.Local], c.Value())
	}
	return m
}

// Envelope is a decoded SOAP envelope.
type Envelope struct {
	Root   *Node
	Header *Node
	Body   *Node
}

// Action is the trimmed a:Action header.
func (e *Envelope) Action() string { return e.Header.Get("Action") }

// Payload returns the first element inside Body, or nil for an empty body.
func (e *Envelope) Payload() *Node {
	if e == nil || e.Body == nil || len(e.Body.Children) == 0 {
		return nil
	}
	return e.Body.Children[0]
}

// ErrMalformed marks a reply that is not a SOAP envelope we can read.
var ErrMalformed = errors.New("wsman: malformed reply")

// Decode parses a reply body into an Envelope. It never panics; any input
// that is not a SOAP 1.2 envelope yields an error wrapping ErrMalformed.
func Decode(data []byte) (*Envelope, error) {
	root, err := DecodeTree(data)
	if err != nil {
		return nil, err
	}
	if root.Local != "Envelope" || root.Space != NSEnvelope {
		return nil, fmt.Errorf("%w: root element %q in %q, want soap Envelope", ErrMalformed, root.Local, root.Space)
	}
	env := &Envelope{Root: root}
	for _, c := range root.Children {
		if c.Space != NSEnvelope {
			continue
		}
		switch c.Local {
		case "Header":
			if env.Header == nil {
				env.Header = c
			}
		case "Body":
			if env.Body == nil {
				env.Body = c
			}
		}
	}
	if env.Body == nil {
		return nil, fmt.Errorf("%w: no soap Body", ErrMalformed)
	}
	return env, nil
}

// DecodeTree parses any XML document into a Node tree (the root element).
func DecodeTree(data []byte) (*Node, error) {
	d := xml.NewDecoder(bytes.NewReader(data))
	// AMT declares UTF-8; anything else we accept as-is rather than fail,
	// since values we read are ASCII.
	d.CharsetReader = func(_ string, r io.Reader) (io.Reader, error) { return r, nil }
	var (
		stack []*Node
		root  *Node
		count int
	)
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			count++
			if count > maxNodes {
				return nil, fmt.Errorf("%w: more than %d elements", ErrMalformed, maxNodes)
			}
			if len(stack) >= maxDepth {
				return nil, fmt.Errorf("%w: nesting deeper than %d", ErrMalformed, maxDepth)
			}
			n := &Node{Space: t.Name.Space, Local: t.Name.Local}
			for _, a := range t.Attr {
				if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
					continue
				}
				n.Attrs = append(n.Attrs, a)
			}
			if len(stack) == 0 {
				if root != nil {
					return nil, fmt.Errorf("%w: more than one root element", ErrMalformed)
				}
				root = n
			} else {
				p := stack[len(stack)-1]
				p.Children = append(p.Children, n)
			}
			stack = append(stack, n)
		case xml.EndElement:
			if len(stack) == 0 {
				return nil, fmt.Errorf("%w: unbalanced end element", ErrMalformed)
			}
			n := stack[len(stack)-1]
			n.Text, n.buf = string(n.buf), nil
			stack = stack[:len(stack)-1]
		case xml.Directive:
			// A DTD is where entity bombs live; SOAP forbids one
			// (SOAP 1.2 part 1, 5) and AMT never sends one.
			return nil, fmt.Errorf("%w: document type declaration refused (no DTDs or entity expansion in SOAP)", ErrMalformed)
		case xml.CharData:
			if len(stack) > 0 {
				n := stack[len(stack)-1]
				n.buf = append(n.buf, t...)
			} else if len(bytes.TrimSpace(t)) > 0 {
				return nil, fmt.Errorf("%w: text outside the root element", ErrMalformed)
			}
		}
	}
	if root == nil {
		return nil, fmt.Errorf("%w: empty document", ErrMalformed)
	}
	if len(stack) != 0 {
		return nil, fmt.Errorf("%w: unterminated element %q", ErrMalformed, stack[len(stack)-1].Local)
	}
	return root, nil
}
