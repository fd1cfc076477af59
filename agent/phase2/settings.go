package phase2

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/amtops/amtops/internal/amt"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/wsman"
	amtopsv1 "github.com/amtops/amtops/proto/amtops/v1"
)

// settingsSteps is stage 2 (S9–S10 and SP2 network profiles) over TLS;
// update runs it too. It ends with a commit, so the settings are durable
// (the firmware drops uncommitted changes on a reset), and checks that the
// device is back and has them.
func (r *job) settingsSteps() []step {
	s := r.j.GetSettings()
	return []step{
		// One call: the redirection listener, without which none of KVM,
		// SOL and IDE-R is usable, follows them.
		{name: StepRedirection, run: func(ctx context.Context) (string, error) {
			red := amt.Redirection{IDER: s.GetIdeRedirection(), SOL: s.GetSerialOverLan()}
			detail := fmt.Sprintf("IDE-R %t, SOL %t", red.IDER, red.SOL)
			if r.noKVM() {
				// Not a failure: the device has no KVM to configure.
				r.rep.Step(ctx, StepKVM, domain.OutcomeSkipped, SkipNoKVM)
				return detail + ", KVM absent", r.dev.ApplyRedirection(ctx, red)
			}
			kvm := s.GetKvm()
			red.KVM = &kvm
			return fmt.Sprintf("%s, KVM %t", detail, kvm), r.dev.ApplyRedirection(ctx, red)
		}},
		{name: StepPing, run: func(ctx context.Context) (string, error) {
			return onOff(s.GetPingResponse()), r.dev.SetPing(ctx, s.GetPingResponse(), s.GetPingResponse())
		}},
		{name: StepWebUI, run: func(ctx context.Context) (string, error) {
			err := r.dev.SetWebUI(ctx, s.GetWebUi())
			if absent(err) {
				// Recent firmware has no web UI: nothing to turn off.
				if s.GetWebUi() {
					r.warn(ctx, StepWebUI, WarnNoWebUI)
				}
				return "", skipped{"no web UI on this firmware"}
			}
			return onOff(s.GetWebUi()), err
		}},
		{name: StepPower, skip: func(context.Context) string {
			return unless(s.GetPowerScheme() == "", "no power scheme configured")
		}, run: func(ctx context.Context) (string, error) { return r.power(ctx, s.GetPowerScheme()) }},
		{name: StepAdminPassword, skip: r.adminPasswordDone, run: r.adminPassword},
		// Users go before the Kerberos ACL, which adds entries of its own.
		{name: StepRemoveUsers, run: func(ctx context.Context) (string, error) {
			removed, err := r.dev.RemoveUsers(ctx)
			return fmt.Sprintf("removed %d accounts", len(removed)), err
		}},
		{name: StepKerberos, skip: func(context.Context) string {
			return unless(r.j.GetKerberos() == nil, "no Kerberos settings in the job")
		}, run: r.kerberos},
		{name: StepKerberosACL, skip: func(context.Context) string {
			k := r.j.GetKerberos()
			return unless(len(k.GetAcl()) == 0 || !k.GetEnabled(), "no Kerberos ACL entries")
		}, run: r.kerberosACL},
		{name: StepNetworkProfiles, skip: func(context.Context) string {
			return unless(len(r.j.GetNetworks()) == 0, "no network profiles in the job")
		}, run: r.networks},
		r.commitStep(nil, true),
		{name: StepVerifyTLS, skip: func(context.Context) string {
			return unless(!r.conn.tls, "not on TLS")
		}, run: func(ctx context.Context) (string, error) { return r.verifyTLS(ctx, nil) }},
		{name: StepVerifySettings, run: r.verifySettings},
	}
}

// noKVM reports a device without KVM (Standard Manageability), as the
// identity step read it from the SKU: KVM is skipped, not failed.
func (r *job) noKVM() bool { return r.ident != nil && r.ident.StandardManageability() }

// absent reports the fault of a class the firmware does not serve
// (DestinationUnreachable: "No instance of … exists").
func absent(err error) bool {
	var fe *wsman.FaultError
	return errors.As(err, &fe) && fe.Subcode == "DestinationUnreachable"
}

// unless is a skip reason: why when cond holds, else "" (run the step).
func unless(cond bool, why string) string {
	if cond {
		return why
	}
	return ""
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
	wantKVM := s.GetKvm() && !r.noKVM()
	if rs.EnabledState != amt.RedirectionFor(s.GetIdeRedirection(), s.GetSerialOverLan()) ||
		rs.ListenerEnabled != (s.GetIdeRedirection() || s.GetSerialOverLan() || wantKVM) {
		lost = append(lost, "redirection")
	}
	if !r.noKVM() {
		kvm, err := r.dev.KVMEnabled(ctx)
		if err != nil {
			return "", err
		}
		if kvm != wantKVM {
			lost = append(lost, "kvm")
		}
	}
	web, err := r.dev.WebUIEnabled(ctx)
	switch {
	case absent(err):
		web = s.GetWebUi() // none to have; warned when it was asked for
	case err != nil:
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

// adminPasswordDone is the admin-password step's skip.
func (r *job) adminPasswordDone(context.Context) string {
	switch pw := r.j.GetCredentials().GetNewAdminPassword(); {
	case pw == "":
		return "no new admin password in the job"
	case pw == r.conn.password:
		return "device already has the new password"
	}
	return ""
}

// adminPassword sets the new admin password (S10) and reconnects with it.
func (r *job) adminPassword(ctx context.Context) (string, error) {
	pw := r.j.GetCredentials().GetNewAdminPassword()
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
	r.user = r.j.GetCredentials().GetUsername()
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
