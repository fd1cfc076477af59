package phase1

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/directory"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/pki"
	"github.com/amtops/amtops/internal/wire"
	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// Store is the part of the site database phase 1 uses.
type Store interface {
	GetDevice(ctx context.Context, id string) (domain.Device, error)
	CertificatesByDevice(ctx context.Context, deviceID string) ([]domain.CertificateRecord, error)
	PutCertificate(ctx context.Context, rec domain.CertificateRecord) error
	UpdateCertificateStatus(ctx context.Context, serial string, status domain.CertStatus, reason domain.RevocationReason, at time.Time) (domain.CertificateRecord, error)
	CreateSecret(ctx context.Context, name string, plaintext []byte) (bool, error)
	GetSecret(ctx context.Context, name string) ([]byte, error)
	PutSecret(ctx context.Context, name string, plaintext []byte) error
	AppendEvent(ctx context.Context, e domain.OperationEvent) error
	MoveJob(ctx context.Context, batchID, jobID string, next domain.JobState) error
	FinishJob(ctx context.Context, batchID, jobID string, state domain.JobState, errStep, errMsg string) (bool, error)
	UpdateDevice(ctx context.Context, id string, fn func(*domain.Device) error) (domain.Device, error)
}

// CA issues and revokes certificates (pki.CA's methods that phase 1 needs).
type CA interface {
	Issue(ctx context.Context, req pki.Request) (*pki.Issued, error)
	Revoke(ctx context.Context, serial string, reason domain.RevocationReason) error
}

// Directory publishes AMT accounts in Active Directory.
type Directory interface {
	Publish(ctx context.Context, d directory.Device) (directory.Published, error)
	Update(ctx context.Context, d directory.Device) (directory.Published, error)
	RegisterSPNs(ctx context.Context, dn, fqdn string) error
	AddToGroups(ctx context.Context, dn string) error
	Delete(ctx context.Context, computerName string) (bool, error)
}

// Queue is the per-subnet phase-2 lease queue.
type Queue interface {
	Enqueue(ctx context.Context, subnet netip.Prefix, jobID string, payload []byte) (bool, error)
}

// Site is what phase 1 puts into every controller: the site's settings.
type Site struct {
	ProvisioningUser     string
	ProvisioningPassword string
	KeyOnDevice          bool
	MutualTLS            bool
	Settings             config.AMTSettings
	Kerberos             config.Kerberos
	Networks             config.Networks
	AddToGroups          bool
	JobDeadline          time.Duration
	// NewPassword makes the random strong admin password of S10.
	NewPassword func() (string, error)
}

// Steps, in order, as the operations log names them.
const (
	StepRevokeSuperseded = "revoke-superseded"  // S1
	StepIssueServerCert  = "issue-server-cert"  // S2
	StepIssueClientCerts = "issue-client-certs" // S3, S14
	StepPublishAccount   = "publish-account"    // S4, S13
	StepRegisterSPNs     = "register-spns"      // S5, S13
	StepAddToGroups      = "add-to-groups"      // S6
	StepRevokeAll        = "revoke-all"         // S17
	StepDeleteAccount    = "delete-account"     // S17
	StepTrust            = "trust-material"     // update and removal: how the agent verifies TLS
	StepMarkDevice       = "mark-device"        // S18, S19
	StepCheckLink        = "check-link"         // S15
	StepQueuePhase2      = "queue-phase2"
)

// Batch options phase 1 acts on (domain.Batch.Options, copied into
// Task.Options); each is "true" or "false".
const (
	// OptionSuppressAuto, on a removal, keeps sweeps away from the device
	// afterwards (S18) until an administrator clears the flag.
	OptionSuppressAuto = "suppress_auto"
	// OptionRename, on remove-all, is the first half of a rename or domain
	// move (S19): the device is marked rename-pending (and suppressed), and
	// nothing provisions it until the rename is completed.
	OptionRename = "rename"
	// OptionConfirm8021X, on an update, is the administrator's confirmation
	// that settings may change over an 802.1X wired link (S15).
	OptionConfirm8021X = "confirm_8021x"
)

func (t Task) option(name string) bool { return t.Options[name] == "true" }

// ErrConfirm8021X refuses an update of a device known to be managed over
// an 802.1X wired link whose 802.1X settings the update would change (a
// new client certificate always does), before anything is revoked (S15).
var ErrConfirm8021X = errors.New("the device is managed over an 802.1X wired link and the update replaces its 802.1X " +
	"client certificate; incompatible settings can drop the link while no OS runs: start the update with confirm_8021x to proceed")

// Provisioner does the phase-1 work of every job kind. Each step is
// idempotent, keyed by the job: a re-run after a crash reuses what the
// earlier run made instead of making it again.
type Provisioner struct {
	store Store
	ca    CA
	dir   Directory // nil: no directory, S4–S6 skipped, Kerberos off
	queue Queue
	site  Site
	log   zerolog.Logger
	now   func() time.Time
	actor string
	// afterStep, when set by tests, runs after every completed step; an
	// error stops the run there, as a crash would.
	afterStep func(step string) error
}

// NewProvisioner builds the phase-1 handler. dir may be nil.
func NewProvisioner(st Store, ca CA, dir Directory, q Queue, site Site, actor string, log zerolog.Logger) *Provisioner {
	return &Provisioner{store: st, ca: ca, dir: dir, queue: q, site: site, log: log, now: time.Now, actor: actor}
}

// secret names, per job so a re-run finds what an earlier run made.
// KeySecret names a job's sealed private key for purpose; the server
// deletes it once phase 2 has installed the key.
func KeySecret(jobID string, p domain.CertPurpose) string {
	return "job/" + jobID + "/key/" + string(p)
}
func certSecret(jobID string, p domain.CertPurpose) string {
	return "job/" + jobID + "/cert/" + string(p)
}

// SignOnDeviceSecret marks a job whose server certificate the device's own
// key gets in phase 2 (key_on_device); it holds the FQDN phase 1 prepared.
func SignOnDeviceSecret(jobID string) string { return "job/" + jobID + "/sign-on-device" }

// PendingPasswordSecret names the new admin password phase 1 made; the
// server promotes it to AdminPasswordSecret when phase 2 succeeds.
func PendingPasswordSecret(deviceID string) string { return "device/" + deviceID + "/admin-pending" }

// AdminPasswordSecret names the device's current admin password.
func AdminPasswordSecret(deviceID string) string { return "device/" + deviceID + "/admin" }

// Handle runs the phase-1 work of t and queues its phase-2 job.
func (p *Provisioner) Handle(ctx context.Context, t Task) error {
	dev, err := p.store.GetDevice(ctx, t.DeviceID)
	if err != nil {
		return fmt.Errorf("phase1: %s: %w", t.JobID, err)
	}
	if t.Kind == domain.KindProvision || t.Kind == domain.KindUpdate {
		if err := dev.Provisionable(); err != nil {
			return fmt.Errorf("phase1: %s: %w", t.JobID, err)
		}
	}
	if !dev.Subnet.IsValid() || !dev.IP.IsValid() {
		return fmt.Errorf("phase1: %s: %w", t.JobID, domain.InvalidField("device.ip", dev.IP.String(), "device has no address and subnet yet"))
	}
	if err := p.store.MoveJob(ctx, t.BatchID, t.JobID, domain.JobPhase1); err != nil {
		if errors.Is(err, domain.ErrConflict) {
			// Already past phase 1 or finished (a duplicate delivery).
			p.log.Info().Str("job", t.JobID).Msg("phase-1 task for a job already past phase 1")
			return nil
		}
		return fmt.Errorf("phase1: %s: %w", t.JobID, err)
	}
	job := &pb.Phase2Job{
		BatchId: t.BatchID, DeviceId: dev.ID, Kind: wire.Kind(t.Kind),
		Deadline: timestamppb.New(p.now().Add(p.site.JobDeadline)),
		Target:   &pb.Target{Ip: dev.IP.String(), HostName: dev.HostName, Domain: dev.Domain},
	}
	r := &run{p: p, t: t, dev: dev, job: job}
	var steps []step
	switch t.Kind {
	case domain.KindProvision:
		steps = []step{{StepRevokeSuperseded, r.revokeSuperseded}, {StepIssueServerCert, r.issueServerCert},
			{StepIssueClientCerts, r.issueClientCerts}, {StepPublishAccount, r.publish},
			{StepRegisterSPNs, r.registerSPNs}, {StepAddToGroups, r.addToGroups}}
	case domain.KindUpdate:
		// S14: the server certificate stays; client certificates are
		// renewed, but only once S15's check has passed.
		steps = []step{{StepCheckLink, r.checkLink}, {StepTrust, r.trust}, {StepIssueClientCerts, r.issueClientCerts},
			{StepPublishAccount, r.publish}, {StepRegisterSPNs, r.registerSPNs}, {StepAddToGroups, r.addToGroups}}
	case domain.KindRemoveConfig, domain.KindRemoveAll:
		// The marks first, so no sweep picks the device up meanwhile; the
		// trust material before revoke-all, which revokes what it names.
		steps = []step{{StepMarkDevice, r.markDevice}, {StepTrust, r.trust}, {StepRevokeAll, r.revokeAll},
			{StepDeleteAccount, r.deleteAccount}}
	}
	steps = append(steps, step{StepQueuePhase2, r.queuePhase2})
	for _, s := range steps {
		detail, err := s.fn(ctx)
		if err != nil {
			p.event(ctx, t, s.name, domain.OutcomeFailed, err.Error())
			return fmt.Errorf("phase1: %s: %s: %w", t.JobID, s.name, err)
		}
		outcome := domain.OutcomeOK
		if rest, ok := strings.CutPrefix(detail, "skipped: "); ok {
			outcome, detail = domain.OutcomeSkipped, rest
		}
		p.event(ctx, t, s.name, outcome, detail)
		if p.afterStep != nil {
			if err := p.afterStep(s.name); err != nil {
				return err
			}
		}
	}
	return nil
}

// event appends to the device's operations log; a failure to log is
// logged but does not fail the job.
func (p *Provisioner) event(ctx context.Context, t Task, stepName string, o domain.Outcome, detail string) {
	err := p.store.AppendEvent(ctx, domain.OperationEvent{DeviceID: t.DeviceID, JobID: t.JobID, Phase: 1,
		Step: stepName, Outcome: o, Detail: detail, Actor: p.actor, Time: p.now()})
	if err != nil {
		p.log.Warn().Err(err).Str("device", t.DeviceID).Str("step", stepName).Msg("operations log append failed")
	}
	p.log.Info().Str("device", t.DeviceID).Str("job", t.JobID).Str("phase", "1").Str("step", stepName).
		Str("outcome", string(o)).Msg("phase-1 step")
}

// FailJob records a task's final failure (Recorder).
func (p *Provisioner) FailJob(ctx context.Context, t Task, err error) error {
	stepName := ""
	for _, s := range []string{StepRevokeSuperseded, StepIssueServerCert, StepIssueClientCerts, StepPublishAccount,
		StepRegisterSPNs, StepAddToGroups, StepRevokeAll, StepDeleteAccount, StepTrust, StepMarkDevice, StepCheckLink,
		StepQueuePhase2} {
		if strings.Contains(err.Error(), ": "+s+": ") {
			stepName = s
			break
		}
	}
	if _, ferr := p.store.FinishJob(ctx, t.BatchID, t.JobID, domain.JobFailed, stepName, err.Error()); ferr != nil {
		return ferr
	}
	_, uerr := p.store.UpdateDevice(ctx, t.DeviceID, func(d *domain.Device) error {
		d.LastError, d.LastErrorStep = err.Error(), stepName
		return nil
	})
	if errors.Is(uerr, domain.ErrNotFound) {
		return nil
	}
	return uerr
}

// run is one execution of one task.
type run struct {
	p   *Provisioner
	t   Task
	dev domain.Device
	job *pb.Phase2Job
	// accountDN is the AMT account the publish step found or made, and
	// spns the SPNs it carried when publish read it back.
	accountDN string
	spns      []string
}

type step struct {
	name string
	fn   func(ctx context.Context) (detail string, err error)
}

// revokeSuperseded is S1: every live server-auth certificate the site
// issued for this device, other than this job's own, is revoked.
func (r *run) revokeSuperseded(ctx context.Context) (string, error) {
	n, err := r.revoke(ctx, domain.ReasonSuperseded, func(c domain.CertificateRecord) bool {
		return c.Purpose == domain.PurposeServerAuth && c.JobID != r.t.JobID
	})
	return fmt.Sprintf("revoked %d superseded server certificate(s)", n), err
}

// revokeAll is S17: every certificate issued for the device is revoked.
func (r *run) revokeAll(ctx context.Context) (string, error) {
	n, err := r.revoke(ctx, domain.ReasonCessationOfOperation, func(domain.CertificateRecord) bool { return true })
	return fmt.Sprintf("revoked %d certificate(s)", n), err
}

func (r *run) revoke(ctx context.Context, reason domain.RevocationReason, which func(domain.CertificateRecord) bool) (int, error) {
	certs, err := r.p.store.CertificatesByDevice(ctx, r.dev.ID)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range certs {
		if !c.Status.Live() || !which(c) {
			continue
		}
		// The CA first: if the record update is lost, the next run revokes
		// again, which CAs accept.
		if err := r.p.ca.Revoke(ctx, c.Serial, reason); err != nil {
			return n, fmt.Errorf("revoke %s: %w", c.Serial, err)
		}
		if _, err := r.p.store.UpdateCertificateStatus(ctx, c.Serial, domain.CertRevoked, reason, r.p.now()); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// issued is what a job keeps of a certificate it had issued.
type issued struct {
	Serial string   `json:"serial"`
	Leaf   []byte   `json:"leaf"`
	Chain  [][]byte `json:"chain"`
}

// issue gets one certificate for purpose, reusing the one this job had
// issued already. The key is made and sealed before the CA is asked, so
// a re-run never asks twice for the same key.
func (r *run) issue(ctx context.Context, purpose domain.CertPurpose, profile pki.Profile) (issued, []byte, error) {
	var out issued
	keyDER, err := r.keyFor(ctx, purpose)
	if err != nil {
		return out, nil, err
	}
	if b, err := r.p.store.GetSecret(ctx, certSecret(r.t.JobID, purpose)); err == nil {
		if err := json.Unmarshal(b, &out); err != nil {
			return out, nil, fmt.Errorf("decode issued %s: %w", purpose, err)
		}
		return out, keyDER, nil
	} else if !errors.Is(err, domain.ErrNotFound) {
		return out, nil, err
	}
	parsed, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return out, nil, fmt.Errorf("parse sealed key: %w", err)
	}
	key, ok := parsed.(*rsa.PrivateKey)
	if !ok {
		return out, nil, fmt.Errorf("sealed key is %T, want RSA", parsed)
	}
	csr, err := pki.CSR(key, r.dev.FQDN())
	if err != nil {
		return out, nil, err
	}
	cert, err := r.p.ca.Issue(ctx, pki.Request{Profile: profile, FQDN: r.dev.FQDN(), CSR: csr})
	if err != nil {
		return out, nil, fmt.Errorf("issue %s: %w", purpose, err)
	}
	out = issued{Serial: cert.Serial, Leaf: cert.Leaf, Chain: cert.Chain}
	rec := cert.Record(r.dev.ID, purpose, r.p.now())
	rec.JobID = r.t.JobID
	if err := r.p.store.PutCertificate(ctx, rec); err != nil {
		return out, nil, err
	}
	b, err := json.Marshal(out)
	if err != nil {
		return out, nil, err
	}
	if err := r.p.store.PutSecret(ctx, certSecret(r.t.JobID, purpose), b); err != nil {
		return out, nil, err
	}
	return out, keyDER, nil
}

func (r *run) keyFor(ctx context.Context, purpose domain.CertPurpose) ([]byte, error) {
	name := KeySecret(r.t.JobID, purpose)
	if b, err := r.p.store.GetSecret(ctx, name); err == nil {
		return b, nil
	} else if !errors.Is(err, domain.ErrNotFound) {
		return nil, err
	}
	key, err := pki.GenerateKey()
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	if created, err := r.p.store.CreateSecret(ctx, name, der); err != nil {
		return nil, err
	} else if !created {
		return r.p.store.GetSecret(ctx, name)
	}
	return der, nil
}

// issueServerCert is S2 (and the material for S7).
func (r *run) issueServerCert(ctx context.Context) (string, error) {
	r.job.Tls = &pb.TLSMaterial{MutualAuth: r.p.site.MutualTLS, KeyOnDevice: r.p.site.KeyOnDevice}
	if r.p.site.KeyOnDevice {
		// The device makes its key and CSR in phase 2; the agent asks the
		// server to sign it then (SignDeviceCSR), which only signs for a
		// job marked here, and for the name marked. The chain goes in now
		// so that the job carries its trust anchor like any other.
		if err := r.p.store.PutSecret(ctx, SignOnDeviceSecret(r.t.JobID), []byte(r.dev.FQDN())); err != nil {
			return "", err
		}
		switch c := r.p.ca.(type) {
		case interface{ Chain() [][]byte }:
			r.job.Tls.ChainDer = c.Chain()
		case interface{ Root() []byte }:
			r.job.Tls.ChainDer = [][]byte{c.Root()}
		}
		return "skipped: key on device, signed during phase 2", nil
	}
	c, key, err := r.issue(ctx, domain.PurposeServerAuth, pki.ProfileServerAuth)
	if err != nil {
		return "", err
	}
	r.job.Tls.CertificateDer, r.job.Tls.PrivateKeyDer, r.job.Tls.ChainDer, r.job.Tls.Serial = c.Leaf, key, c.Chain, c.Serial
	return "serial " + c.Serial + " for " + r.dev.FQDN(), nil
}

// issueClientCerts is S3 (provision) and S14 (update): client certificates
// for the configured 802.1X and wireless networks, replacing earlier ones.
func (r *run) issueClientCerts(ctx context.Context) (string, error) {
	nets := r.p.site.Networks
	if !nets.Wired8021X && len(nets.Wireless) == 0 {
		return "skipped: no 802.1X or wireless networks configured", nil
	}
	type want struct {
		purpose domain.CertPurpose
		kind    pb.NetworkProfile_Kind
		spec    config.WiFiSpec
	}
	var wants []want
	if nets.Wired8021X {
		wants = append(wants, want{domain.Purpose8021X, pb.NetworkProfile_KIND_WIRED_8021X, config.WiFiSpec{Name: "wired"}})
	}
	// S15: over a wireless link the agent leaves the wireless profiles
	// alone, so their client certificate stays: revoking it would cut the
	// link the device is managed over.
	keepWireless := r.t.Kind == domain.KindUpdate && r.dev.Link == domain.LinkWireless
	if !keepWireless {
		for _, w := range nets.Wireless {
			wants = append(wants, want{domain.PurposeWireless, pb.NetworkProfile_KIND_WIRELESS, w})
		}
	}
	kept := ""
	if keepWireless && len(nets.Wireless) > 0 {
		kept = "; wireless certificate kept (managed over wireless)"
	}
	if len(wants) == 0 {
		return "skipped: no client certificate to renew" + kept, nil
	}
	if _, err := r.revoke(ctx, domain.ReasonSuperseded, func(c domain.CertificateRecord) bool {
		return (c.Purpose == domain.Purpose8021X || c.Purpose == domain.PurposeWireless && !keepWireless) && c.JobID != r.t.JobID
	}); err != nil {
		return "", err
	}
	// One client certificate per purpose serves every profile of that purpose.
	byPurpose := map[domain.CertPurpose]issued{}
	keys := map[domain.CertPurpose][]byte{}
	for _, w := range wants {
		if _, ok := byPurpose[w.purpose]; !ok {
			c, key, err := r.issue(ctx, w.purpose, pki.ProfileClientAuth)
			if err != nil {
				return "", err
			}
			byPurpose[w.purpose], keys[w.purpose] = c, key
		}
		c := byPurpose[w.purpose]
		r.job.Networks = append(r.job.Networks, &pb.NetworkProfile{Kind: w.kind, Name: w.spec.Name, Ssid: w.spec.SSID,
			Priority: int32(w.spec.Priority), ClientCertificateDer: c.Leaf, ClientKeyDer: keys[w.purpose],
			RadiusRootDer: c.Chain[len(c.Chain)-1:], ClientSerial: c.Serial})
	}
	return fmt.Sprintf("%d client certificate(s) for %d network profile(s)%s", len(byPurpose), len(wants), kept), nil
}

func (r *run) dirDevice() directory.Device {
	return directory.Device{UUID: r.dev.UUID, ComputerName: r.dev.HostName, ComputerDN: r.dev.ComputerDN, FQDN: r.dev.FQDN()}
}

// publish is S4 for provisioning: the AMT account, linked to the Windows
// computer, with a fresh password whose key AMT gets (S10). For update
// (S13) the account is updated, published if missing, and its password
// kept unless it had to be created.
func (r *run) publish(ctx context.Context) (string, error) {
	if r.p.dir == nil {
		return "skipped: no directory configured; Kerberos stays off", nil
	}
	if r.dev.UUID == "" {
		return "", domain.InvalidField("device.uuid", "", "the AMT UUID is needed for the AD account: run discovery first")
	}
	do := r.p.dir.Publish
	if r.t.Kind == domain.KindUpdate {
		do = r.p.dir.Update
	}
	// Publish resets the password (a new kvno); a re-run after a crash
	// simply makes a newer key, which is the one phase 2 installs.
	pub, err := do(ctx, r.dirDevice())
	if err != nil {
		return "", err
	}
	r.accountDN, r.spns = pub.DN, pub.SPNs
	if err := r.kerberos(ctx, pub); err != nil {
		return "", err
	}
	verb := "updated"
	if pub.Created {
		verb = "created"
	}
	return verb + " " + pub.DN + " kvno " + fmt.Sprint(pub.KVNO), nil
}

// KerberosSecret names the sealed Kerberos key of a device (a pb.Kerberos).
func KerberosSecret(deviceID string) string { return "device/" + deviceID + "/kerberos" }

// kerberos derives AMT's Kerberos key from a fresh account password and
// keeps it sealed, so that an update that leaves the password alone can
// still give the device its key.
func (r *run) kerberos(ctx context.Context, pub directory.Published) error {
	if !r.p.site.Kerberos.Enabled {
		return nil
	}
	k := &pb.Kerberos{}
	if pub.Password == "" {
		b, err := r.p.store.GetSecret(ctx, KerberosSecret(r.dev.ID))
		if err != nil {
			return fmt.Errorf("kerberos key of %s: %w", r.dev.ID, err)
		}
		if err := proto.Unmarshal(b, k); err != nil {
			return fmt.Errorf("decode kerberos key of %s: %w", r.dev.ID, err)
		}
	} else {
		keys, err := pub.Keys()
		if err != nil {
			return err
		}
		k = &pb.Kerberos{Enabled: true, Realm: pub.Realm, KeyVersion: int32(pub.KVNO), EncryptionType: keys[0].EType,
			MasterKey: keys[0].Value, Passphrase: pub.Password.Reveal(), Salt: pub.Salt, IterationCount: 4096}
		for _, key := range keys {
			if key.EType == 23 {
				k.Rc4Key = key.Value
			}
		}
		b, err := proto.Marshal(k)
		if err != nil {
			return fmt.Errorf("encode kerberos key: %w", err)
		}
		if err := r.p.store.PutSecret(ctx, KerberosSecret(r.dev.ID), b); err != nil {
			return err
		}
	}
	k.MaxClockToleranceMinutes = int32(r.p.site.Kerberos.MaxClockTolerance)
	k.Acl = nil
	for _, sid := range r.p.site.Kerberos.AdminSIDs {
		k.Acl = append(k.Acl, &pb.KerberosACL{Sid: sid, AccessPermission: 2})
	}
	r.job.Kerberos = k
	return nil
}

// registerSPNs is S5: HTTP/fqdn:16992–16995, port-qualified only.
func (r *run) registerSPNs(ctx context.Context) (string, error) {
	if r.p.dir == nil {
		return "skipped: no directory configured", nil
	}
	if sameSPNs(r.spns, directory.SPNs(r.dev.FQDN())) {
		// Publish set them and read the account back in this run: a
		// second modify would only repeat that LDAP write.
		return "HTTP/" + r.dev.FQDN() + ":16992-16995 (set with the account)", nil
	}
	if err := r.p.dir.RegisterSPNs(ctx, r.accountDN, r.dev.FQDN()); err != nil {
		return "", err
	}
	return "HTTP/" + r.dev.FQDN() + ":16992-16995", nil
}

// sameSPNs compares SPN sets as AD does, case-insensitively.
func sameSPNs(have, want []string) bool {
	if len(have) != len(want) {
		return false
	}
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || strings.EqualFold(h, w)
		}
		if !found {
			return false
		}
	}
	return true
}

// addToGroups is S6, off by default.
func (r *run) addToGroups(ctx context.Context) (string, error) {
	if r.p.dir == nil || !r.p.site.AddToGroups {
		return "skipped: adding to 802.1X and wireless groups is off", nil
	}
	if err := r.p.dir.AddToGroups(ctx, r.accountDN); err != nil {
		return "", err
	}
	return "added to the 802.1X and wireless groups", nil
}

// deleteAccount is S17: the AMT account and its SPNs leave AD.
func (r *run) deleteAccount(ctx context.Context) (string, error) {
	if r.p.dir == nil {
		return "skipped: no directory configured", nil
	}
	deleted, err := r.p.dir.Delete(ctx, r.dev.HostName)
	if err != nil {
		return "", err
	}
	if !deleted {
		return "no AMT account to delete", nil
	}
	return "deleted the AMT account and its SPNs", nil
}

// markDevice applies a removal's marks (S18, S19). They are only ever
// set here; an administrator clears them (SetAutoProvisionSuppressed,
// CompleteRename).
func (r *run) markDevice(ctx context.Context) (string, error) {
	rename := r.t.Kind == domain.KindRemoveAll && r.t.option(OptionRename)
	suppress := rename || r.t.option(OptionSuppressAuto)
	if !suppress {
		return "skipped: auto-provisioning not suppressed", nil
	}
	if _, err := r.p.store.UpdateDevice(ctx, r.dev.ID, func(d *domain.Device) error {
		d.SuppressAutoProvision = true
		d.RenamePending = d.RenamePending || rename
		return nil
	}); err != nil {
		return "", err
	}
	if rename {
		return "rename pending; auto-provisioning suppressed", nil
	}
	return "auto-provisioning suppressed", nil
}

// checkLink is S15's guard for what phase 1 knows: a device last seen on
// an 802.1X wired link gets its 802.1X client certificate replaced only
// with the administrator's confirmation. Where the link is not known yet
// the agent detects it and applies the same rule before changing anything
// on the device.
func (r *run) checkLink(context.Context) (string, error) {
	switch {
	case r.dev.Link != domain.LinkWired8021X:
		link := string(r.dev.Link)
		if link == "" {
			link = "not known yet"
		}
		return "skipped: link " + link + "; the agent checks it again", nil
	case !r.p.site.Networks.Wired8021X:
		return "802.1X wired link; no wired 802.1X profile configured, its settings stay", nil
	case r.t.option(OptionConfirm8021X):
		return "802.1X wired link; the administrator confirmed the change", nil
	}
	return "", domain.Permanent(ErrConfirm8021X)
}

// rootCA is what a CA backend may offer besides pki.CA: its root.
type rootCA interface{ Root() []byte }

// trust gives an update or removal job what the agent verifies the
// device's TLS certificate with: the chain of the newest server
// certificate the site issued for the device, else the CA's root (a key
// generated on the device leaves no chain here). The agent checks the
// chain's root and the FQDN, so a revoked leaf still verifies: removal
// revokes before the agent connects.
func (r *run) trust(ctx context.Context) (string, error) {
	r.job.Tls = &pb.TLSMaterial{MutualAuth: r.p.site.MutualTLS}
	certs, err := r.p.store.CertificatesByDevice(ctx, r.dev.ID)
	if err != nil {
		return "", err
	}
	rank := map[domain.CertStatus]int{domain.CertInstalled: 3, domain.CertIssued: 2, domain.CertRevoked: 1}
	var best *domain.CertificateRecord
	for i, c := range certs {
		if c.Purpose != domain.PurposeServerAuth || c.JobID == "" {
			continue
		}
		if best == nil || rank[c.Status] > rank[best.Status] ||
			rank[c.Status] == rank[best.Status] && c.NotBefore.After(best.NotBefore) {
			best = &certs[i]
		}
	}
	if best != nil {
		b, err := r.p.store.GetSecret(ctx, certSecret(best.JobID, domain.PurposeServerAuth))
		switch {
		case err == nil:
			var is issued
			if err := json.Unmarshal(b, &is); err != nil {
				return "", fmt.Errorf("decode issued %s: %w", best.Serial, err)
			}
			r.job.Tls.CertificateDer, r.job.Tls.ChainDer, r.job.Tls.Serial = is.Leaf, is.Chain, is.Serial
			return "chain of server certificate " + is.Serial, nil
		case !errors.Is(err, domain.ErrNotFound):
			return "", err
		}
	}
	if rc, ok := r.p.ca.(rootCA); ok && len(rc.Root()) > 0 {
		r.job.Tls.ChainDer = [][]byte{rc.Root()}
		return "the CA's root", nil
	}
	return "skipped: no chain or root known; the agent can only use HTTP", nil
}

// credentials decides what the agent connects with and, for provisioning,
// the new admin password (S10), kept pending until phase 2 succeeds.
func (r *run) credentials(ctx context.Context) error {
	c := &pb.Credentials{Username: r.p.site.ProvisioningUser}
	current, err := r.p.store.GetSecret(ctx, AdminPasswordSecret(r.dev.ID))
	switch {
	case err == nil:
		c.Password = string(current)
		c.FallbackPasswords = []string{r.p.site.ProvisioningPassword}
	case errors.Is(err, domain.ErrNotFound):
		c.Password = r.p.site.ProvisioningPassword
	default:
		return err
	}
	pending, err := r.p.store.GetSecret(ctx, PendingPasswordSecret(r.dev.ID))
	if err != nil && !errors.Is(err, domain.ErrNotFound) {
		return err
	}
	if r.t.Kind == domain.KindProvision {
		if pending == nil {
			pw, err := r.p.site.NewPassword()
			if err != nil {
				return err
			}
			if created, err := r.p.store.CreateSecret(ctx, PendingPasswordSecret(r.dev.ID), []byte(pw)); err != nil {
				return err
			} else if !created {
				if pending, err = r.p.store.GetSecret(ctx, PendingPasswordSecret(r.dev.ID)); err != nil {
					return err
				}
			} else {
				pending = []byte(pw)
			}
		}
		c.NewAdminPassword = string(pending)
	}
	if pending != nil && string(pending) != c.Password {
		// An earlier attempt may have set it before failing.
		c.FallbackPasswords = append(c.FallbackPasswords, string(pending))
	}
	r.job.Credentials = c
	return nil
}

// queuePhase2 writes the phase-2 job into the device's subnet queue; the
// job ID makes it a no-op when an earlier run got this far.
func (r *run) queuePhase2(ctx context.Context) (string, error) {
	if err := r.credentials(ctx); err != nil {
		return "", err
	}
	r.job.Settings = &pb.Settings{IdeRedirection: r.p.site.Settings.IDERedirection, SerialOverLan: r.p.site.Settings.SerialOverLAN,
		Kvm: r.p.site.Settings.KVM, PingResponse: r.p.site.Settings.PingResponse, WebUi: r.p.site.Settings.WebUI,
		PowerScheme: r.p.site.Settings.PowerScheme}
	if r.t.Kind == domain.KindUpdate {
		r.job.Update = &pb.UpdateOptions{Confirm_8021X: r.t.option(OptionConfirm8021X)}
	}
	payload, err := proto.Marshal(r.job)
	if err != nil {
		return "", fmt.Errorf("encode phase-2 job: %w", err)
	}
	created, err := r.p.queue.Enqueue(ctx, r.dev.Subnet, r.t.JobID, payload)
	if err != nil {
		return "", err
	}
	if err := r.p.store.MoveJob(ctx, r.t.BatchID, r.t.JobID, domain.JobPhase2); err != nil && !errors.Is(err, domain.ErrConflict) {
		return "", err
	}
	if !created {
		return "phase-2 job already queued on " + r.dev.Subnet.String(), nil
	}
	return "phase-2 job queued on " + r.dev.Subnet.String(), nil
}
