package admin

import (
	"net/netip"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/wire"
	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// All conversion between the domain model and the AdminService wire types
// happens in this file.

// statusFrom converts a wire status; UNSPECIFIED is "" (no filter).
func statusFrom(field string, s pb.DeviceStatus) (domain.Status, error) {
	if s == pb.DeviceStatus_DEVICE_STATUS_UNSPECIFIED {
		return "", nil
	}
	st := wire.StatusFrom(s)
	if st == "" {
		return "", domain.InvalidField(field, s.String(), "unknown status")
	}
	return st, nil
}

func kindFrom(k pb.JobKind) (domain.JobKind, error) {
	kind := wire.KindFrom(k)
	if kind == "" {
		return "", domain.InvalidField("kind", k.String(), "name an operation: provision, update, remove-config, remove-all")
	}
	return kind, nil
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func prefixString(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func deviceToPB(d domain.Device) *pb.Device {
	return &pb.Device{
		Id: d.ID, Uuid: d.UUID, HostName: d.HostName, Domain: d.Domain, Fqdn: d.FQDN(),
		Ip: addrString(d.IP), Subnet: prefixString(d.Subnet), ComputerDn: d.ComputerDN, AmtVersion: d.AMTVersion,
		Status: wire.Status(d.Status), ProvisioningState: int32(d.State), Link: wire.Link(d.Link),
		Collections: d.Collections, SuppressAutoProvision: d.SuppressAutoProvision, RenamePending: d.RenamePending,
		LastError: d.LastError, LastErrorStep: d.LastErrorStep, Warnings: d.Warnings,
		UpdatedAt: ts(d.UpdatedAt), ProvisionedAt: ts(d.ProvisionedAt), ControlMode: d.ControlMode.String(),
		AdAccountDn: d.ADAccountDN, Spns: d.SPNs,
	}
}

// deviceFromPB reads the fields an administrator may set on a device.
// Status UNSPECIFIED becomes "" so that the caller can keep the old one.
func deviceFromPB(p *pb.Device) (domain.Device, error) {
	d := domain.Device{ID: p.GetId(), UUID: p.GetUuid(), HostName: p.GetHostName(), Domain: p.GetDomain(),
		ComputerDN: p.GetComputerDn(), Collections: p.GetCollections()}
	var err error
	if d.Status, err = statusFrom("device.status", p.GetStatus()); err != nil {
		return d, err
	}
	if p.GetLink() != pb.Link_LINK_UNSPECIFIED {
		l := wire.LinkFrom(p.GetLink())
		if l == "" {
			return d, domain.InvalidField("device.link", p.GetLink().String(), "unknown link")
		}
		d.Link = l
	}
	if s := p.GetIp(); s != "" {
		if d.IP, err = netip.ParseAddr(s); err != nil {
			return d, domain.InvalidField("device.ip", s, "not an IP address")
		}
	}
	if s := p.GetSubnet(); s != "" {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return d, domain.InvalidField("device.subnet", s, "not a CIDR prefix")
		}
		d.Subnet = pfx.Masked()
	}
	return d, nil
}

func eventToPB(e domain.OperationEvent) *pb.OperationEvent {
	return &pb.OperationEvent{DeviceId: e.DeviceID, JobId: e.JobID, Phase: int32(e.Phase), Step: e.Step,
		Outcome: wire.Outcome(e.Outcome), Detail: e.Detail, Actor: e.Actor, Time: ts(e.Time)}
}

func ruleToPB(r domain.CollectionRule) *pb.MemberRule {
	return &pb.MemberRule{Subnet: prefixString(r.Subnet), NamePattern: r.NamePattern}
}

func ruleFromPB(p *pb.MemberRule) (domain.CollectionRule, error) {
	r := domain.CollectionRule{NamePattern: p.GetNamePattern()}
	if s := p.GetSubnet(); s != "" {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return r, domain.InvalidField("rule.subnet", s, "not a CIDR prefix")
		}
		r.Subnet = pfx.Masked()
	}
	return r, r.Validate()
}

func collectionToPB(c domain.Collection, members int) *pb.Collection {
	out := &pb.Collection{Name: c.Name, Description: c.Description, AutoProvision: c.AutoProvision,
		Members: int32(members), CreatedAt: ts(c.CreatedAt)}
	for _, r := range c.Rules {
		out.Rules = append(out.Rules, ruleToPB(r))
	}
	return out
}

func batchToPB(b domain.Batch) *pb.Batch {
	return &pb.Batch{Id: b.ID, Kind: wire.Kind(b.Kind), Origin: b.Origin, Total: int32(b.Total),
		Succeeded: int32(b.Succeeded), Failed: int32(b.Failed), Cancelled: int32(b.Cancelled), Done: b.Done(),
		CreatedAt: ts(b.CreatedAt), Requester: b.Requester, Options: b.Options, CancelRequested: b.CancelRequested,
		Warnings: b.Warnings}
}

func jobToPB(j domain.Job) *pb.Job {
	return &pb.Job{Id: j.ID, DeviceId: j.DeviceID, Kind: wire.Kind(j.Kind), State: string(j.State),
		Attempts: int32(j.Attempts), Phase2Attempts: int32(j.Phase2Attempts), LastError: j.LastError, ErrorStep: j.ErrorStep}
}

func agentToPB(a domain.Agent) *pb.Agent {
	out := &pb.Agent{Id: a.ID, Name: a.Name, LastHeartbeat: ts(a.LastHeartbeat), EnrolledAt: ts(a.EnrolledAt),
		JobsInFlight: int32(a.InFlight), Capacity: int32(a.Capacity), Version: a.Version, Address: a.Address, HellosReceived: a.Hellos}
	for _, s := range a.Subnets {
		out.Subnets = append(out.Subnets, s.String())
	}
	return out
}

func adminTokenToPB(t domain.AdminToken) *pb.AdminToken {
	return &pb.AdminToken{Name: t.Name, Role: string(t.Role), CreatedAt: ts(t.CreatedAt)}
}

// prefixesFrom parses CIDR prefixes named in field.
func prefixesFrom(field string, ss []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, domain.InvalidField(field, s, "not a CIDR prefix")
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
