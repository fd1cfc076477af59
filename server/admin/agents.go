package admin

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/api"
)

// maxEnrollmentTTL bounds how long a one-time enrollment token lives.
const maxEnrollmentTTL = 7 * 24 * time.Hour

// CreateEnrollmentToken makes a one-time token an agent enrolls with,
// pre-authorised for subnets.
func (s *Service) CreateEnrollmentToken(ctx context.Context, req *pb.CreateEnrollmentTokenRequest) (*pb.CreateEnrollmentTokenResponse, error) {
	p, err := principalFrom(ctx)
	if err != nil {
		return nil, err
	}
	subnets, err := prefixesFrom("subnets", req.GetSubnets())
	if err != nil {
		return nil, api.ToStatus(err)
	}
	ttl := time.Duration(req.GetTtlSeconds()) * time.Second
	if ttl == 0 {
		ttl = time.Hour
	}
	if ttl < 0 || ttl > maxEnrollmentTTL {
		return nil, api.ToStatus(domain.InvalidField("ttl_seconds", fmt.Sprint(req.GetTtlSeconds()), "must be 1 s to 7 days"))
	}
	tok, err := s.st.CreateEnrollmentToken(ctx, domain.Enrollment{Subnets: subnets, CreatedBy: p.Name}, ttl)
	if err != nil {
		return nil, api.ToStatus(err)
	}
	s.opts.Log.Info().Str("admin", p.Name).Strs("subnets", req.GetSubnets()).Dur("ttl", ttl).Msg("enrollment token created")
	return &pb.CreateEnrollmentTokenResponse{Token: tok, ExpiresAt: ts(s.opts.Clock().Add(ttl))}, nil
}

// AuthorizeAgent lets an enrolled agent serve more subnets.
func (s *Service) AuthorizeAgent(ctx context.Context, req *pb.AuthorizeAgentRequest) (*pb.Agent, error) {
	return s.changeSubnets(ctx, req, "agent authorized", func(a *domain.Agent, subnets []netip.Prefix) error {
		for _, sn := range subnets {
			if !slices.Contains(a.Subnets, sn) {
				a.Subnets = append(a.Subnets, sn)
			}
		}
		return nil
	})
}

// UnauthorizeAgent takes subnets away from an agent. Its calls for them
// are refused from the next one on (AgentService reads the agent record
// on every call); jobs it holds there return to the queue at lease expiry.
func (s *Service) UnauthorizeAgent(ctx context.Context, req *pb.AuthorizeAgentRequest) (*pb.Agent, error) {
	return s.changeSubnets(ctx, req, "agent unauthorized", func(a *domain.Agent, subnets []netip.Prefix) error {
		for _, sn := range subnets {
			if !slices.Contains(a.Subnets, sn) {
				return domain.InvalidField("subnets", sn.String(), "agent "+a.ID+" does not serve it")
			}
		}
		a.Subnets = slices.DeleteFunc(a.Subnets, func(sn netip.Prefix) bool { return slices.Contains(subnets, sn) })
		return nil
	})
}

// changeSubnets is the body of AuthorizeAgent and UnauthorizeAgent: check
// the request, apply change to the agent's subnets, store and log it.
func (s *Service) changeSubnets(ctx context.Context, req *pb.AuthorizeAgentRequest, msg string,
	change func(*domain.Agent, []netip.Prefix) error) (*pb.Agent, error) {
	p, err := principalFrom(ctx)
	if err != nil {
		return nil, err
	}
	subnets, err := prefixesFrom("subnets", req.GetSubnets())
	if err != nil {
		return nil, api.ToStatus(err)
	}
	if len(subnets) == 0 {
		return nil, api.ToStatus(domain.InvalidField("subnets", "", "name at least one subnet"))
	}
	a, err := s.agent(ctx, req.GetAgentId())
	if err != nil {
		return nil, api.ToStatus(err)
	}
	if err := change(&a, subnets); err != nil {
		return nil, api.ToStatus(err)
	}
	if err := s.st.PutAgent(ctx, a); err != nil {
		return nil, api.ToStatus(err)
	}
	s.opts.Log.Info().Str("admin", p.Name).Str("agent", a.ID).Strs("subnets", req.GetSubnets()).Msg(msg)
	return agentToPB(a), nil
}

// RevokeAgent forgets an agent. AgentService looks the agent up on every
// call, so its certificate is refused from the next call on, and agent IDs
// are never reused, so no later enrollment brings it back.
func (s *Service) RevokeAgent(ctx context.Context, req *pb.RevokeAgentRequest) (*pb.RevokeAgentResponse, error) {
	p, err := principalFrom(ctx)
	if err != nil {
		return nil, err
	}
	a, err := s.agent(ctx, req.GetAgentId())
	if err != nil {
		return nil, api.ToStatus(err)
	}
	if err := s.st.DeleteAgent(ctx, a.ID); err != nil {
		return nil, api.ToStatus(err)
	}
	s.opts.Log.Info().Str("admin", p.Name).Str("agent", a.ID).Msg("agent revoked")
	return &pb.RevokeAgentResponse{}, nil
}

func (s *Service) agent(ctx context.Context, id string) (domain.Agent, error) {
	if id == "" {
		return domain.Agent{}, domain.InvalidField("agent_id", "", "required")
	}
	a, err := s.st.GetAgent(ctx, id)
	if errors.Is(err, domain.ErrNotFound) {
		return a, fmt.Errorf("unknown agent %q: %w", id, domain.ErrNotFound)
	}
	return a, err
}

// ListAgents returns every enrolled agent.
func (s *Service) ListAgents(ctx context.Context, _ *pb.ListAgentsRequest) (*pb.ListAgentsResponse, error) {
	as, err := s.st.ListAgents(ctx)
	if err != nil {
		return nil, api.ToStatus(err)
	}
	resp := &pb.ListAgentsResponse{}
	now := s.opts.Clock()
	for _, a := range as {
		pa := agentToPB(a)
		pa.Online = s.online(a, now)
		resp.Agents = append(resp.Agents, pa)
	}
	return resp, nil
}

// CreateAdminToken makes a new administrator token; it is returned once.
func (s *Service) CreateAdminToken(ctx context.Context, req *pb.CreateAdminTokenRequest) (*pb.CreateAdminTokenResponse, error) {
	p, err := principalFrom(ctx)
	if err != nil {
		return nil, err
	}
	tok, rec, err := s.st.CreateAdminToken(ctx, req.GetName(), domain.AdminRole(req.GetRole()))
	if err != nil {
		return nil, api.ToStatus(err)
	}
	s.opts.Log.Info().Str("admin", p.Name).Str("token_name", rec.Name).Str("role", string(rec.Role)).Msg("admin token created")
	return &pb.CreateAdminTokenResponse{Token: tok, Info: adminTokenToPB(rec)}, nil
}

// ListAdminTokens lists token names and roles, never the tokens.
func (s *Service) ListAdminTokens(ctx context.Context, _ *pb.ListAdminTokensRequest) (*pb.ListAdminTokensResponse, error) {
	ts, err := s.st.ListAdminTokens(ctx)
	if err != nil {
		return nil, api.ToStatus(err)
	}
	resp := &pb.ListAdminTokensResponse{}
	for _, t := range ts {
		resp.Tokens = append(resp.Tokens, adminTokenToPB(t))
	}
	return resp, nil
}

// RevokeAdminToken revokes a name: its token and every certificate
// issued to it stop working at once.
func (s *Service) RevokeAdminToken(ctx context.Context, req *pb.RevokeAdminTokenRequest) (*pb.RevokeAdminTokenResponse, error) {
	p, err := principalFrom(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.st.RevokeAdminToken(ctx, req.GetName()); err != nil {
		if errors.Is(err, domain.ErrNotFound) {
			err = fmt.Errorf("unknown admin token %q (no token or certificate has that name): %w", req.GetName(), domain.ErrNotFound)
		}
		return nil, api.ToStatus(err)
	}
	s.opts.Log.Info().Str("admin", p.Name).Str("token_name", req.GetName()).Msg("admin token revoked")
	return &pb.RevokeAdminTokenResponse{}, nil
}
