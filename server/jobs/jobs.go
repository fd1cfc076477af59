package jobs

import (
	"context"
	"net/netip"
	"time"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/directory"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/pki"
)

// Store is the part of the site database a job's life uses.
type Store interface {
	GetDevice(ctx context.Context, id string) (domain.Device, error)
	UpdateDevice(ctx context.Context, id string, fn func(*domain.Device) error) (domain.Device, error)
	GetJob(ctx context.Context, batchID, jobID string) (domain.Job, error)
	MoveJob(ctx context.Context, batchID, jobID string, next domain.JobState) error
	NotePhase2Attempts(ctx context.Context, batchID, jobID string, n int) error
	FinishJob(ctx context.Context, batchID, jobID string, state domain.JobState, errStep, errMsg string) (bool, error)
	CertificatesByDevice(ctx context.Context, deviceID string) ([]domain.CertificateRecord, error)
	PutCertificate(ctx context.Context, rec domain.CertificateRecord) error
	UpdateCertificateStatus(ctx context.Context, serial string, status domain.CertStatus, reason domain.RevocationReason, at time.Time) (domain.CertificateRecord, error)
	CreateSecret(ctx context.Context, name string, plaintext []byte) (bool, error)
	GetSecret(ctx context.Context, name string) ([]byte, error)
	PutSecret(ctx context.Context, name string, plaintext []byte) error
	DeleteSecret(ctx context.Context, name string) error
	AppendEvent(ctx context.Context, e domain.OperationEvent) error
}

// CA issues and revokes device certificates (pki.CA's methods jobs need).
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

// Queue is the per-subnet phase-2 lease queue (store.LeaseQueue): phase 1
// fills it, a phase-2 result settles a lease in it.
type Queue interface {
	Enqueue(ctx context.Context, subnet netip.Prefix, jobID string, payload []byte) (bool, error)
	Extend(ctx context.Context, subnet netip.Prefix, jobID, token string, ttl time.Duration) (time.Time, error)
	Defer(ctx context.Context, subnet netip.Prefix, jobID, token string, delay time.Duration) error
	Complete(ctx context.Context, subnet netip.Prefix, jobID, token string) error
	Release(ctx context.Context, subnet netip.Prefix, jobID, token string) error
	Job(ctx context.Context, subnet netip.Prefix, jobID string) (domain.QueueJob, error)
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
	// NewPassword makes the random strong admin password of S10 and the
	// new MEBx password of an activation (AMT's rules hold for both).
	NewPassword func() (string, error)
	// Activation is remote configuration; nil when off.
	Activation *Activation
}

// Config tunes a Service. Only Site is needed for phase 1; the rest have
// defaults.
type Config struct {
	Site Site
	// Actor names phase 1 in the operations log ("server/<host>").
	Actor string
	// LeaseTTL is what a result's lease proof extends the lease by; the
	// agent service's; default 60s.
	LeaseTTL time.Duration
	// MaxAttempts ends a failed phase-2 job instead of retrying it once
	// this many leases were used; keep it equal to the queue's; default 5.
	MaxAttempts int
	// RetryDelay is how long a failed, retryable job waits before the
	// reaper gives it out again; default 30s.
	RetryDelay time.Duration
	// Now; default time.Now.
	Now func() time.Time
	// Observer is told about finished jobs and phase-1 steps (metrics);
	// nil: nobody.
	Observer Observer
}

// Observer is what the service reports for metrics (server/metrics).
type Observer interface {
	// JobFinished: a job reached its final state (once per job); step is
	// the failed step of a failure.
	JobFinished(kind domain.JobKind, state domain.JobState, step string)
	// Phase1Step: one phase-1 step ended with outcome after d.
	Phase1Step(step string, outcome domain.Outcome, d time.Duration)
	// Phase1Done: a job's phase 1 ended (err nil: its phase-2 job is queued).
	Phase1Done(kind domain.JobKind, d time.Duration, err error)
}

type nopObserver struct{}

func (nopObserver) JobFinished(domain.JobKind, domain.JobState, string) {}
func (nopObserver) Phase1Step(string, domain.Outcome, time.Duration)    {}
func (nopObserver) Phase1Done(domain.JobKind, time.Duration, error)     {}

// Service is the life of every job: phase 1 (Handle, FailJob), the
// signature of a device-made key during phase 2 (SignDeviceCSR) and the
// effects of the agent's result (Complete, OnDead).
type Service struct {
	store Store
	queue Queue
	ca    CA        // nil: no device CA; SignDeviceCSR refuses
	dir   Directory // nil: no directory, S4–S6 skipped, Kerberos off
	site  Site
	cfg   Config
	log   zerolog.Logger
	now   func() time.Time
	actor string
	// afterStep, when set by tests, runs after every completed phase-1
	// step; an error stops the run there, as a crash would.
	afterStep func(step string) error
}

// New builds the service. dir may be nil.
func New(st Store, q Queue, ca CA, dir Directory, cfg Config, log zerolog.Logger) *Service {
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 60 * time.Second
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	return &Service{store: st, queue: q, ca: ca, dir: dir, site: cfg.Site, cfg: cfg, log: log, now: cfg.Now, actor: cfg.Actor}
}
