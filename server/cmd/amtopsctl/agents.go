package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	pb "github.com/amtops/amtops/proto/amtops/v1"
)

func (a *app) agentsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "agents", Aliases: []string{"agent"}, Short: "List agents, make enrollment tokens, authorize subnets"}
	var onlineWithin time.Duration
	list := &cobra.Command{
		Use:   "list",
		Short: "List enrolled agents by name: version, address, subnets, online state, jobs in flight, Hellos received",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.ListAgentsResponse, error) {
				return c.ListAgents(ctx, &pb.ListAgentsRequest{})
			})
			if err != nil {
				return err
			}
			agents := resp.GetAgents()
			slices.SortFunc(agents, func(x, y *pb.Agent) int {
				return cmp.Or(strings.Compare(x.GetName(), y.GetName()), strings.Compare(x.GetId(), y.GetId()))
			})
			views := make([]agentView, 0, len(agents))
			for _, ag := range agents {
				v := viewAgent(ag)
				hb := ag.GetLastHeartbeat()
				v.Online = hb != nil && time.Since(hb.AsTime()) <= onlineWithin
				views = append(views, v)
			}
			if a.structured() {
				return a.printData(views)
			}
			header := []string{"NAME", "AGENT", "VERSION", "ADDRESS", "SUBNETS", "ONLINE", "JOBS", "HELLOS", "LAST HEARTBEAT"}
			if a.output == "wide" {
				header = append(header, "ENROLLED")
			}
			t := a.newTable(header...)
			for _, v := range views {
				row := []string{v.Name, v.ID, v.Version, v.Address, strings.Join(v.Subnets, ","), yesNo(v.Online),
					fmt.Sprintf("%d/%d", v.JobsInFlight, v.Capacity), fmt.Sprint(v.Hellos), v.LastHeartbeat}
				if a.output == "wide" {
					row = append(row, v.EnrolledAt)
				}
				t.row(row...)
			}
			return t.flush()
		},
	}
	list.Flags().DurationVar(&onlineWithin, "online-within", 2*time.Minute,
		"an agent is online when its last heartbeat is this recent (agents beat every third of phase2.lease_ttl)")
	var subnets []string
	var ttl time.Duration
	token := &cobra.Command{
		Use:   "token --subnet CIDR...",
		Short: "Make a one-time enrollment token for a new agent, pre-authorised for subnets",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(subnets) == 0 {
				return usage("name at least one --subnet")
			}
			resp, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.CreateEnrollmentTokenResponse, error) {
				return c.CreateEnrollmentToken(ctx, &pb.CreateEnrollmentTokenRequest{Subnets: subnets, TtlSeconds: int32(ttl / time.Second)})
			})
			if err != nil {
				return err
			}
			if a.structured() {
				return a.printData(map[string]string{"token": resp.GetToken(), "expires_at": tsString(resp.GetExpiresAt())})
			}
			_, err = fmt.Fprintln(a.stdout, resp.GetToken())
			return err
		},
	}
	token.Flags().StringSliceVar(&subnets, "subnet", nil, "subnet (CIDR) the agent may serve; repeat or separate with commas")
	token.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token can be used")
	authorize := a.agentSubnetsCmd("authorize", "Let an enrolled agent serve more subnets", "to add",
		func(c pb.AdminServiceClient) func(context.Context, *pb.AuthorizeAgentRequest, ...grpc.CallOption) (*pb.Agent, error) {
			return c.AuthorizeAgent
		})
	unauthorize := a.agentSubnetsCmd("unauthorize", "Take subnets away from an agent; it stops serving them at its next call", "to remove",
		func(c pb.AdminServiceClient) func(context.Context, *pb.AuthorizeAgentRequest, ...grpc.CallOption) (*pb.Agent, error) {
			return c.UnauthorizeAgent
		})
	revoke := &cobra.Command{
		Use:   "revoke AGENT",
		Short: "Revoke an agent: its certificate is refused from its next call; its jobs go back to the queue",
		Args:  exactArgs("AGENT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.RevokeAgentResponse, error) {
				return c.RevokeAgent(ctx, &pb.RevokeAgentRequest{AgentId: args[0]})
			}); err != nil {
				return err
			}
			if a.structured() {
				return a.printData(map[string]string{"revoked": args[0]})
			}
			_, err := fmt.Fprintf(a.stdout, "agent %s revoked\n", args[0])
			return err
		},
	}
	cmd.AddCommand(list, token, authorize, unauthorize, revoke)
	return cmd
}

// agentSubnetsCmd is "agents authorize" or "agents unauthorize": the same
// request, a different call.
func (a *app) agentSubnetsCmd(verb, short, what string,
	rpc func(pb.AdminServiceClient) func(context.Context, *pb.AuthorizeAgentRequest, ...grpc.CallOption) (*pb.Agent, error)) *cobra.Command {
	var subnets []string
	cmd := &cobra.Command{
		Use:   verb + " AGENT --subnet CIDR...",
		Short: short,
		Args:  exactArgs("AGENT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(subnets) == 0 {
				return usage("name at least one --subnet")
			}
			ag, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.Agent, error) {
				return rpc(c)(ctx, &pb.AuthorizeAgentRequest{AgentId: args[0], Subnets: subnets})
			})
			if err != nil {
				return err
			}
			v := viewAgent(ag)
			if a.structured() {
				return a.printData(v)
			}
			_, err = fmt.Fprintf(a.stdout, "agent %s serves %s\n", v.ID, cmp.Or(strings.Join(v.Subnets, ", "), "no subnet"))
			return err
		},
	}
	cmd.Flags().StringSliceVar(&subnets, "subnet", nil, "subnet (CIDR) "+what+"; repeat or separate with commas")
	return cmd
}

func (a *app) tokensCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "tokens", Aliases: []string{"token"}, Short: "Manage administrators' tokens (operate role)"}
	var role string
	create := &cobra.Command{
		Use:   "create NAME --role read|operate",
		Short: "Create an admin token; it is printed once and only its hash is kept",
		Args:  exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if role != "read" && role != "operate" {
				return usage("--role %q: want read or operate", role)
			}
			resp, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.CreateAdminTokenResponse, error) {
				return c.CreateAdminToken(ctx, &pb.CreateAdminTokenRequest{Name: args[0], Role: role})
			})
			if err != nil {
				return err
			}
			if a.structured() {
				return a.printData(struct {
					Token string `json:"token"`
					tokenView
				}{resp.GetToken(), viewToken(resp.GetInfo())})
			}
			_, err = fmt.Fprintln(a.stdout, resp.GetToken())
			return err
		},
	}
	create.Flags().StringVar(&role, "role", "read", "read (list, show, watch) or operate (everything)")
	_ = create.RegisterFlagCompletionFunc("role", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"read", "operate"}, cobra.ShellCompDirectiveNoFileComp
	})
	list := &cobra.Command{
		Use:   "list",
		Short: "List token names and roles (never the tokens)",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.ListAdminTokensResponse, error) {
				return c.ListAdminTokens(ctx, &pb.ListAdminTokensRequest{})
			})
			if err != nil {
				return err
			}
			views := make([]tokenView, 0, len(resp.GetTokens()))
			for _, t := range resp.GetTokens() {
				views = append(views, viewToken(t))
			}
			if a.structured() {
				return a.printData(views)
			}
			t := a.newTable("NAME", "ROLE", "CREATED")
			for _, v := range views {
				t.row(v.Name, v.Role, v.CreatedAt)
			}
			return t.flush()
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke a name: its admin token and client certificates stop working at once",
		Args:  exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.RevokeAdminTokenResponse, error) {
				return c.RevokeAdminToken(ctx, &pb.RevokeAdminTokenRequest{Name: args[0]})
			})
			if err != nil {
				return err
			}
			if a.structured() {
				return a.printData(map[string]string{"revoked": args[0]})
			}
			_, err = fmt.Fprintf(a.stdout, "token %s revoked\n", args[0])
			return err
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}
