package phase2

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/amtops/amtops/internal/amt"
	"github.com/amtops/amtops/internal/wsman"
	amtopsv1 "github.com/amtops/amtops/proto/amtops/v1"
)

// networkCreds installs one profile's RADIUS root(s), client key and
// client certificate and returns their InstanceIDs.
func (r *job) networkCreds(ctx context.Context, p *amtopsv1.NetworkProfile) (rootID, clientID string, err error) {
	if len(p.GetRadiusRootDer()) == 0 || len(p.GetClientCertificateDer()) == 0 {
		return "", "", fmt.Errorf("network %q: radius_root_der and client_certificate_der are required for EAP-TLS", p.GetName())
	}
	for i, der := range p.GetRadiusRootDer() {
		id, err := r.installCert(ctx, der, true)
		if err != nil {
			return "", "", fmt.Errorf("network %q: radius root %d: %w", p.GetName(), i, err)
		}
		if i == 0 {
			rootID = id
		}
	}
	if len(p.GetClientKeyDer()) > 0 {
		if _, err := r.installKey(ctx, p.GetClientKeyDer()); err != nil {
			return "", "", fmt.Errorf("network %q: client key: %w", p.GetName(), err)
		}
	}
	if clientID, err = r.installCert(ctx, p.GetClientCertificateDer(), false); err != nil {
		return "", "", fmt.Errorf("network %q: client certificate: %w", p.GetName(), err)
	}
	r.facts.InstalledClientSerials = append(r.facts.InstalledClientSerials, p.GetClientSerial())
	r.clientCerts = append(r.clientCerts, p.GetClientCertificateDer())
	return rootID, clientID, nil
}

// networks installs the 802.1X wired profile and Wi-Fi profiles (S3/S7).
// A job without a wired profile leaves 802.1X as it is: turning it off
// could drop the link; removal is remove-config's business.
func (r *job) networks(ctx context.Context) (string, error) {
	var done []string
	wifi, kept := false, false
	for _, p := range r.j.GetNetworks() {
		switch p.GetKind() {
		case amtopsv1.NetworkProfile_KIND_WIRED_8021X:
			rootID, clientID, err := r.networkCreds(ctx, p)
			if err != nil {
				return "", err
			}
			cur, err := r.dev.IEEE8021xSettings(ctx)
			if err != nil {
				return "", err
			}
			cur.Enabled, cur.AuthenticationProtocol = amt.IEEE8021xEnabled, amt.EAPTLS
			cur.Username, cur.AvailableInS0 = r.eapIdentity(), true
			if err := r.dev.PutIEEE8021xSettings(ctx, cur); err != nil {
				return "", fmt.Errorf("network %q: %w", p.GetName(), err)
			}
			if err := r.dev.SetIEEE8021xCertificates(ctx, rootID, clientID); err != nil {
				return "", fmt.Errorf("network %q: %w", p.GetName(), err)
			}
			done = append(done, "wired 802.1X "+p.GetName())
		case amtopsv1.NetworkProfile_KIND_WIRELESS:
			if r.link == amtopsv1.Link_LINK_WIRELESS {
				// update has warned already (S15).
				done = append(done, "wireless "+p.GetName()+" not updated")
				kept = true
				continue
			}
			if err := r.wifi(ctx, p); err != nil {
				return "", err
			}
			wifi = true
			done = append(done, "wireless "+p.GetName())
		default:
			return "", fmt.Errorf("network %q: kind %s unsupported", p.GetName(), p.GetKind())
		}
	}
	if wifi {
		// The port is off by default: profiles on an off port are unused.
		if err := r.dev.EnableWiFiPort(ctx); err != nil {
			return "", fmt.Errorf("networks: wifi port: %w", err)
		}
		done = append(done, "wifi port on")
	}
	if !kept {
		// A profile left as it was still uses its old certificate.
		done = append(done, r.deleteReplacedClientCerts(ctx))
	}
	return strings.Join(done, "; "), nil
}

// deleteReplacedClientCerts deletes the client certificates (and keys)
// the ones installed by this job replaced: same subject and issuer, not
// installed now, not bound to TLS. Every update brings new client
// certificates (S14); without this the store fills (23) after a few
// dozen. A certificate the device refuses to delete (in use) is kept.
func (r *job) deleteReplacedClientCerts(ctx context.Context) string {
	if len(r.clientCerts) == 0 {
		return "no client certificate replaced"
	}
	type ident struct{ cn, issuer string }
	ours, keep := map[ident]bool{}, map[string]bool{string(r.leaf): true}
	for _, der := range r.clientCerts {
		keep[string(der)] = true
		if c, err := x509.ParseCertificate(der); err == nil {
			ours[ident{c.Subject.CommonName, string(c.RawIssuer)}] = true
		}
	}
	certs, err := r.dev.Certificates(ctx)
	if err != nil {
		return "replaced client certificates not listed: " + err.Error()
	}
	var ids []string
	for _, c := range certs {
		if c.TrustedRoot || keep[string(c.DER)] {
			continue
		}
		if x, err := x509.ParseCertificate(c.DER); err == nil && ours[ident{x.Subject.CommonName, string(x.RawIssuer)}] {
			ids = append(ids, c.InstanceID)
		}
	}
	return r.deleteReplaced(ctx, ids)
}

// deleteReplaced deletes certificates and their keys, best effort: what
// cannot go now goes with a later change.
func (r *job) deleteReplaced(ctx context.Context, ids []string) string {
	deleted, kept := 0, 0
	for _, id := range ids {
		if err := r.dev.DeleteCertificateAndKey(ctx, id); err != nil {
			kept++
			r.log.Warn().Str("certificate", id).Err(err).Msg("replaced certificate not deleted")
			continue
		}
		deleted++
	}
	return fmt.Sprintf("%d replaced certificates deleted, %d kept", deleted, kept)
}

// wifi replaces the profile of the same name (delete, add): that is how a
// re-run or an update with a new client certificate converges.
func (r *job) wifi(ctx context.Context, p *amtopsv1.NetworkProfile) error {
	if p.GetName() == "" || p.GetSsid() == "" {
		return errors.New("networks: a wireless profile needs name and ssid")
	}
	rootID, clientID, err := r.networkCreds(ctx, p)
	if err != nil {
		return err
	}
	profiles, err := r.dev.WiFiProfiles(ctx)
	if err != nil {
		return err
	}
	for _, w := range profiles {
		if w.ElementName == p.GetName() {
			if err := r.dev.DeleteWiFiProfile(ctx, w.InstanceID); err != nil {
				return fmt.Errorf("network %q: delete old profile: %w", p.GetName(), err)
			}
		}
	}
	prio := int(p.GetPriority())
	if prio <= 0 {
		prio = 1
	}
	err = r.dev.AddWiFiProfile(ctx, amt.WiFiEndpointSettings{
		ElementName: p.GetName(), SSID: p.GetSsid(), Priority: prio,
		AuthenticationMethod: amt.WiFiAuthWPA28021x, EncryptionMethod: 4, // CCMP
	}, &amt.WiFiEAP{Username: r.eapIdentity(), ClientCertID: clientID, RootCertID: rootID})
	if err != nil {
		return fmt.Errorf("network %q: %w", p.GetName(), err)
	}
	return nil
}

// eapIdentity is the identity the device presents in EAP-TLS: its FQDN,
// which the client certificate names too.
func (r *job) eapIdentity() string { return r.fqdn() }

// detectLink learns how the device is attached (S15). Real firmware tells
// through AMT_EthernetPortSettings (instance 1, or PhysicalConnectionType
// 3, is the wireless port; the one holding our target IP, or else the one
// whose link is up, is ours). Where that class is not served (the
// simulator) the fallback is conservative: wired 802.1X when it is on,
// wireless when Wi-Fi profiles exist, else wired — a wired device that has
// Wi-Fi profiles is taken for wireless, which only skips a profile update.
func (r *job) detectLink(ctx context.Context) (amtopsv1.Link, error) {
	link := amtopsv1.Link_LINK_WIRED
	items, err := r.dev.WSMan().Enumerate(ctx, wsman.AMTSchema+"AMT_EthernetPortSettings")
	var fe *wsman.FaultError
	switch {
	case err == nil && len(items) > 0:
		link = linkFromPorts(items, r.j.GetTarget().GetIp())
	case err == nil || errors.As(err, &fe):
		profiles, err := r.dev.WiFiProfiles(ctx)
		if err != nil && !errors.As(err, &fe) {
			return 0, err
		}
		if len(profiles) > 0 {
			link = amtopsv1.Link_LINK_WIRELESS
		}
	default:
		return 0, err
	}
	if link == amtopsv1.Link_LINK_WIRED {
		d, err := r.dev.IEEE8021xSettings(ctx)
		if err != nil && !errors.As(err, &fe) {
			return 0, err
		}
		if err == nil && d.Enabled == amt.IEEE8021xEnabled {
			link = amtopsv1.Link_LINK_WIRED_8021X
		}
	}
	return link, nil
}

func linkFromPorts(items []*wsman.Node, ip string) amtopsv1.Link {
	wireless := func(n *wsman.Node) bool {
		return n.Get("PhysicalConnectionType") == "3" || strings.HasSuffix(n.Get("InstanceID"), "Settings 1")
	}
	kind := func(n *wsman.Node) amtopsv1.Link {
		if wireless(n) {
			return amtopsv1.Link_LINK_WIRELESS
		}
		return amtopsv1.Link_LINK_WIRED
	}
	for _, n := range items {
		if n.Get("IPAddress") == ip {
			return kind(n)
		}
	}
	for _, n := range items {
		if !wireless(n) && n.Get("LinkIsUp") == "true" {
			return amtopsv1.Link_LINK_WIRED
		}
	}
	for _, n := range items {
		if wireless(n) && n.Get("LinkIsUp") == "true" {
			return amtopsv1.Link_LINK_WIRELESS
		}
	}
	return amtopsv1.Link_LINK_WIRED
}

// dot1xWouldChange reports whether applying the job's wired profile would
// change the device's 802.1X settings (a new client certificate counts).
func (r *job) dot1xWouldChange(ctx context.Context, p *amtopsv1.NetworkProfile) (bool, error) {
	cur, err := r.dev.IEEE8021xSettings(ctx)
	if err != nil {
		return false, err
	}
	if cur.Enabled != amt.IEEE8021xEnabled || cur.AuthenticationProtocol != amt.EAPTLS || cur.Username != r.eapIdentity() {
		return true, nil
	}
	certs, err := r.dev.Certificates(ctx)
	if err != nil {
		return false, err
	}
	for _, c := range certs {
		if bytes.Equal(c.DER, p.GetClientCertificateDer()) {
			return false, nil
		}
	}
	return true, nil
}
