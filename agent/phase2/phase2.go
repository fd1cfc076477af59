// Package phase2 is the agent's phase-2 executor: it takes one leased
// Phase2Job and does the device work over WS-Man (S7–S10 provisioning in two
// stages, S12–S15 update, S16 removal), reporting every step as it goes.
// Every step is idempotent, so re-running a job on a half-done device
// converges instead of failing.
package phase2

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/amtops/amtops/internal/amt"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/provcert"
	"github.com/amtops/amtops/internal/wsman"
	amtopsv1 "github.com/amtops/amtops/proto/amtops/v1"
)

// Step names reported to the operations log (S11).
const (
	StepConnect         = "connect"
	StepIdentity        = "identity"
	StepInstallRoot     = "install-root"
	StepMutualRoot      = "install-agent-root"
	StepInstallKey      = "install-key"
	StepInstallCert     = "install-cert"
	StepSetFQDN         = "set-fqdn"
	StepSyncClock       = "sync-clock"
	StepEnableTLS       = "enable-tls"
	StepCommit          = "commit"
	StepVerifyTLS       = "verify-tls"
	StepVerifySettings  = "verify-settings"
	StepReconnect       = "reconnect"
	StepDetectLink      = "detect-link"
	StepRedirection     = "redirection"
	StepKVM             = "kvm"
	StepPing            = "ping"
	StepWebUI           = "web-ui"
	StepPower           = "power"
	StepAdminPassword   = "admin-password"
	StepRemoveUsers     = "remove-users"
	StepKerberos        = "kerberos"
	StepKerberosACL     = "kerberos-acl"
	StepNetworkProfiles = "network-profiles"
	StepUnprovision     = "unprovision"
	StepControlMode     = "control-mode"
	StepCleanup         = "delete-replaced"
	StepMEBxPassword    = "mebx-password"
)

// SkipNoKVM is the kvm step's skip reason on a device without KVM.
const SkipNoKVM = "KVM not available on Standard Manageability"

// Warning texts callers may match on.
const (
	WarnWirelessNotUpdated = "wireless profile not updated over a wireless link"
	WarnConfirmed8021X     = "802.1X settings changed over an 802.1X wired link, as confirmed by the administrator"
	WarnNoWebUI            = "web UI asked for, but this firmware has none"
)

// Config tunes the executor. Zero values get the defaults noted.
type Config struct {
	// HTTPPort and TLSPort of the devices' WS-Man listeners; default
	// 16992 and 16993.
	HTTPPort, TLSPort int
	// CallTimeout bounds one WS-Man exchange; default 60 s.
	CallTimeout time.Duration
	// CommitWait is how long to leave a device alone after CommitChanges
	// (the firmware restarts its network stack); default 5 s.
	CommitWait time.Duration
	// CommitDeadline bounds polling the TLS port after a commit that
	// enabled TLS, counted from the commit; default 60 s.
	CommitDeadline time.Duration
	// PollInterval is the pause between TLS probes; default 500 ms.
	PollInterval time.Duration
	// Dial, when set, makes every connection (tests, proxies).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Now is the clock the device's time is set from and commit deadlines
	// are measured on; default time.Now.
	Now func() time.Time
	// SignCSR has the site sign a CSR the device generated (key_on_device):
	// it returns the leaf, the chain (intermediates then root) and the
	// serial. Required only for such jobs.
	SignCSR func(ctx context.Context, csrDER []byte) (leaf []byte, chain [][]byte, serial string, err error)
	// ProvisioningSigner signs the remote-configuration handshakes with
	// the provisioning certificate's key, which stays at the site.
	// Required only for jobs with an activation.
	ProvisioningSigner provcert.RemoteSigner
	// MutualTLS gives the agent's client certificate and its root, asked
	// once per job. Required for jobs with tls.mutual_auth.
	MutualTLS func() (*MutualTLS, error)
	// ObserveCall, when set, is told of every WS-Man call (metrics).
	ObserveCall func(action string, took time.Duration, err error)
	Log         zerolog.Logger
}

// Reporter receives step events; the agent runtime batches them into
// ReportProgress calls. Details never carry secrets.
type Reporter interface {
	Step(ctx context.Context, step string, outcome domain.Outcome, detail string)
}

// Result is the outcome of one job, ready for CompleteRequest.
type Result struct {
	Facts     *amtopsv1.DeviceFacts
	Warnings  []string
	ErrorStep string // the step that failed; empty on success
	Err       error  // never carries a secret
	Permanent bool   // retrying cannot help
}

// Executor runs phase-2 jobs. It holds no per-job state and is safe for
// concurrent use by many goroutines (one job each).
type Executor struct {
	cfg Config
}

// NewExecutor applies defaults to cfg.
func NewExecutor(cfg Config) *Executor {
	if cfg.HTTPPort == 0 {
		cfg.HTTPPort = wsman.PortHTTP
	}
	if cfg.TLSPort == 0 {
		cfg.TLSPort = wsman.PortHTTPS
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = wsman.DefaultTimeout
	}
	if cfg.CommitWait <= 0 {
		cfg.CommitWait = 5 * time.Second
	}
	if cfg.CommitDeadline <= 0 {
		cfg.CommitDeadline = 60 * time.Second
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 500 * time.Millisecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Executor{cfg: cfg}
}

// transientError marks our own errors that a later attempt may get past
// (e.g. the TLS port not answering before CommitDeadline).
type transientError struct{ err error }

func (e transientError) Error() string { return e.err.Error() }
func (e transientError) Unwrap() error { return e.err }

// errSkipped, returned by a step body, reports the step as skipped with the
// wrapped reason as detail.
type skipped struct{ reason string }

func (s skipped) Error() string { return s.reason }

// job is the state of one Run.
type job struct {
	e     *Executor
	j     *amtopsv1.Phase2Job
	rep   Reporter
	log   zerolog.Logger
	res   Result
	facts *amtopsv1.DeviceFacts
	dev   *amt.Client
	conn  connInfo
	// user is the account the client logs in as; prov the provisioning
	// session while a remote configuration has not committed.
	user   string
	prov   *provSession
	mtls   *MutualTLS
	ident  *amt.Identity
	serial string
	failed string
	// oldPassword is the admin password before this attempt changed it.
	oldPassword string
	// leaf and chain are the TLS material being installed (the job's, or
	// the site's signature of a key made on the device); certID is the
	// leaf's handle on the device once installed.
	leaf   []byte
	chain  [][]byte
	certID string
	// clientCerts are the 802.1X/Wi-Fi client certificates this attempt
	// installed; replacedTLS the TLS certificates its new leaf replaced.
	clientCerts [][]byte
	replacedTLS []string
	// tlsServed caches whether the device already served our leaf when
	// the TLS stage began (nil: not checked yet).
	tlsServed *bool
	// committed is when the last CommitChanges was sent (Config.Now).
	committed time.Time
	// link is the device's link as update detected it.
	link amtopsv1.Link
}

// step is one reported unit of a flow. A flow is a table of steps run in
// order by runSteps; the order is written once, in the table.
type step struct {
	name string
	// run does the work and returns a detail for the log (no secrets).
	// It may return skipped{…} when it finds nothing to do. A nil run
	// means the step is not part of this job and is not reported.
	run func(ctx context.Context) (string, error)
	// skip, when set, says why the step need not run ("already done",
	// "nothing configured"); "" runs it. A skipped step is reported once,
	// as skipped.
	skip func(ctx context.Context) string
}

// runSteps runs steps in order and stops at the first failure.
func (r *job) runSteps(ctx context.Context, steps []step) error {
	for _, s := range steps {
		if s.run == nil {
			continue
		}
		if s.skip != nil {
			if why := s.skip(ctx); why != "" {
				r.rep.Step(ctx, s.name, domain.OutcomeSkipped, why)
				continue
			}
		}
		if err := r.step(ctx, s.name, func() (string, error) { return s.run(ctx) }); err != nil {
			return err
		}
	}
	return nil
}

// Run executes job against job.Target.Ip and reports each step to rep.
// It never panics on bad input: a job missing a field fails permanently
// with an error naming the field.
func (e *Executor) Run(ctx context.Context, j *amtopsv1.Phase2Job, rep Reporter) Result {
	if rep == nil {
		rep = nopReporter{}
	}
	r := &job{e: e, j: j, rep: rep, facts: &amtopsv1.DeviceFacts{}, user: j.GetCredentials().GetUsername()}
	r.log = e.cfg.Log.With().Str("device", j.GetDeviceId()).Str("kind", j.GetKind().String()).Logger()
	err := r.validate()
	if err == nil {
		err = r.loadMutualTLS()
	}
	if err == nil {
		switch j.GetKind() {
		case amtopsv1.JobKind_JOB_KIND_PROVISION:
			err = r.provision(ctx)
		case amtopsv1.JobKind_JOB_KIND_UPDATE:
			err = r.runSteps(ctx, r.updateSteps())
		case amtopsv1.JobKind_JOB_KIND_REMOVE_CONFIG, amtopsv1.JobKind_JOB_KIND_REMOVE_ALL:
			err = r.runSteps(ctx, r.removeSteps())
		default:
			err = fmt.Errorf("phase2: kind %s is not a phase-2 device job", j.GetKind())
		}
	}
	if r.dev != nil {
		r.dev.WSMan().Close()
	}
	r.res.Facts = r.facts
	if err != nil {
		r.res.Err = err
		r.res.ErrorStep = r.failed
		r.res.Permanent = permanent(ctx, err)
		r.log.Warn().Str("step", r.failed).Bool("permanent", r.res.Permanent).Err(err).Msg("phase-2 job failed")
	} else {
		r.log.Info().Msg("phase-2 job done")
	}
	return r.res
}

// permanent decides retry versus give-up. Our own cancellation (agent
// stopping, lease lost) is not the device's fault: another attempt may
// finish the job, so it is transient here although wsman calls it final.
// So is a site that cannot answer right now (SignCSR during a server
// restart or overload).
func permanent(ctx context.Context, err error) bool {
	var (
		te transientError
		fe fallbackError
	)
	switch {
	case ctx.Err() != nil:
		return false
	case errors.As(err, &te):
		return false
	case errors.As(err, &fe):
		// The other transport's text must not sway the verdict.
		return !wsman.Retryable(fe.err)
	case siteBusy(err):
		return false
	default:
		return !wsman.Retryable(err)
	}
}

// siteBusy reports a gRPC error from the site that a later call may get
// past.
func siteBusy(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	return false
}

func (r *job) validate() error {
	j := r.j
	switch {
	case j.GetTarget().GetIp() == "":
		return errors.New("phase2: job: target.ip is empty")
	case net.ParseIP(j.GetTarget().GetIp()) == nil:
		return fmt.Errorf("phase2: job: target.ip %q is not an IP address", j.GetTarget().GetIp())
	case j.GetCredentials().GetUsername() == "":
		return errors.New("phase2: job: credentials.username is empty")
	}
	if j.GetKind() == amtopsv1.JobKind_JOB_KIND_PROVISION && j.GetActivation() != nil {
		if err := r.validateActivation(); err != nil {
			return err
		}
	}
	if j.GetKind() == amtopsv1.JobKind_JOB_KIND_PROVISION {
		t := j.GetTls()
		switch {
		case j.GetTarget().GetHostName() == "":
			return errors.New("phase2: job: target.host_name is empty")
		case len(t.GetChainDer()) == 0:
			return errors.New("phase2: job: tls.chain_der is empty (need at least the root)")
		case !t.GetKeyOnDevice() && len(t.GetCertificateDer()) == 0:
			return errors.New("phase2: job: tls.certificate_der is empty")
		case !t.GetKeyOnDevice() && len(t.GetPrivateKeyDer()) == 0:
			return errors.New("phase2: job: tls.private_key_der is empty and key_on_device is false")
		case t.GetKeyOnDevice() && r.e.cfg.SignCSR == nil:
			return errors.New("phase2: job: tls.key_on_device needs Config.SignCSR")
		}
	}
	return nil
}

// step runs fn as one reported step. fn may return skipped{…} to report
// the step as skipped; its detail (no secrets) goes with the OK event.
func (r *job) step(ctx context.Context, name string, fn func() (string, error)) error {
	r.rep.Step(ctx, name, domain.OutcomeStarted, "")
	detail, err := fn()
	var sk skipped
	switch {
	case errors.As(err, &sk):
		r.rep.Step(ctx, name, domain.OutcomeSkipped, sk.reason)
		return nil
	case err != nil:
		err = r.passwordDropped(ctx, err)
		r.failed = name
		r.rep.Step(ctx, name, domain.OutcomeFailed, err.Error())
		return fmt.Errorf("phase2: %s: %w", name, err)
	}
	r.rep.Step(ctx, name, domain.OutcomeOK, detail)
	return nil
}

func (r *job) warn(ctx context.Context, name, msg string) {
	r.res.Warnings = append(r.res.Warnings, msg)
	r.rep.Step(ctx, name, domain.OutcomeWarning, msg)
}

func (r *job) fqdn() string {
	t := r.j.GetTarget()
	if t.GetDomain() == "" {
		return t.GetHostName()
	}
	return t.GetHostName() + "." + t.GetDomain()
}

// connectStep finds a transport and password the device accepts;
// tlsFirst orders the transports (a provisioned device normally has HTTP
// closed).
func (r *job) connectStep(tlsFirst bool) step {
	return step{name: StepConnect, run: func(ctx context.Context) (string, error) { return r.connect(ctx, tlsFirst) }}
}

// identityStep reads UUID, version and provisioning state into the facts.
func (r *job) identityStep() step {
	return step{name: StepIdentity, run: func(ctx context.Context) (string, error) {
		id, err := r.dev.Identity(ctx)
		if err != nil {
			return "", err
		}
		r.ident = id
		r.facts.Uuid, r.facts.AmtVersion = id.UUID, id.Version
		r.facts.ProvisioningState = int32(id.ProvisioningState)
		mode, err := r.dev.ControlMode(ctx)
		if err != nil {
			return "", err
		}
		r.facts.ControlMode = int32(mode)
		sku := ""
		if id.StandardManageability() {
			sku = " (Standard Manageability)"
		}
		return fmt.Sprintf("uuid %s, AMT %s%s, provisioning state %d, control mode %s",
			id.UUID, id.Version, sku, id.ProvisioningState, amt.ControlModeName(mode)), nil
	}}
}

// controlModeStep reads the control mode a provisioning ended in (ACM
// after a remote configuration) into the facts.
func (r *job) controlModeStep() step {
	return step{name: StepControlMode, run: func(ctx context.Context) (string, error) {
		mode, err := r.dev.ControlMode(ctx)
		if err != nil {
			return "", err
		}
		r.facts.ControlMode = int32(mode)
		return amt.ControlModeName(mode), nil
	}}
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

type nopReporter struct{}

func (nopReporter) Step(context.Context, string, domain.Outcome, string) {}
