package amt

import (
	"context"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"github.com/amtops/amtops/internal/wsman"
)

// Resource URIs of the classes this package uses.
const (
	URIGeneralSettings       = wsman.AMTSchema + "AMT_GeneralSettings"
	URISetupAndConfiguration = wsman.AMTSchema + "AMT_SetupAndConfigurationService"
	URISoftwareIdentity      = wsman.CIMSchema + "CIM_SoftwareIdentity"
	URIPublicKeyManagement   = wsman.AMTSchema + "AMT_PublicKeyManagementService"
	URIPublicKeyCertificate  = wsman.AMTSchema + "AMT_PublicKeyCertificate"
	URIPublicPrivateKeyPair  = wsman.AMTSchema + "AMT_PublicPrivateKeyPair"
	URITLSCredentialContext  = wsman.AMTSchema + "AMT_TLSCredentialContext"
	URITLSProtocolEndpoints  = wsman.AMTSchema + "AMT_TLSProtocolEndpointCollection"
	URITLSSettingData        = wsman.AMTSchema + "AMT_TLSSettingData"
	URITimeSynchronization   = wsman.AMTSchema + "AMT_TimeSynchronizationService"
	URIRedirectionService    = wsman.AMTSchema + "AMT_RedirectionService"
	URIKVMRedirectionSAP     = wsman.CIMSchema + "CIM_KVMRedirectionSAP"
	URIWebUIService          = wsman.AMTSchema + "AMT_WebUIService"
	URISystemPowerScheme     = wsman.AMTSchema + "AMT_SystemPowerScheme"
	URIAuthorizationService  = wsman.AMTSchema + "AMT_AuthorizationService"
	URIKerberosSettingData   = wsman.AMTSchema + "AMT_KerberosSettingData"
	URIIEEE8021xSettings     = wsman.IPSSchema + "IPS_IEEE8021xSettings"
	URICIMIEEE8021xSettings  = wsman.CIMSchema + "CIM_IEEE8021xSettings"
	URIWiFiPortConfiguration = wsman.AMTSchema + "AMT_WiFiPortConfigurationService"
	URIWiFiEndpointSettings  = wsman.CIMSchema + "CIM_WiFiEndpointSettings"
	URIWiFiEndpoint          = wsman.CIMSchema + "CIM_WiFiEndpoint"
	URIWiFiPort              = wsman.CIMSchema + "CIM_WiFiPort"
	URIHostBasedSetup        = wsman.IPSSchema + "IPS_HostBasedSetupService"
)

// Client performs typed AMT operations on one device.
type Client struct {
	ws *wsman.Client
}

// New wraps a wsman client (which already knows address, port, TLS and
// credentials) for typed use.
func New(ws *wsman.Client) *Client { return &Client{ws: ws} }

// WSMan returns the underlying client, for calls this package lacks.
func (c *Client) WSMan() *wsman.Client { return c.ws }

// fields reads typed properties from one instance element, remembering the
// first malformed value so callers check one error at the end.
type fields struct {
	n     *wsman.Node
	class string
	err   error
}

func read(n *wsman.Node, class string) *fields { return &fields{n: n, class: class} }

func (f *fields) fail(name, v, want string) {
	if f.err == nil {
		f.err = fmt.Errorf("amt: %s.%s: %q is not %s", f.class, name, v, want)
	}
}

func (f *fields) str(name string) string { return f.n.Get(name) }

func (f *fields) strs(name string) []string { return f.n.Values(name) }

func (f *fields) int(name string) int {
	v := f.n.Get(name)
	if v == "" {
		return 0
	}
	i, err := strconv.Atoi(v)
	if err != nil {
		f.fail(name, v, "an integer")
	}
	return i
}

func (f *fields) int64(name string) int64 {
	v := f.n.Get(name)
	if v == "" {
		return 0
	}
	i, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		f.fail(name, v, "an integer")
	}
	return i
}

func (f *fields) ints(name string) []int {
	var out []int
	for _, v := range f.n.Values(name) {
		i, err := strconv.Atoi(v)
		if err != nil {
			f.fail(name, v, "an integer")
			continue
		}
		out = append(out, i)
	}
	return out
}

// bool accepts CIM's true/false and the 0/1 some AMT versions send.
func (f *fields) bool(name string) bool {
	switch strings.ToLower(f.n.Get(name)) {
	case "true", "1":
		return true
	case "false", "0", "":
		return false
	default:
		f.fail(name, f.n.Get(name), "a boolean")
		return false
	}
}

func (f *fields) b64(name string) []byte {
	v := f.n.Get(name)
	if v == "" {
		return nil
	}
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		f.fail(name, v, "base64")
	}
	return b
}

func fmtBool(b bool) string { return strconv.FormatBool(b) }

func field(name, value string) wsman.Field { return wsman.Field{Name: name, Value: value} }

func intField(name string, v int) wsman.Field { return field(name, strconv.Itoa(v)) }

func ref(name, resourceURI, selName, selValue string) wsman.Field {
	return wsman.Field{Name: name, Ref: &wsman.EPR{
		ResourceURI: resourceURI,
		Selectors:   []wsman.Selector{{Name: selName, Value: selValue}},
	}}
}

func sel(name, value string) []wsman.Selector { return []wsman.Selector{{Name: name, Value: value}} }

// invoke calls a method and wraps errors with the operation.
func (c *Client) invoke(ctx context.Context, op, uri, method string, sels []wsman.Selector, in ...wsman.Field) (*wsman.Node, error) {
	out, err := c.ws.Invoke(ctx, uri, method, sels, in)
	if err != nil {
		return out, fmt.Errorf("amt: %s: %w", op, err)
	}
	return out, nil
}

// invokeRead calls a method that only reads; transient failures are retried.
func (c *Client) invokeRead(ctx context.Context, op, uri, method string, sels []wsman.Selector, in ...wsman.Field) (*wsman.Node, error) {
	out, err := c.ws.InvokeRead(ctx, uri, method, sels, in)
	if err != nil {
		return out, fmt.Errorf("amt: %s: %w", op, err)
	}
	return out, nil
}

// createdRef returns the InstanceID selector of a reference returned by a
// method (CreatedCertificate, CreatedKey, KeyPair).
func createdRef(op string, out *wsman.Node, name string) (string, error) {
	e := wsman.ParseEPR(out.Child(name))
	id := e.Selector("InstanceID")
	if id == "" {
		return "", fmt.Errorf("amt: %s: %w: no %s reference in reply", op, wsman.ErrMalformed, name)
	}
	return id, nil
}

func (c *Client) enumerate(ctx context.Context, op, uri string) ([]*wsman.Node, error) {
	items, err := c.ws.Enumerate(ctx, uri)
	if err != nil {
		return nil, fmt.Errorf("amt: %s: %w", op, err)
	}
	return items, nil
}

func (c *Client) get(ctx context.Context, op, uri string, sels ...wsman.Selector) (*wsman.Node, error) {
	n, err := c.ws.Get(ctx, uri, sels...)
	if err != nil {
		return nil, fmt.Errorf("amt: %s: %w", op, err)
	}
	return n, nil
}

func (c *Client) put(ctx context.Context, op string, in wsman.Instance, sels ...wsman.Selector) (*wsman.Node, error) {
	n, err := c.ws.Put(ctx, in, sels...)
	if err != nil {
		return nil, fmt.Errorf("amt: %s: %w", op, err)
	}
	return n, nil
}

// requestStateChange is CIM's RequestStateChange(RequestedState).
func (c *Client) requestStateChange(ctx context.Context, op, uri string, state int) error {
	_, err := c.invoke(ctx, op, uri, "RequestStateChange", nil, intField("RequestedState", state))
	return err
}
