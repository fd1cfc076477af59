package jobs

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/provcert"
)

// The provisioning certificate at the server: loaded from its files at
// start, sealed in the site database, and used only to sign the TLS
// handshakes of the agents' remote-configuration sessions.

// StepSignProvisioning is one handshake signature with the provisioning key.
const StepSignProvisioning = "sign-provisioning"

// DefaultMEBxPassword is the MEBx password of a factory device.
const DefaultMEBxPassword = "admin"

// SecretStore is the part of the site database LoadActivation uses.
type SecretStore interface {
	PutSecret(ctx context.Context, name string, plaintext []byte) error
}

// sealedIdentity is the provisioning certificate as read from its files.
type sealedIdentity struct {
	ChainPEM       []byte `json:"chain_pem,omitempty"`
	KeyPEM         []byte `json:"key_pem,omitempty"`
	PKCS12         []byte `json:"pkcs12,omitempty"`
	PKCS12Password string `json:"pkcs12_password,omitempty"`
}

// LoadActivation reads amt.remote_config: the provisioning certificate
// (sealed into the site database once loaded, so every replica holds the
// same), the MEBx password (its file, $AMTOPS_MEBX_PASSWORD, else
// "admin") and the trusted domains. It returns nil when remote
// configuration is off. Nothing secret is logged.
func LoadActivation(ctx context.Context, st SecretStore, rc config.RemoteConfig, log zerolog.Logger) (*Activation, error) {
	if !rc.Enabled() {
		return nil, nil
	}
	const f = "amt.remote_config."
	var raw sealedIdentity
	var err error
	if rc.PKCS12File != "" {
		if raw.PKCS12, err = os.ReadFile(rc.PKCS12File); err != nil {
			return nil, fmt.Errorf("jobs: %spkcs12_file: %w", f, err)
		}
		if raw.PKCS12Password, err = config.Secret(rc.PKCS12Password, "AMTOPS_PKCS12_PASSWORD"); err != nil {
			return nil, fmt.Errorf("jobs: %spkcs12_password_file: %w", f, err)
		}
	} else {
		if raw.ChainPEM, err = os.ReadFile(rc.ChainFile); err != nil {
			return nil, fmt.Errorf("jobs: %schain_file: %w", f, err)
		}
		if raw.KeyPEM, err = os.ReadFile(rc.KeyFile); err != nil {
			return nil, fmt.Errorf("jobs: %skey_file: %w", f, err)
		}
	}
	defer clear(raw.KeyPEM)
	defer clear(raw.PKCS12)
	var id *provcert.Identity
	if raw.PKCS12 != nil {
		id, err = provcert.LoadPKCS12(raw.PKCS12, raw.PKCS12Password)
	} else {
		id, err = provcert.LoadPEM(raw.ChainPEM, raw.KeyPEM)
	}
	if err != nil {
		return nil, fmt.Errorf("jobs: %s: %w", f+"provisioning certificate", err)
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, fmt.Errorf("jobs: seal provisioning certificate: %w", err)
	}
	defer clear(b)
	if err := st.PutSecret(ctx, provisioningSecret, b); err != nil {
		return nil, fmt.Errorf("jobs: seal provisioning certificate: %w", err)
	}
	mebx, err := config.Secret(rc.MEBxPasswordFile, "AMTOPS_MEBX_PASSWORD")
	if err != nil {
		return nil, fmt.Errorf("jobs: %smebx_password_file: %w", f, err)
	}
	if mebx == "" {
		mebx = DefaultMEBxPassword
	}
	a := &Activation{Identity: id, MEBxPassword: mebx, TrustedDomain: rc.TrustedDomain}
	for i, n := range rc.Subnets {
		p, err := netip.ParsePrefix(n.CIDR)
		if err != nil {
			return nil, domain.InvalidField(fmt.Sprintf("%ssubnets[%d].cidr", f, i), n.CIDR, "not a network prefix")
		}
		a.Subnets = append(a.Subnets, SubnetDomain{Prefix: p.Masked(), Domain: n.TrustedDomain})
	}
	c := id.Chain()
	root := sha256.Sum256(c.Root().Raw)
	log.Info().Str("leaf", c.Leaf().Subject.CommonName).Str("root_sha256", fmt.Sprintf("%x", root)).
		Time("not_after", c.Leaf().NotAfter).Int("subnets", len(a.Subnets)).Msg("provisioning certificate loaded and sealed")
	return a, nil
}

// signHashes are the digests a TLS handshake signature is made over.
var signHashes = map[crypto.Hash]string{crypto.SHA1: "SHA-1", crypto.SHA256: "SHA-256", crypto.SHA384: "SHA-384", crypto.SHA512: "SHA-512"}

// SignProvisioning signs one TLS handshake digest with the provisioning
// key for the agent's remote-configuration session. Only the agent
// holding the job's live lease may ask (the lease is extended first, as
// Complete does, so a stale token is refused), only for a provision job
// phase 1 prepared with Activation, and every signature is recorded in the
// device's operations log (without the digest or signature).
func (p *Service) SignProvisioning(ctx context.Context, agentID string, l domain.LeaseRef, digest []byte, opts provcert.SignOpts) ([]byte, error) {
	a := p.site.Activation
	if a == nil || a.Identity == nil {
		return nil, fmt.Errorf("jobs: sign provisioning: remote configuration is off on this server: %w", domain.ErrConflict)
	}
	name, ok := signHashes[opts.Hash]
	if !ok {
		return nil, domain.InvalidField("hash", opts.Hash.String(), "one of SHA-1, SHA-256, SHA-384, SHA-512")
	}
	if len(digest) != opts.Hash.Size() {
		return nil, domain.InvalidField("digest", fmt.Sprint(len(digest)), fmt.Sprintf("a %s digest is %d bytes", name, opts.Hash.Size()))
	}
	if _, err := p.queue.Extend(ctx, l.Subnet, l.JobID, l.Token, p.cfg.LeaseTTL); err != nil {
		return nil, fmt.Errorf("jobs: sign provisioning for %s: %w", l.JobID, err)
	}
	job, err := p.leasedJob(ctx, l)
	if err != nil {
		return nil, err
	}
	if job.Kind != domain.KindProvision {
		return nil, fmt.Errorf("jobs: sign provisioning: job %s is a %s job, not provisioning: %w", l.JobID, job.Kind, domain.ErrConflict)
	}
	if _, err := p.store.GetSecret(ctx, activationSecret(l.JobID)); errors.Is(err, domain.ErrNotFound) {
		return nil, fmt.Errorf("jobs: sign provisioning: job %s does not activate its device: %w", l.JobID, domain.ErrConflict)
	} else if err != nil {
		return nil, err
	}
	sig, err := a.Identity.SignDigest(digest, opts)
	if err != nil {
		return nil, domain.InvalidField("hash", name, err.Error())
	}
	scheme := "PKCS#1 v1.5"
	if opts.PSS {
		scheme = "RSASSA-PSS"
	}
	detail := fmt.Sprintf("TLS handshake signed with provisioning certificate %q (%s, %s)", a.Identity.Chain().Leaf().Subject.CommonName, name, scheme)
	if err := p.store.AppendEvent(ctx, domain.OperationEvent{DeviceID: job.DeviceID, JobID: l.JobID, Phase: 2,
		Step: StepSignProvisioning, Outcome: domain.OutcomeOK, Detail: detail, Actor: agentID, Time: p.now().UTC()}); err != nil {
		// Every signature is recorded: none is handed out unrecorded.
		return nil, err
	}
	p.log.Info().Str("agent", agentID).Str("job", l.JobID).Str("device", job.DeviceID).Str("hash", name).
		Bool("pss", opts.PSS).Msg("provisioning handshake signed")
	return sig, nil
}
