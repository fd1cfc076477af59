package phase2

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/amtops/amtops/internal/amt"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/wsman"
	amtopsv1 "github.com/amtops/amtops/proto/amtops/v1"
)

// settingsStage is S9–S10 (and SP2 network profiles) over TLS; update
// reuses it. skipWiFi is set over a wireless link (S15).
func (r *job) settingsStage(ctx context.Context, skipWiFi bool) error {
	s := r.j.GetSettings()
	steps := []struct {
		name string
		fn   func() (string, error)
	}{
		{StepRedirection, func() (string, error) {
			return fmt.Sprintf("IDE-R %t, SOL %t", s.GetIdeRedirection(), s.GetSerialOverLan()),
				r.dev.SetRedirection(ctx, s.GetIdeRedirection(), s.GetSerialOverLan())
		}},
		{StepKVM, func() (string, error) { return onOff(s.GetKvm()), r.dev.SetKVM(ctx, s.GetKvm()) }},
		{StepPing, func() (string, error) {
			return onOff(s.GetPingResponse()), r.dev.SetPing(ctx, s.GetPingResponse(), s.GetPingResponse())
		}},
		{StepWebUI, func() (string, error) { return onOff(s.GetWebUi()), r.dev.SetWebUI(ctx, s.GetWebUi()) }},
		{StepPower, func() (string, error) { return r.power(ctx, s.GetPowerScheme()) }},
		{StepAdminPassword, func() (string, error) { return r.adminPassword(ctx) }},
		// Users go before the Kerberos ACL, which adds entries of its own.
		{StepRemoveUsers, func() (string, error) {
			removed, err := r.dev.RemoveUsers(ctx)
			return fmt.Sprintf("removed %d accounts", len(removed)), err
		}},
		{StepKerberos, func() (string, error) { return r.kerberos(ctx) }},
		{StepKerberosACL, func() (string, error) { return r.kerberosACL(ctx) }},
		{StepNetworkProfiles, func() (string, error) { return r.networks(ctx, skipWiFi) }},
	}
	for _, st := range steps {
		if err := r.step(ctx, st.name, st.fn); err != nil {
			return err
		}
	}
	// Make the settings durable (the firmware drops uncommitted changes on
	// a reset), then wait until the device is back so the next job finds
	// it answering.
	committed := time.Now()
	if err := r.commit(ctx); err != nil {
		return err
	}
	if err := r.step(ctx, StepVerifyTLS, func() (string, error) {
		if !r.conn.tls {
			return "", skipped{"not on TLS"}
		}
		return r.verifyTLS(ctx, nil, committed)
	}); err != nil {
		return err
	}
	return r.step(ctx, StepVerifySettings, func() (string, error) { return r.verifySettings(ctx) })
}

// verifySettings reads back, after the commit, what the steps above
// wrote: a reset between a write and the commit silently drops it, and a
// device must not be reported configured with settings it does not have.
// A mismatch is transient: the next attempt writes them again.
func (r *job) verifySettings(ctx context.Context) (string, error) {
	s := r.j.GetSettings()
	var lost []string
	rs, err := r.dev.RedirectionService(ctx)
	if err != nil {
		return "", err
	}
	if rs.EnabledState != amt.RedirectionFor(s.GetIdeRedirection(), s.GetSerialOverLan()) {
		lost = append(lost, "redirection")
	}
	kvm, err := r.dev.KVMEnabled(ctx)
	if err != nil {
		return "", err
	}
	if kvm != s.GetKvm() {
		lost = append(lost, "kvm")
	}
	web, err := r.dev.WebUIEnabled(ctx)
	if err != nil {
		return "", err
	}
	if web != s.GetWebUi() {
		lost = append(lost, "web-ui")
	}
	gs, err := r.dev.GeneralSettings(ctx)
	if err != nil {
		return "", err
	}
	if gs.PingResponseEnabled != s.GetPingResponse() {
		lost = append(lost, "ping")
	}
	if r.j.GetKind() == amtopsv1.JobKind_JOB_KIND_PROVISION && (gs.HostName != r.j.GetTarget().GetHostName() || gs.DomainName != r.j.GetTarget().GetDomain()) {
		lost = append(lost, "fqdn")
	}
	if len(lost) > 0 {
		return "", transientError{fmt.Errorf("the device lost %s after the commit (a reset?)", strings.Join(lost, ", "))}
	}
	return "redirection, kvm, web ui, ping and fqdn as configured", nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// power selects the scheme by InstanceID or description (ElementName).
func (r *job) power(ctx context.Context, want string) (string, error) {
	if want == "" {
		return "", skipped{"no power scheme configured"}
	}
	schemes, err := r.dev.PowerSchemes(ctx)
	if err != nil {
		return "", err
	}
	var names []string
	for _, p := range schemes {
		if p.InstanceID == want || p.Description == want || strings.HasSuffix(p.Description, ": "+want) {
			return p.Description, r.dev.SetPowerScheme(ctx, p.InstanceID)
		}
		names = append(names, p.Description)
	}
	return "", fmt.Errorf("settings.power_scheme %q is not offered by the device (offers %q)", want, names)
}

// adminPassword sets the new admin password (S10) and reconnects with it.
func (r *job) adminPassword(ctx context.Context) (string, error) {
	pw := r.j.GetCredentials().GetNewAdminPassword()
	if pw == "" {
		return "", skipped{"no new admin password in the job"}
	}
	if pw == r.conn.password {
		return "", skipped{"device already has the new password"}
	}
	if err := amt.ValidatePassword(pw); err != nil {
		return "", fmt.Errorf("credentials.new_admin_password: %w", err)
	}
	realm := ""
	if r.ident != nil {
		realm = r.ident.DigestRealm
	}
	if err := r.dev.SetAdminPassword(ctx, r.j.GetCredentials().GetUsername(), pw, realm); err != nil {
		return "", err
	}
	r.oldPassword = r.conn.password
	dev, err := r.dial(ctx, r.conn.tls, pw)
	if err != nil {
		return "", r.passwordDropped(ctx, fmt.Errorf("reconnect with the new password: %w", err))
	}
	r.setClient(dev, connInfo{tls: r.conn.tls, password: pw})
	return "password set; reconnected", nil
}

// passwordDropped explains a refusal after this attempt changed the admin
// password: a reset before the commit drops the change, and the old
// password working again says so. That is transient: the next attempt
// sets it again. Any other error is returned as is.
func (r *job) passwordDropped(ctx context.Context, err error) error {
	if r.oldPassword == "" || !errors.Is(err, wsman.ErrUnauthorized) {
		return err
	}
	old, oerr := r.dial(ctx, r.conn.tls, r.oldPassword)
	if oerr != nil {
		return err
	}
	old.WSMan().Close()
	return transientError{fmt.Errorf("the device dropped the password change (a reset?); the old password works again: %w", err)}
}

// kerberos applies the AMT account's key (S10). The amt package writes
// MasterKey only, so AES on AMT 8+ goes as the AES key itself rather than
// passphrase/salt/iterations.
func (r *job) kerberos(ctx context.Context) (string, error) {
	k := r.j.GetKerberos()
	if k == nil {
		return "", skipped{"no Kerberos settings in the job"}
	}
	cur, err := r.dev.KerberosSettings(ctx)
	if err != nil {
		return "", err
	}
	if !k.GetEnabled() {
		if !cur.KrbEnabled {
			return "", skipped{"Kerberos off"}
		}
		cur.KrbEnabled = false
		return "disabled", r.dev.PutKerberosSettings(ctx, cur)
	}
	if k.GetRealm() == "" {
		return "", errors.New("kerberos.realm is empty")
	}
	key, algs, err := kerberosKey(k, r.major(), cur.SupportedEncryptionAlgorithms)
	if err != nil {
		return "", err
	}
	tol := int(k.GetMaxClockToleranceMinutes())
	if tol < 1 || tol > amt.MaxClockTolerance {
		tol = amt.MaxClockTolerance
	}
	cur.RealmName = strings.ToUpper(k.GetRealm())
	cur.KeyVersion = int(k.GetKeyVersion())
	cur.MasterKey = key
	cur.MaximumClockTolerance = tol
	cur.ConfiguredEncryptionAlgorithms = algs
	cur.KrbEnabled = true
	if err := r.dev.PutKerberosSettings(ctx, cur); err != nil {
		return "", err
	}
	return fmt.Sprintf("realm %s, key version %d, algorithms %v", cur.RealmName, cur.KeyVersion, algs), nil
}

// kerberosKey picks the key AMT can use: the job's etype key where the
// firmware supports it (AMT 8+), else the RC4-HMAC key.
func kerberosKey(k *amtopsv1.Kerberos, major int, supported []int) ([]byte, []int, error) {
	mk, rc4 := k.GetMasterKey(), k.GetRc4Key()
	if major >= 8 {
		switch k.GetEncryptionType() {
		case 18:
			if len(mk) == 32 && slices.Contains(supported, amt.KerberosAES256) {
				return mk, []int{amt.KerberosAES256}, nil
			}
		case 17:
			if len(mk) == 16 && slices.Contains(supported, amt.KerberosAES128) {
				return mk, []int{amt.KerberosAES128}, nil
			}
		}
	}
	var algs []int
	if major >= 8 {
		algs = []int{amt.KerberosRC4HMAC}
	}
	if len(rc4) == 16 {
		return rc4, algs, nil
	}
	if et := k.GetEncryptionType(); (et == 23 || et == 0) && len(mk) == 16 {
		return mk, algs, nil
	}
	return nil, nil, fmt.Errorf("kerberos: no key this AMT %d firmware can use (encryption_type %d, master_key %d bytes, rc4_key %d bytes)",
		major, k.GetEncryptionType(), len(mk), len(rc4))
}

func (r *job) major() int {
	if r.ident == nil {
		return 0
	}
	m, _ := strconv.Atoi(strings.SplitN(r.ident.Version, ".", 2)[0])
	return m
}

func (r *job) kerberosACL(ctx context.Context) (string, error) {
	acl := r.j.GetKerberos().GetAcl()
	if len(acl) == 0 || !r.j.GetKerberos().GetEnabled() {
		return "", skipped{"no Kerberos ACL entries"}
	}
	for i, e := range acl {
		sid, err := parseSID(e.GetSid())
		if err != nil {
			return "", fmt.Errorf("kerberos.acl[%d].sid: %w", i, err)
		}
		realms := make([]int, 0, len(e.GetRealms()))
		for _, rl := range e.GetRealms() {
			realms = append(realms, int(rl))
		}
		if _, err := r.dev.AddKerberosUser(ctx, sid, int(e.GetAccessPermission()), realms); err != nil && !isReturn(err, wsman.StatusDuplicate) {
			return "", fmt.Errorf("kerberos.acl[%d]: %w", i, err)
		}
	}
	return fmt.Sprintf("%d entries", len(acl)), nil
}

// parseSID turns "S-1-5-21-…" into the binary SID AMT takes.
func parseSID(s string) ([]byte, error) {
	parts := strings.Split(s, "-")
	if len(parts) < 3 || !strings.EqualFold(parts[0], "S") {
		return nil, fmt.Errorf("%q is not a SID (S-1-…)", s)
	}
	rev, err := strconv.ParseUint(parts[1], 10, 8)
	if err != nil {
		return nil, fmt.Errorf("SID %q: revision: %w", s, err)
	}
	auth, err := strconv.ParseUint(parts[2], 10, 48)
	if err != nil {
		return nil, fmt.Errorf("SID %q: authority: %w", s, err)
	}
	subs := parts[3:]
	if len(subs) > 15 {
		return nil, fmt.Errorf("SID %q: %d sub-authorities, max 15", s, len(subs))
	}
	out := []byte{byte(rev), byte(len(subs)), 0, 0, 0, 0, 0, 0}
	for i := 0; i < 6; i++ {
		out[2+i] = byte(auth >> (8 * (5 - i)))
	}
	for _, sub := range subs {
		v, err := strconv.ParseUint(sub, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("SID %q: sub-authority %q: %w", s, sub, err)
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(v))
	}
	return out, nil
}

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
	return rootID, clientID, nil
}

// networks installs the 802.1X wired profile and Wi-Fi profiles (S3/S7).
// A job without a wired profile leaves 802.1X as it is: turning it off
// could drop the link; removal is remove-config's business.
func (r *job) networks(ctx context.Context, skipWiFi bool) (string, error) {
	nets := r.j.GetNetworks()
	if len(nets) == 0 {
		return "", skipped{"no network profiles in the job"}
	}
	var done []string
	for _, p := range nets {
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
			if skipWiFi {
				// update has warned already (S15).
				done = append(done, "wireless "+p.GetName()+" not updated")
				continue
			}
			if err := r.wifi(ctx, p); err != nil {
				return "", err
			}
			done = append(done, "wireless "+p.GetName())
		default:
			return "", fmt.Errorf("network %q: kind %s unsupported", p.GetName(), p.GetKind())
		}
	}
	return strings.Join(done, "; "), nil
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

// update is S12–S15: the settings stage over TLS with S15's link rules.
func (r *job) update(ctx context.Context) error {
	if err := r.connect(ctx, true); err != nil {
		return err
	}
	if err := r.identity(ctx); err != nil {
		return err
	}
	var link amtopsv1.Link
	if err := r.step(ctx, StepDetectLink, func() (string, error) {
		var err error
		link, err = r.detectLink(ctx)
		r.facts.Link = link
		return link.String(), err
	}); err != nil {
		return err
	}
	if link == amtopsv1.Link_LINK_WIRELESS {
		// S15: the wireless profile the device is managed over is never
		// touched by an update; the device records that it was not.
		r.warn(ctx, StepDetectLink, WarnWirelessNotUpdated)
	}
	if link == amtopsv1.Link_LINK_WIRED_8021X {
		for _, p := range r.j.GetNetworks() {
			if p.GetKind() != amtopsv1.NetworkProfile_KIND_WIRED_8021X {
				continue
			}
			if err := r.step(ctx, StepNetworkProfiles, func() (string, error) {
				change, err := r.dot1xWouldChange(ctx, p)
				switch {
				case err != nil:
					return "", err
				case !change:
					return "802.1X settings unchanged", nil
				case !r.j.GetUpdate().GetConfirm_8021X():
					return "", domain.ErrConfirm8021X
				}
				r.warn(ctx, StepNetworkProfiles, WarnConfirmed8021X)
				return "802.1X settings change confirmed", nil
			}); err != nil {
				return err
			}
		}
	}
	if err := r.syncClock(ctx); err != nil {
		return err
	}
	return r.settingsStage(ctx, link == amtopsv1.Link_LINK_WIRELESS)
}

// remove is S16: PartialUnprovision keeps identity, Unprovision clears all.
func (r *job) remove(ctx context.Context) error {
	if err := r.connect(ctx, true); err != nil {
		return err
	}
	if err := r.identity(ctx); err != nil {
		return err
	}
	all := r.j.GetKind() == amtopsv1.JobKind_JOB_KIND_REMOVE_ALL
	return r.step(ctx, StepUnprovision, func() (string, error) {
		if r.ident.ProvisioningState == amt.ProvisioningStatePre {
			return "", skipped{"device is already unprovisioned"}
		}
		if all {
			r.facts.ProvisioningState = amt.ProvisioningStatePre
			return "configuration and identity removed", r.dev.Unprovision(ctx, amt.ProvisioningModeAdmin)
		}
		r.facts.ProvisioningState = amt.ProvisioningStateIn
		return "configuration removed, identity kept", r.dev.PartialUnprovision(ctx)
	})
}
