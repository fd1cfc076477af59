package amt

import (
	"context"
	"fmt"

	"github.com/amtops/amtops/internal/wsman"
)

// InstanceIDs of AMT_TLSSettingData.
const (
	TLSSettingsRemote = "Intel(r) AMT 802.3 TLS Settings"
	TLSSettingsLocal  = "Intel(r) AMT LMS TLS Settings"
)

const tlsEndpointCollection = "TLSProtocolEndpoint Instances Collection"

// TLSCredentialContexts returns the InstanceIDs of certificates bound to
// the TLS listener (normally zero or one).
func (c *Client) TLSCredentialContexts(ctx context.Context) ([]string, error) {
	items, err := c.enumerate(ctx, "enumerate tls credential context", URITLSCredentialContext)
	if err != nil {
		return nil, err
	}
	return parseTLSCredentialContexts(items), nil
}

func parseTLSCredentialContexts(items []*wsman.Node) []string {
	var ids []string
	for _, it := range items {
		if id := wsman.ParseEPR(it.Child("ElementInContext")).Selector("InstanceID"); id != "" {
			ids = append(ids, id)
		}
	}
	return ids
}

func tlsCredentialContext(certID string) wsman.Instance {
	return wsman.Instance{ResourceURI: URITLSCredentialContext, Class: "AMT_TLSCredentialContext", Fields: []wsman.Field{
		ref("ElementInContext", URIPublicKeyCertificate, "InstanceID", certID),
		ref("ElementProvidingContext", URITLSProtocolEndpoints, "ElementName", tlsEndpointCollection),
	}}
}

// BindTLSCertificate makes certID the TLS server certificate: Create the
// AMT_TLSCredentialContext, or Put it when one exists already (S7).
func (c *Client) BindTLSCertificate(ctx context.Context, certID string) error {
	existing, err := c.TLSCredentialContexts(ctx)
	if err != nil {
		return err
	}
	in := tlsCredentialContext(certID)
	if len(existing) > 0 {
		if _, err := c.put(ctx, "put tls credential context", in); err != nil {
			return err
		}
		return nil
	}
	if _, err := c.ws.Create(ctx, in); err != nil {
		return fmt.Errorf("amt: create tls credential context: %w", err)
	}
	return nil
}

// TLSSettingData is one AMT_TLSSettingData instance.
type TLSSettingData struct {
	InstanceID                 string
	Enabled                    bool
	MutualAuthentication       bool
	AcceptNonSecureConnections bool
	// NonSecureConnectionsSupported is read-only, present from CSME 16.1
	// (nil before): there the remote instance refuses
	// AcceptNonSecureConnections=true and Enabled=false (16).
	NonSecureConnectionsSupported *bool

	raw wsman.Instance
}

func parseTLSSettingData(n *wsman.Node) (*TLSSettingData, error) {
	f := read(n, "AMT_TLSSettingData")
	s := &TLSSettingData{
		InstanceID:                 f.str("InstanceID"),
		Enabled:                    f.bool("Enabled"),
		MutualAuthentication:       f.bool("MutualAuthentication"),
		AcceptNonSecureConnections: f.bool("AcceptNonSecureConnections"),
		raw:                        wsman.InstanceFromNode(URITLSSettingData, n),
	}
	if n.Has("NonSecureConnectionsSupported") {
		v := f.bool("NonSecureConnectionsSupported")
		s.NonSecureConnectionsSupported = &v
	}
	return s, f.err
}

// TLSSettings lists the TLS setting instances (remote 802.3 and local LMS).
func (c *Client) TLSSettings(ctx context.Context) ([]*TLSSettingData, error) {
	items, err := c.enumerate(ctx, "enumerate tls settings", URITLSSettingData)
	if err != nil {
		return nil, err
	}
	var out []*TLSSettingData
	for _, it := range items {
		s, err := parseTLSSettingData(it)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// SetTLS reads the TLS setting instance instanceID, changes the three flags
// and puts the whole instance back, without the read-only
// NonSecureConnectionsSupported, which the firmware refuses in a Put, and,
// turning mutual authentication on, without TrustedCN. It takes effect
// after CommitChanges.
func (c *Client) SetTLS(ctx context.Context, instanceID string, enabled, mutualAuth, acceptNonSecure bool) error {
	n, err := c.get(ctx, "get tls settings", URITLSSettingData, sel("InstanceID", instanceID)...)
	if err != nil {
		return err
	}
	s, err := parseTLSSettingData(n)
	if err != nil {
		return err
	}
	in := s.raw
	in.Remove("NonSecureConnectionsSupported")
	in.Set("Enabled", fmtBool(enabled))
	in.Set("MutualAuthentication", fmtBool(mutualAuth))
	in.Set("AcceptNonSecureConnections", fmtBool(acceptNonSecure))
	if mutualAuth {
		// Clients are told apart by their chain (the trusted roots), not
		// their CN: a TrustedCN list set elsewhere would refuse ours, and
		// it applies without a commit. A Put without it clears it.
		in.Remove("TrustedCN")
	}
	_, err = c.put(ctx, "put tls settings", in, sel("InstanceID", instanceID)...)
	return err
}
