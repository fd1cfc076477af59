package admin

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/api"
)

func (s *Service) collection(ctx context.Context, name string) (domain.Collection, error) {
	if name == "" {
		return domain.Collection{}, domain.InvalidField("collection", "", "must not be empty")
	}
	c, err := s.st.GetCollection(ctx, name)
	if errors.Is(err, domain.ErrNotFound) {
		return c, fmt.Errorf("unknown collection %q: %w", name, domain.ErrNotFound)
	}
	return c, err
}

// memberCount counts a collection's members by paging its index.
func (s *Service) memberCount(ctx context.Context, name string) (int, error) {
	n := 0
	var page domain.DevicePage
	for first := true; first || page.Next != ""; first = false {
		var err error
		if page, err = s.st.Members(ctx, name, 10000, page.Next); err != nil {
			return 0, err
		}
		n += len(page.Devices)
	}
	return n, nil
}

func (s *Service) collectionPB(ctx context.Context, c domain.Collection) (*pb.Collection, error) {
	n, err := s.memberCount(ctx, c.Name)
	if err != nil {
		return nil, err
	}
	return collectionToPB(c, n), nil
}

// CreateCollection creates an empty collection; an existing name is
// refused.
func (s *Service) CreateCollection(ctx context.Context, req *pb.CreateCollectionRequest) (*pb.Collection, error) {
	c := domain.Collection{Name: req.GetName(), Description: req.GetDescription(), AutoProvision: req.GetAutoProvision(),
		CreatedAt: s.opts.Clock().UTC()}
	if err := c.Validate(); err != nil {
		return nil, api.ToStatus(err)
	}
	if _, err := s.st.GetCollection(ctx, c.Name); err == nil {
		return nil, api.ToStatus(fmt.Errorf("collection %q already exists: %w", c.Name, domain.ErrConflict))
	} else if !errors.Is(err, domain.ErrNotFound) {
		return nil, api.ToStatus(err)
	}
	if err := s.st.PutCollection(ctx, c); err != nil {
		return nil, api.ToStatus(err)
	}
	p, _ := principalFrom(ctx)
	s.opts.Log.Info().Str("collection", c.Name).Str("admin", p.Name).Bool("auto_provision", c.AutoProvision).Msg("collection created")
	return collectionToPB(c, 0), nil
}

// ListCollections returns every collection with its member count.
func (s *Service) ListCollections(ctx context.Context, _ *pb.ListCollectionsRequest) (*pb.ListCollectionsResponse, error) {
	cs, err := s.st.ListCollections(ctx)
	if err != nil {
		return nil, api.ToStatus(err)
	}
	resp := &pb.ListCollectionsResponse{}
	for _, c := range cs {
		pc, err := s.collectionPB(ctx, c)
		if err != nil {
			return nil, api.ToStatus(err)
		}
		resp.Collections = append(resp.Collections, pc)
	}
	return resp, nil
}

// UpdateCollection changes the description or turns automatic
// provisioning on or off (S22).
func (s *Service) UpdateCollection(ctx context.Context, req *pb.UpdateCollectionRequest) (*pb.Collection, error) {
	c, err := s.collection(ctx, req.GetName())
	if err != nil {
		return nil, api.ToStatus(err)
	}
	if req.AutoProvision == nil && req.Description == nil {
		return nil, api.ToStatus(domain.InvalidField("update", "", "set auto_provision or description"))
	}
	if req.AutoProvision != nil {
		c.AutoProvision = req.GetAutoProvision()
	}
	if req.Description != nil {
		c.Description = req.GetDescription()
	}
	if err := s.st.PutCollection(ctx, c); err != nil {
		return nil, api.ToStatus(err)
	}
	p, _ := principalFrom(ctx)
	s.opts.Log.Info().Str("collection", c.Name).Str("admin", p.Name).Bool("auto_provision", c.AutoProvision).Msg("collection updated")
	pc, err := s.collectionPB(ctx, c)
	if err != nil {
		return nil, api.ToStatus(err)
	}
	return pc, nil
}

// DeleteCollection removes the collection; its devices stay.
func (s *Service) DeleteCollection(ctx context.Context, req *pb.DeleteCollectionRequest) (*pb.DeleteCollectionResponse, error) {
	if _, err := s.collection(ctx, req.GetName()); err != nil {
		return nil, api.ToStatus(err)
	}
	if err := s.st.DeleteCollection(ctx, req.GetName()); err != nil {
		return nil, api.ToStatus(err)
	}
	return &pb.DeleteCollectionResponse{}, nil
}

// AddCollectionMembers adds the devices named, and/or a rule that adds
// every device it matches now and at each sweep. changed counts devices
// that were not members before.
func (s *Service) AddCollectionMembers(ctx context.Context, req *pb.CollectionMembersRequest) (*pb.CollectionMembersResponse, error) {
	c, err := s.collection(ctx, req.GetCollection())
	if err != nil {
		return nil, api.ToStatus(err)
	}
	if len(req.GetDeviceIds()) == 0 && req.GetRule() == nil {
		return nil, api.ToStatus(domain.InvalidField("members", "", "name devices or a rule"))
	}
	var rule *domain.CollectionRule
	if req.GetRule() != nil {
		r, err := ruleFromPB(req.GetRule())
		if err != nil {
			return nil, api.ToStatus(err)
		}
		rule = &r
	}
	ds, err := s.resolveAll(ctx, req.GetDeviceIds())
	if err != nil {
		return nil, api.ToStatus(err)
	}
	resp := &pb.CollectionMembersResponse{}
	var add []string
	for _, d := range ds {
		if !slices.Contains(d.Collections, c.Name) {
			add = append(add, d.ID)
		}
	}
	if err := s.st.AddMembers(ctx, c.Name, add...); err != nil {
		return nil, api.ToStatus(err)
	}
	resp.Changed = int32(len(add))
	if rule != nil {
		if !slices.Contains(c.Rules, *rule) {
			c.Rules = append(c.Rules, *rule)
			if err := s.st.PutCollection(ctx, c); err != nil {
				return nil, api.ToStatus(err)
			}
		}
		n, err := s.st.ApplyCollectionRules(ctx, c.Name)
		if err != nil {
			return nil, api.ToStatus(err)
		}
		resp.Changed += int32(n)
	}
	return resp, nil
}

// RemoveCollectionMembers takes the named devices out. With a rule, the
// rule is dropped and the members it matches (and no remaining rule
// does) are taken out too.
func (s *Service) RemoveCollectionMembers(ctx context.Context, req *pb.CollectionMembersRequest) (*pb.CollectionMembersResponse, error) {
	c, err := s.collection(ctx, req.GetCollection())
	if err != nil {
		return nil, api.ToStatus(err)
	}
	if len(req.GetDeviceIds()) == 0 && req.GetRule() == nil {
		return nil, api.ToStatus(domain.InvalidField("members", "", "name devices or a rule"))
	}
	ds, err := s.resolveAll(ctx, req.GetDeviceIds())
	if err != nil {
		return nil, api.ToStatus(err)
	}
	var remove []string
	for _, d := range ds {
		if slices.Contains(d.Collections, c.Name) {
			remove = append(remove, d.ID)
		}
	}
	if req.GetRule() != nil {
		r, err := ruleFromPB(req.GetRule())
		if err != nil {
			return nil, api.ToStatus(err)
		}
		i := slices.Index(c.Rules, r)
		if i < 0 {
			return nil, api.ToStatus(fmt.Errorf("collection %q has no rule %s: %w", c.Name, ruleString(r), domain.ErrNotFound))
		}
		c.Rules = slices.Delete(c.Rules, i, i+1)
		if err := s.st.PutCollection(ctx, c); err != nil {
			return nil, api.ToStatus(err)
		}
		var page domain.DevicePage
		for first := true; first || page.Next != ""; first = false {
			if page, err = s.st.Members(ctx, c.Name, 1000, page.Next); err != nil {
				return nil, api.ToStatus(err)
			}
			for _, d := range page.Devices {
				if r.Matches(d) && !slices.ContainsFunc(c.Rules, func(o domain.CollectionRule) bool { return o.Matches(d) }) &&
					!slices.Contains(remove, d.ID) {
					remove = append(remove, d.ID)
				}
			}
		}
	}
	if err := s.st.RemoveMembers(ctx, c.Name, remove...); err != nil {
		return nil, api.ToStatus(err)
	}
	return &pb.CollectionMembersResponse{Changed: int32(len(remove))}, nil
}

func ruleString(r domain.CollectionRule) string {
	switch {
	case r.Subnet.IsValid() && r.NamePattern != "":
		return fmt.Sprintf("(subnet %s, name %q)", r.Subnet, r.NamePattern)
	case r.Subnet.IsValid():
		return "(subnet " + r.Subnet.String() + ")"
	}
	return fmt.Sprintf("(name %q)", r.NamePattern)
}
