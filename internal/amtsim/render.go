package amtsim

import (
	"fmt"
	"strconv"
)

// prop is one property of a CIM instance or method output, rendered in
// the class namespace; vals repeat the element (arrays), ref makes it an
// endpoint reference.
type prop struct {
	name string
	vals []string
	ref  *epr
}

type epr struct {
	uri string
	sel []selector
}

type selector struct {
	name, value string
	ref         *epr // nested EPR as in ResourceCreated of an association
}

type instance []prop

func (in instance) get(name string) (string, bool) {
	for _, p := range in {
		if p.name == name && len(p.vals) > 0 {
			return p.vals[0], true
		}
	}
	return "", false
}

func ps(name, v string) prop { return prop{name: name, vals: []string{v}} }
func pb(name string, v bool) prop {
	return prop{name: name, vals: []string{strconv.FormatBool(v)}}
}
func pi(name string, v int) prop { return prop{name: name, vals: []string{strconv.Itoa(v)}} }
func pints(name string, v []int) prop {
	p := prop{name: name}
	for _, x := range v {
		p.vals = append(p.vals, strconv.Itoa(x))
	}
	return p
}
func pref(name string, r *epr) prop { return prop{name: name, ref: r} }

func (p prop) nodes(ns string) []*xnode {
	if p.ref != nil {
		n := el(ns, p.name)
		n.kids = eprKids(p.ref)
		return []*xnode{n}
	}
	out := make([]*xnode, 0, len(p.vals))
	for _, v := range p.vals {
		out = append(out, tx(ns, p.name, v))
	}
	return out
}

func eprKids(r *epr) []*xnode {
	set := el(nsWSMan, "SelectorSet")
	for _, s := range r.sel {
		n := &xnode{ns: nsWSMan, name: "Selector", attrs: []xattr{{name: "Name", value: s.name}}}
		if s.ref != nil {
			n.kids = []*xnode{el(nsAddressing, "EndpointReference", eprKids(s.ref)...)}
		} else {
			n.text = s.value
		}
		set.kids = append(set.kids, n)
	}
	return []*xnode{
		tx(nsAddressing, "Address", anonymous),
		el(nsAddressing, "ReferenceParameters", tx(nsWSMan, "ResourceURI", r.uri), set),
	}
}

func instanceNode(c *class, in instance) *xnode {
	n := el(c.uri, c.name)
	for _, p := range in {
		n.kids = append(n.kids, p.nodes(c.uri)...)
	}
	return n
}

// fault is a SOAP fault answered with HTTP 400.
type fault struct {
	codeNS, code string // Subcode QName
	reason       string
	detail       string
}

func (f *fault) Error() string { return fmt.Sprintf("%s: %s", f.code, f.reason) }

func faultf(ns, code, format string, args ...any) *fault {
	return &fault{codeNS: ns, code: code, reason: fmt.Sprintf(format, args...)}
}

const faultDetailBase = "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/"

func errDestination(uri string) *fault {
	f := faultf(nsAddressing, "DestinationUnreachable", "No route can be determined to reach the destination role defined by the WS-Addressing To (resource %q).", uri)
	f.detail = faultDetailBase + "InvalidResourceURI"
	return f
}

func errAction(action string) *fault {
	return faultf(nsAddressing, "ActionNotSupported", "The action %q is not supported by the service.", action)
}

func errSelectors(format string, args ...any) *fault {
	return faultf(nsWSMan, "InvalidSelectors", "The Selectors for the resource were not valid: "+format, args...)
}

func errParam(format string, args ...any) *fault {
	return faultf(nsWSMan, "InvalidParameter", "An operation parameter was not valid: "+format, args...)
}

func errRepresentation(format string, args ...any) *fault {
	return faultf(nsTransfer, "InvalidRepresentation", "The XML content was invalid: "+format, args...)
}

func errSchema(format string, args ...any) *fault {
	return faultf(nsWSMan, "SchemaValidationError", "The supplied SOAP violates the corresponding XML Schema definition: "+format, args...)
}
