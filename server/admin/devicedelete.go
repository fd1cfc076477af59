package admin

import (
	"context"
	"fmt"
	"strings"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/api"
	"github.com/amtops/amtops/server/jobs"
)

// Forgetter takes from the site what it keeps for a device being deleted
// (jobs.Service): CheckForget refuses a device the site still manages,
// ForgetDevice revokes its live certificates and deletes its secrets.
type Forgetter interface {
	CheckForget(ctx context.Context, d domain.Device) error
	ForgetDevice(ctx context.Context, d domain.Device) (jobs.Forgotten, error)
}

// Claimer hands a device to one operation at a time (batch.Service): a
// deletion holds it as a job would, so no batch starts on it meanwhile.
type Claimer interface {
	Claim(ctx context.Context, deviceID, ref string) (holder string, ok bool, err error)
	Release(ctx context.Context, deviceID, ref string) error
}

// DeleteDevice forgets one device named by ID, FQDN or IP.
func (s *Service) DeleteDevice(ctx context.Context, req *pb.DeleteDeviceRequest) (*pb.DeleteDeviceResponse, error) {
	if s.opts.Forgetter == nil || s.opts.Claimer == nil {
		return nil, api.ToStatus(fmt.Errorf("delete device: not available on this server: %w", domain.ErrConflict))
	}
	d, err := s.resolve(ctx, req.GetId())
	if err != nil {
		return nil, api.ToStatus(err)
	}
	p, _ := principalFrom(ctx)
	// Refuse a managed device before taking it from a job's reach.
	if err := s.opts.Forgetter.CheckForget(ctx, d); err != nil {
		return nil, api.ToStatus(err)
	}
	ref := "delete:" + d.ID
	holder, ok, err := s.opts.Claimer.Claim(ctx, d.ID, ref)
	if err != nil {
		return nil, api.ToStatus(fmt.Errorf("delete device %s: %w", d.ID, err))
	}
	if !ok {
		batchID, _, _ := strings.Cut(holder, ":")
		return nil, api.ToStatus(fmt.Errorf("device %s (%s) is busy with job %s: wait for it to end or cancel batch %s, then delete it: %w",
			d.ID, d.FQDN(), holder, batchID, domain.ErrConflict))
	}
	defer func() {
		if err := s.opts.Claimer.Release(context.WithoutCancel(ctx), d.ID, ref); err != nil {
			s.opts.Log.Warn().Err(err).Str("device", d.ID).Msg("deleted device's claim not released")
		}
	}()
	// Read it again under the claim: a job that ended just before may
	// have provisioned it.
	if d, err = s.st.GetDevice(ctx, d.ID); err != nil {
		return nil, api.ToStatus(err)
	}
	gone, err := s.opts.Forgetter.ForgetDevice(ctx, d)
	if err != nil {
		return nil, api.ToStatus(err)
	}
	if err := s.st.DeleteDevice(ctx, d.ID); err != nil {
		return nil, api.ToStatus(err)
	}
	detail := fmt.Sprintf("device deleted by %s: %d certificate(s) revoked, %d secret(s) deleted, removed from %d collection(s)",
		p.Name, len(gone.Revoked), gone.Secrets, len(d.Collections))
	if len(gone.Revoked) > 0 {
		detail += " (revoked " + strings.Join(gone.Revoked, ", ") + ")"
	}
	s.logEvent(ctx, d.ID, "delete", detail)
	s.opts.Log.Info().Str("device", d.ID).Str("fqdn", d.FQDN()).Str("admin", p.Name).Int("revoked", len(gone.Revoked)).
		Int("secrets", gone.Secrets).Msg("device deleted")
	return &pb.DeleteDeviceResponse{Id: d.ID, Fqdn: d.FQDN(), RevokedSerials: gone.Revoked, SecretsDeleted: int32(gone.Secrets),
		Collections: d.Collections}, nil
}
