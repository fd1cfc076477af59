package amt

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/amtops/amtops/internal/wsman"
)

// 802.1X values.
const (
	EAPTLS = 0 // AuthenticationProtocol

	IEEE8021xEnabled  = 2 // IPS_IEEE8021xSettings.Enabled
	IEEE8021xDisabled = 3
)

// IEEE8021xSettings is IPS_IEEE8021xSettings, the wired 802.1X profile.
type IEEE8021xSettings struct {
	InstanceID             string
	Enabled                int
	AuthenticationProtocol int
	Username               string // identity presented in EAP-TLS
	Domain                 string
	ServerCertificateName  string
	AvailableInS0          bool
	PxeTimeout             int

	raw wsman.Instance
}

func parseIEEE8021xSettings(n *wsman.Node) (*IEEE8021xSettings, error) {
	f := read(n, "IPS_IEEE8021xSettings")
	s := &IEEE8021xSettings{
		InstanceID:             f.str("InstanceID"),
		Enabled:                f.int("Enabled"),
		AuthenticationProtocol: f.int("AuthenticationProtocol"),
		Username:               f.str("Username"),
		Domain:                 f.str("Domain"),
		ServerCertificateName:  f.str("ServerCertificateName"),
		AvailableInS0:          f.bool("AvailableInS0"),
		PxeTimeout:             f.int("PxeTimeout"),
		raw:                    wsman.InstanceFromNode(URIIEEE8021xSettings, n),
	}
	return s, f.err
}

// IEEE8021xSettings reads the wired 802.1X profile.
func (c *Client) IEEE8021xSettings(ctx context.Context) (*IEEE8021xSettings, error) {
	n, err := c.get(ctx, "get 802.1x settings", URIIEEE8021xSettings)
	if err != nil {
		return nil, err
	}
	return parseIEEE8021xSettings(n)
}

// PutIEEE8021xSettings writes s (read, then modified) back whole.
func (c *Client) PutIEEE8021xSettings(ctx context.Context, s *IEEE8021xSettings) error {
	if s == nil || s.raw.Class == "" {
		return errors.New("amt: put 802.1x settings: settings were not read from the device")
	}
	if s.Enabled != IEEE8021xEnabled && s.Enabled != IEEE8021xDisabled && s.Enabled != 6 {
		return fmt.Errorf("amt: put 802.1x settings: Enabled %d is not 2, 3 or 6", s.Enabled)
	}
	in := s.raw
	in.Fields = append([]wsman.Field(nil), s.raw.Fields...)
	in.Set("Enabled", strconv.Itoa(s.Enabled))
	in.Set("AuthenticationProtocol", strconv.Itoa(s.AuthenticationProtocol))
	setIf(&in, "Username", s.Username)
	setIf(&in, "Domain", s.Domain)
	setIf(&in, "ServerCertificateName", s.ServerCertificateName)
	in.Set("AvailableInS0", fmtBool(s.AvailableInS0))
	if s.PxeTimeout > 0 {
		in.Set("PxeTimeout", strconv.Itoa(s.PxeTimeout))
	}
	in.SortFields()
	_, err := c.put(ctx, "put 802.1x settings", in, sel("InstanceID", s.InstanceID)...)
	return err
}

func setIf(in *wsman.Instance, name, v string) {
	if v != "" || in.Get(name) != "" {
		in.Set(name, v)
	}
}

// SetIEEE8021xCertificates binds the RADIUS server's trusted root and our
// client certificate (both InstanceIDs in the certificate store).
func (c *Client) SetIEEE8021xCertificates(ctx context.Context, serverRootID, clientCertID string) error {
	_, err := c.invoke(ctx, "set 802.1x certificates", URIIEEE8021xSettings, "SetCertificates", nil,
		ref("ServerCertificateIssuer", URIPublicKeyCertificate, "InstanceID", serverRootID),
		ref("ClientCertificate", URIPublicKeyCertificate, "InstanceID", clientCertID))
	return err
}

// WiFiEndpointSettings is a CIM_WiFiEndpointSettings wireless profile.
type WiFiEndpointSettings struct {
	InstanceID           string
	ElementName          string // profile name
	SSID                 string
	Priority             int
	AuthenticationMethod int // 4 WPA PSK, 5 WPA 802.1x, 6 WPA2 PSK, 7 WPA2 802.1x
	EncryptionMethod     int // 3 TKIP, 4 CCMP
	BSSType              int
	PSKPassPhrase        string // write-only; PSK profiles only
}

// Wi-Fi authentication methods needing 802.1X (EAP) settings.
const (
	WiFiAuthWPA8021x  = 5
	WiFiAuthWPA28021x = 7
)

// WiFiProfiles lists the wireless profiles.
func (c *Client) WiFiProfiles(ctx context.Context) ([]WiFiEndpointSettings, error) {
	items, err := c.enumerate(ctx, "enumerate wifi profiles", URIWiFiEndpointSettings)
	if err != nil {
		return nil, err
	}
	var out []WiFiEndpointSettings
	for _, it := range items {
		f := read(it, "CIM_WiFiEndpointSettings")
		w := WiFiEndpointSettings{
			InstanceID: f.str("InstanceID"), ElementName: f.str("ElementName"), SSID: f.str("SSID"),
			Priority: f.int("Priority"), AuthenticationMethod: f.int("AuthenticationMethod"),
			EncryptionMethod: f.int("EncryptionMethod"), BSSType: f.int("BSSType"),
		}
		if f.err != nil {
			return nil, f.err
		}
		out = append(out, w)
	}
	return out, nil
}

// DeleteWiFiProfile removes a wireless profile by InstanceID.
func (c *Client) DeleteWiFiProfile(ctx context.Context, instanceID string) error {
	if err := c.ws.Delete(ctx, URIWiFiEndpointSettings, sel("InstanceID", instanceID)...); err != nil {
		return fmt.Errorf("amt: delete wifi profile %q: %w", instanceID, err)
	}
	return nil
}

// WiFiEAP is the 802.1X part of an enterprise wireless profile (EAP-TLS).
type WiFiEAP struct {
	Username     string
	ClientCertID string // InstanceID of our client certificate on the device
	RootCertID   string // InstanceID of the RADIUS server's trusted root
}

// AddWiFiProfile adds a wireless profile (S3/S7) through
// AMT_WiFiPortConfigurationService.AddWiFiSettings. eap is required for the
// 802.1X authentication methods and must be nil otherwise.
func (c *Client) AddWiFiProfile(ctx context.Context, w WiFiEndpointSettings, eap *WiFiEAP) error {
	if w.ElementName == "" || w.SSID == "" {
		return errors.New("amt: add wifi profile: ElementName and SSID are required")
	}
	if len(w.SSID) > 32 {
		return fmt.Errorf("amt: add wifi profile: SSID is %d bytes, max 32", len(w.SSID))
	}
	needEAP := w.AuthenticationMethod == WiFiAuthWPA8021x || w.AuthenticationMethod == WiFiAuthWPA28021x
	if needEAP != (eap != nil) {
		return fmt.Errorf("amt: add wifi profile: AuthenticationMethod %d and 802.1X settings do not match", w.AuthenticationMethod)
	}
	id := w.InstanceID
	if id == "" {
		id = "Intel(r) AMT:WiFi Endpoint Settings " + w.ElementName
	}
	settings := &wsman.Instance{ResourceURI: URIWiFiEndpointSettings, Fields: []wsman.Field{
		field("ElementName", w.ElementName),
		field("InstanceID", id),
		intField("AuthenticationMethod", w.AuthenticationMethod),
		intField("EncryptionMethod", w.EncryptionMethod),
		field("SSID", w.SSID),
		intField("Priority", w.Priority),
	}}
	if w.PSKPassPhrase != "" {
		settings.Fields = append(settings.Fields, field("PSKPassPhrase", w.PSKPassPhrase))
	}
	in := []wsman.Field{
		ref("WiFiEndpoint", URIWiFiEndpoint, "Name", "WiFi Endpoint 0"),
		{Name: "WiFiEndpointSettingsInput", Embedded: settings},
	}
	if eap != nil {
		in = append(in,
			wsman.Field{Name: "IEEE8021xSettingsInput", Embedded: &wsman.Instance{ResourceURI: URICIMIEEE8021xSettings, Fields: []wsman.Field{
				field("ElementName", w.ElementName),
				field("InstanceID", id),
				intField("AuthenticationProtocol", EAPTLS),
				field("Username", eap.Username),
			}}},
			ref("ClientCredential", URIPublicKeyCertificate, "InstanceID", eap.ClientCertID),
			ref("CACredential", URIPublicKeyCertificate, "InstanceID", eap.RootCertID),
		)
	}
	_, err := c.invoke(ctx, "add wifi settings", URIWiFiPortConfiguration, "AddWiFiSettings", nil, in...)
	return err
}

// CIM_WiFiPort states: off is the factory default; WiFiPortOnWithSync
// turns the radio on with local profile synchronisation.
const (
	WiFiPortOff         = 3
	WiFiPortOnWithSync  = 32769
	wifiPortEnabledIdle = 2
)

// WiFiPortState reads CIM_WiFiPort's EnabledState (3 off, 32769 on with
// local profile sync, 2 on).
func (c *Client) WiFiPortState(ctx context.Context) (int, error) {
	n, err := c.get(ctx, "get wifi port", URIWiFiPort)
	if err != nil {
		return 0, err
	}
	f := read(n, "CIM_WiFiPort")
	st := f.int("EnabledState")
	return st, f.err
}

// EnableWiFiPort switches the wireless port on with local profile sync
// (RequestStateChange 32769), so the profiles added are used; a port
// already on is left alone.
func (c *Client) EnableWiFiPort(ctx context.Context) error {
	st, err := c.WiFiPortState(ctx)
	if err != nil {
		return err
	}
	if st == WiFiPortOnWithSync || st == wifiPortEnabledIdle {
		return nil
	}
	return c.requestStateChange(ctx, "wifi port state change", URIWiFiPort, WiFiPortOnWithSync)
}
