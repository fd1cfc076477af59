package wsman

import (
	"bytes"
	"encoding/xml"
	"slices"
	"sort"
	"strconv"
)

// WS-Transfer and WS-Enumeration actions.
const (
	ActionGet       = NSTransfer + "/Get"
	ActionPut       = NSTransfer + "/Put"
	ActionCreate    = NSTransfer + "/Create"
	ActionDelete    = NSTransfer + "/Delete"
	ActionEnumerate = NSEnumeration + "/Enumerate"
	ActionPull      = NSEnumeration + "/Pull"
	ActionFault     = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
)

// Resource URI prefixes of the three schemas AMT serves.
const (
	AMTSchema = "http://intel.com/wbem/wscim/1/amt-schema/1/"
	CIMSchema = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/"
	IPSSchema = "http://intel.com/wbem/wscim/1/ips-schema/1/"
)

// Selector names one key property of the addressed instance. A selector's
// value is either text or, for association keys, an endpoint reference.
type Selector struct {
	Name  string
	Value string
	EPR   *EPR
}

// EPR is a WS-Addressing endpoint reference to an instance, as AMT returns
// it from Create and from methods such as AddCertificate.
type EPR struct {
	Address     string
	ResourceURI string
	Selectors   []Selector
}

// Selector returns the text value of the selector with the given name.
func (e *EPR) Selector(name string) string {
	if e == nil {
		return ""
	}
	for _, s := range e.Selectors {
		if s.Name == name {
			return s.Value
		}
	}
	return ""
}

// Field is one property of an instance or one method input parameter, in
// wire order. Exactly one of Value, Ref or Embedded is used; repeat a Field
// with the same Name for array values.
type Field struct {
	Name     string
	Value    string
	Ref      *EPR      // an endpoint reference (association or method EPR parameter)
	Embedded *Instance // an embedded instance: the element in the parent's namespace, its properties in the instance's
}

// Instance is a CIM instance as sent in Put/Create bodies: the class element
// in the namespace of its resource URI with its properties in order.
type Instance struct {
	ResourceURI string
	Class       string
	Fields      []Field
}

// Get returns the first value of the named field.
func (in *Instance) Get(name string) string {
	for _, f := range in.Fields {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

// Set replaces the value of the named field, or appends it when absent.
// Every earlier occurrence beyond the first is removed so arrays collapse to one.
func (in *Instance) Set(name, value string) {
	in.SetAll(name, value)
}

// SetAll replaces every occurrence of the named field with the given values,
// keeping the field's original position (or appending when absent).
func (in *Instance) SetAll(name string, values ...string) {
	out := make([]Field, 0, len(in.Fields)+len(values))
	placed := false
	for _, f := range in.Fields {
		if f.Name != name {
			out = append(out, f)
			continue
		}
		if !placed {
			for _, v := range values {
				out = append(out, Field{Name: name, Value: v})
			}
			placed = true
		}
	}
	if !placed {
		for _, v := range values {
			out = append(out, Field{Name: name, Value: v})
		}
	}
	in.Fields = out
}

// Remove drops every occurrence of the named fields: read-only properties
// a Get returned that a Put must not send back.
func (in *Instance) Remove(names ...string) {
	out := in.Fields[:0:0]
	for _, f := range in.Fields {
		if !slices.Contains(names, f.Name) {
			out = append(out, f)
		}
	}
	in.Fields = out
}

// SortFields orders properties by name (byte order, stable for arrays), the
// order AMT itself uses in every instance it returns; its schemas are
// sequences, so properties added to an instance must not land at the end.
func (in *Instance) SortFields() {
	sort.SliceStable(in.Fields, func(i, j int) bool { return in.Fields[i].Name < in.Fields[j].Name })
}

// InstanceFromNode turns a decoded instance element into an Instance that can
// be modified and Put back whole, as AMT requires. Children that are endpoint
// references become Ref fields; other structured children are skipped.
func InstanceFromNode(resourceURI string, n *Node) Instance {
	in := Instance{ResourceURI: resourceURI}
	if n == nil {
		return in
	}
	in.Class = n.Local
	for _, c := range n.Children {
		if len(c.Children) == 0 {
			in.Fields = append(in.Fields, Field{Name: c.Local, Value: c.Value()})
			continue
		}
		if c.Has("ReferenceParameters") {
			in.Fields = append(in.Fields, Field{Name: c.Local, Ref: ParseEPR(c)})
		}
	}
	return in
}

// ParseEPR reads an endpoint reference (Address + ReferenceParameters) from
// n, which may be the EPR element itself or a parent holding EndpointReference.
func ParseEPR(n *Node) *EPR {
	if n == nil {
		return nil
	}
	if n.Child("ReferenceParameters") == nil && n.Child("EndpointReference") != nil {
		n = n.Child("EndpointReference")
	}
	rp := n.Child("ReferenceParameters")
	if rp == nil {
		return nil
	}
	e := &EPR{Address: n.Get("Address"), ResourceURI: rp.Get("ResourceURI")}
	for _, s := range rp.Child("SelectorSet").ChildrenNamed("Selector") {
		sel := Selector{Name: s.Attr("Name")}
		if inner := s.Child("EndpointReference"); inner != nil {
			sel.EPR = ParseEPR(inner)
		} else {
			sel.Value = s.Value()
		}
		e.Selectors = append(e.Selectors, sel)
	}
	return e
}

// Request is one WS-Man call before it is wrapped in an envelope.
type Request struct {
	Action      string
	ResourceURI string
	Selectors   []Selector
	Body        []byte // inner XML of soap Body; may be empty
}

// Envelope renders r exactly as AMT expects it: namespaces, then header in
// the order Action, To, ResourceURI, MessageID, ReplyTo, OperationTimeout,
// SelectorSet. The output is deterministic for a given messageID, which the
// golden tests rely on.
func (r Request) Envelope(messageID uint64) []byte {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="utf-8"?>`)
	b.WriteString(`<Envelope xmlns:xsi="` + NSXSI + `" xmlns:xsd="` + NSXSD + `" xmlns:a="` + NSAddressing + `" xmlns:w="` + NSWSMan + `" xmlns="` + NSEnvelope + `">`)
	b.WriteString(`<Header><a:Action>`)
	escape(&b, r.Action)
	b.WriteString(`</a:Action><a:To>/wsman</a:To><w:ResourceURI>`)
	escape(&b, r.ResourceURI)
	b.WriteString(`</w:ResourceURI><a:MessageID>`)
	b.WriteString(strconv.FormatUint(messageID, 10))
	b.WriteString(`</a:MessageID><a:ReplyTo><a:Address>` + AddressAnonymous + `</a:Address></a:ReplyTo><w:OperationTimeout>PT60S</w:OperationTimeout>`)
	writeSelectorSet(&b, r.Selectors)
	b.WriteString(`</Header><Body>`)
	b.Write(r.Body)
	b.WriteString(`</Body></Envelope>`)
	return b.Bytes()
}

func writeSelectorSet(b *bytes.Buffer, sels []Selector) {
	if len(sels) == 0 {
		return
	}
	b.WriteString(`<w:SelectorSet>`)
	for _, s := range sels {
		b.WriteString(`<w:Selector Name="`)
		escape(b, s.Name)
		b.WriteString(`">`)
		if s.EPR != nil {
			b.WriteString(`<a:EndpointReference>`)
			writeEPRInner(b, s.EPR)
			b.WriteString(`</a:EndpointReference>`)
		} else {
			escape(b, s.Value)
		}
		b.WriteString(`</w:Selector>`)
	}
	b.WriteString(`</w:SelectorSet>`)
}

func writeEPRInner(b *bytes.Buffer, e *EPR) {
	addr := e.Address
	if addr == "" {
		addr = "/wsman"
	}
	b.WriteString(`<a:Address>`)
	escape(b, addr)
	b.WriteString(`</a:Address><a:ReferenceParameters><w:ResourceURI>`)
	escape(b, e.ResourceURI)
	b.WriteString(`</w:ResourceURI>`)
	writeSelectorSet(b, e.Selectors)
	b.WriteString(`</a:ReferenceParameters>`)
}

// Body renders the instance as a Put/Create body:
// <h:Class xmlns:h="resourceURI"><h:Prop>v</h:Prop>…</h:Class>.
func (in Instance) Body() []byte {
	var b bytes.Buffer
	writeElement(&b, "h", in.ResourceURI, in.Class, in.Fields, 0)
	return b.Bytes()
}

// MethodInput renders <h:Method_INPUT xmlns:h="resourceURI">fields</h:Method_INPUT>.
func MethodInput(resourceURI, method string, fields []Field) []byte {
	var b bytes.Buffer
	writeElement(&b, "h", resourceURI, method+"_INPUT", fields, 0)
	return b.Bytes()
}

// prefixes for nested embedded instances; depth is bounded by the caller's
// data, in practice one level (AddWiFiSettings).
var nestedPrefixes = [...]string{"h", "q", "r", "s", "t"}

func writeElement(b *bytes.Buffer, prefix, ns, name string, fields []Field, depth int) {
	b.WriteString(`<` + prefix + `:` + name + ` xmlns:` + prefix + `="`)
	escape(b, ns)
	b.WriteString(`">`)
	writeFields(b, prefix, fields, depth)
	b.WriteString(`</` + prefix + `:` + name + `>`)
}

func writeFields(b *bytes.Buffer, prefix string, fields []Field, depth int) {
	for _, f := range fields {
		switch {
		case f.Embedded != nil:
			// The parameter element is the method's; only the embedded
			// instance's properties are in its class's namespace, as AMT
			// and Intel's own client have it:
			// <h:WiFiEndpointSettingsInput xmlns:q="…CIM_WiFiEndpointSettings"><q:SSID>…
			p := nestedPrefixes[(depth+1)%len(nestedPrefixes)]
			b.WriteString(`<` + prefix + `:` + f.Name + ` xmlns:` + p + `="`)
			escape(b, f.Embedded.ResourceURI)
			b.WriteString(`">`)
			writeFields(b, p, f.Embedded.Fields, depth+1)
			b.WriteString(`</` + prefix + `:` + f.Name + `>`)
		case f.Ref != nil:
			b.WriteString(`<` + prefix + `:` + f.Name + `>`)
			writeEPRInner(b, f.Ref)
			b.WriteString(`</` + prefix + `:` + f.Name + `>`)
		default:
			b.WriteString(`<` + prefix + `:` + f.Name + `>`)
			escape(b, f.Value)
			b.WriteString(`</` + prefix + `:` + f.Name + `>`)
		}
	}
}

func escape(b *bytes.Buffer, s string) {
	// xml.EscapeText never fails on a bytes.Buffer.
	_ = xml.EscapeText(b, []byte(s))
}

// identifyEnvelope is the unauthenticated WS-Man Identify request (DSP0226 §11).
const identifyEnvelope = `<?xml version="1.0" encoding="utf-8"?>` +
	`<s:Envelope xmlns:s="` + NSEnvelope + `" xmlns:wsmid="` + NSIdentity + `">` +
	`<s:Header/><s:Body><wsmid:Identify/></s:Body></s:Envelope>`

func enumerateBody() []byte {
	return []byte(`<Enumerate xmlns="` + NSEnumeration + `" />`)
}

func pullBody(context string) []byte {
	var b bytes.Buffer
	b.WriteString(`<Pull xmlns="` + NSEnumeration + `"><EnumerationContext>`)
	escape(&b, context)
	b.WriteString(`</EnumerationContext><MaxElements>999</MaxElements><MaxCharacters>99999</MaxCharacters></Pull>`)
	return b.Bytes()
}
