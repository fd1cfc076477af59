package admin

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/api"
)

// resolve finds a device by ID, FQDN or IP address, so that
// administrators can name devices the way they know them. An unknown
// reference is domain.ErrNotFound naming it.
func (s *Service) resolve(ctx context.Context, ref string) (domain.Device, error) {
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return domain.Device{}, domain.InvalidField("device", "", "must not be empty")
	}
	d, err := s.st.GetDevice(ctx, ref)
	if err == nil || !errors.Is(err, domain.ErrNotFound) {
		return d, err
	}
	if low := strings.ToLower(ref); low != ref {
		if d, err := s.st.GetDevice(ctx, low); err == nil || !errors.Is(err, domain.ErrNotFound) {
			return d, err
		}
	}
	if ip, perr := netip.ParseAddr(ref); perr == nil {
		ds, err := s.st.DevicesByIP(ctx, ip)
		if err != nil {
			return domain.Device{}, err
		}
		switch len(ds) {
		case 1:
			return ds[0], nil
		case 0:
		default:
			ids := make([]string, len(ds))
			for i, d := range ds {
				ids[i] = d.ID
			}
			return domain.Device{}, domain.InvalidField("device", ref, "address recorded for several devices ("+strings.Join(ids, ", ")+"): name one by ID")
		}
	} else if strings.Contains(ref, ".") {
		d, err := s.st.DeviceByFQDN(ctx, ref)
		if err == nil || !errors.Is(err, domain.ErrNotFound) {
			return d, err
		}
	}
	return domain.Device{}, fmt.Errorf("unknown device %q: %w", ref, domain.ErrNotFound)
}

// resolveAll resolves references to device IDs, each once, in order.
func (s *Service) resolveAll(ctx context.Context, refs []string) ([]domain.Device, error) {
	out := make([]domain.Device, 0, len(refs))
	seen := make(map[string]bool, len(refs))
	for _, r := range refs {
		d, err := s.resolve(ctx, r)
		if err != nil {
			return nil, err
		}
		if !seen[d.ID] {
			seen[d.ID] = true
			out = append(out, d)
		}
	}
	return out, nil
}

func ids(ds []domain.Device) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

// ListDevices pages through devices, filtered by subnet, status or
// collection.
func (s *Service) ListDevices(ctx context.Context, req *pb.ListDevicesRequest) (*pb.ListDevicesResponse, error) {
	page, err := s.listDevices(ctx, req)
	if err != nil {
		return nil, api.ToStatus(err)
	}
	resp := &pb.ListDevicesResponse{NextCursor: page.Next}
	for _, d := range page.Devices {
		resp.Devices = append(resp.Devices, deviceToPB(d))
	}
	return resp, nil
}

// listDevices is one page of the devices req's filter selects.
func (s *Service) listDevices(ctx context.Context, req *pb.ListDevicesRequest) (domain.DevicePage, error) {
	f := domain.DeviceFilter{Collection: req.GetCollection(), Limit: int(req.GetLimit()), Cursor: req.GetCursor(),
		Query: strings.TrimSpace(req.GetQuery()), Generation: strings.TrimSpace(req.GetGeneration()), Failed: req.GetFailed(),
		Suppressed: req.GetSuppressed()}
	var err error
	if f.Status, err = statusFrom("status", req.GetStatus()); err != nil {
		return domain.DevicePage{}, err
	}
	if sn := req.GetSubnet(); sn != "" {
		p, err := netip.ParsePrefix(sn)
		if err != nil {
			return domain.DevicePage{}, domain.InvalidField("subnet", sn, "not a CIDR prefix")
		}
		f.Subnet = p.Masked()
	}
	if f.Collection != "" {
		if _, err := s.st.GetCollection(ctx, f.Collection); err != nil {
			return domain.DevicePage{}, fmt.Errorf("unknown collection %q: %w", f.Collection, domain.ErrNotFound)
		}
	}
	return s.st.ListDevices(ctx, f)
}

// GetDevice returns one device named by ID, FQDN or IP.
func (s *Service) GetDevice(ctx context.Context, req *pb.GetDeviceRequest) (*pb.Device, error) {
	d, err := s.resolve(ctx, req.GetId())
	if err != nil {
		return nil, api.ToStatus(err)
	}
	certs, err := s.deviceCerts(ctx, d.ID)
	if err != nil {
		return nil, api.ToStatus(err)
	}
	out := deviceToPB(d)
	for _, c := range certs {
		out.Certificates = append(out.Certificates, certToPB(c))
	}
	return out, nil
}

// GetDeviceLog returns a device's newest operations-log events (S11).
func (s *Service) GetDeviceLog(ctx context.Context, req *pb.GetDeviceLogRequest) (*pb.GetDeviceLogResponse, error) {
	d, err := s.resolve(ctx, req.GetId())
	if errors.Is(err, domain.ErrNotFound) {
		// A deleted device's log is kept: by its ID it is still read.
		d, err = domain.Device{ID: strings.TrimSpace(req.GetId())}, s.hasLog(ctx, req.GetId(), err)
	}
	if err != nil {
		return nil, api.ToStatus(err)
	}
	limit := int(req.GetLimit())
	if limit <= 0 {
		limit = 200
	}
	evs, err := s.st.Events(ctx, d.ID, limit)
	if err != nil {
		return nil, api.ToStatus(err)
	}
	resp := &pb.GetDeviceLogResponse{}
	for _, e := range evs {
		resp.Events = append(resp.Events, eventToPB(e))
	}
	return resp, nil
}

// hasLog is nil when id has an operations log, else notFound.
func (s *Service) hasLog(ctx context.Context, id string, notFound error) error {
	evs, err := s.st.Events(ctx, strings.TrimSpace(id), 1)
	if err != nil {
		return err
	}
	if len(evs) == 0 {
		return notFound
	}
	return nil
}

// PutDevices creates devices or updates the fields given. A new device
// without a status is unknown; an existing device keeps every field the
// request leaves empty.
func (s *Service) PutDevices(ctx context.Context, req *pb.PutDevicesRequest) (*pb.PutDevicesResponse, error) {
	in := make([]domain.Device, 0, len(req.GetDevices()))
	for i, p := range req.GetDevices() {
		d, err := deviceFromPB(p)
		if err != nil {
			return nil, api.ToStatus(fmt.Errorf("devices[%d]: %w", i, err))
		}
		if d.ID == "" {
			return nil, api.ToStatus(fmt.Errorf("devices[%d]: %w", i, domain.InvalidField("device.id", "", "must not be empty")))
		}
		in = append(in, d)
	}
	resp := &pb.PutDevicesResponse{}
	for _, d := range in {
		cur, err := s.st.GetDevice(ctx, d.ID)
		if errors.Is(err, domain.ErrNotFound) {
			if d.Status == "" {
				d.Status = domain.StatusUnknown
			}
			if err := s.checkCollections(ctx, d.Collections); err != nil {
				return nil, api.ToStatus(err)
			}
			if err := s.st.PutDevice(ctx, d); err != nil {
				return nil, api.ToStatus(err)
			}
			resp.Created++
			continue
		}
		if err != nil {
			return nil, api.ToStatus(err)
		}
		if err := s.checkCollections(ctx, d.Collections); err != nil {
			return nil, api.ToStatus(err)
		}
		_, err = s.st.UpdateDevice(ctx, cur.ID, func(c *domain.Device) error {
			mergeDevice(c, d)
			return nil
		})
		if err != nil {
			return nil, api.ToStatus(err)
		}
		resp.Updated++
	}
	return resp, nil
}

func mergeDevice(c *domain.Device, d domain.Device) {
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&c.UUID, d.UUID)
	set(&c.HostName, d.HostName)
	set(&c.Domain, d.Domain)
	set(&c.ComputerDN, d.ComputerDN)
	if d.IP.IsValid() {
		c.IP = d.IP
	}
	if d.Subnet.IsValid() {
		c.Subnet = d.Subnet
	}
	if d.Status != "" {
		c.Status = d.Status
	}
	if d.Link != "" {
		c.Link = d.Link
	}
	c.Collections = append(c.Collections, d.Collections...)
}

func (s *Service) checkCollections(ctx context.Context, names []string) error {
	for _, n := range names {
		if _, err := s.st.GetCollection(ctx, n); err != nil {
			if errors.Is(err, domain.ErrNotFound) {
				return fmt.Errorf("unknown collection %q: %w", n, domain.ErrNotFound)
			}
			return err
		}
	}
	return nil
}

// SetAutoProvisionSuppressed keeps sweeps away from devices, or lets
// them back (S18).
func (s *Service) SetAutoProvisionSuppressed(ctx context.Context, req *pb.SetAutoProvisionSuppressedRequest) (*pb.SetAutoProvisionSuppressedResponse, error) {
	if len(req.GetDeviceIds()) == 0 {
		return nil, api.ToStatus(domain.InvalidField("device_ids", "", "name at least one device"))
	}
	ds, err := s.resolveAll(ctx, req.GetDeviceIds())
	if err != nil {
		return nil, api.ToStatus(err)
	}
	p, _ := principalFrom(ctx)
	resp := &pb.SetAutoProvisionSuppressedResponse{}
	for _, d := range ds {
		changed := false
		_, err := s.st.UpdateDevice(ctx, d.ID, func(c *domain.Device) error {
			changed = c.SuppressAutoProvision != req.GetSuppressed()
			c.SuppressAutoProvision = req.GetSuppressed()
			return nil
		})
		if err != nil {
			return nil, api.ToStatus(err)
		}
		if changed {
			resp.Changed++
			detail := "automatic provisioning allowed"
			if req.GetSuppressed() {
				detail = "automatic provisioning suppressed"
			}
			s.logEvent(ctx, d.ID, "auto-provision", detail+" by "+p.Name)
		}
	}
	return resp, nil
}

// logEvent records an administrator's change in the device's operations
// log; failing to log does not undo the change.
func (s *Service) logEvent(ctx context.Context, deviceID, step, detail string) {
	err := s.st.AppendEvent(ctx, domain.OperationEvent{DeviceID: deviceID, Step: step, Outcome: domain.OutcomeOK,
		Detail: detail, Actor: "admin", Time: s.opts.Clock().UTC()})
	if err != nil {
		s.opts.Log.Warn().Err(err).Str("device", deviceID).Str("step", step).Msg("operations log append failed")
	}
}
