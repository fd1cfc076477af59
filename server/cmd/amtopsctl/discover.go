package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// discoverCmd asks the agents to sweep their subnets now (S21), so that
// devices come in without a CSV import. What they find arrives through
// the agents' reports; there is no per-device job to watch.
func (a *app) discoverCmd() *cobra.Command {
	var subnets []string
	cmd := &cobra.Command{
		Use:   "discover [--subnet CIDR...]",
		Short: "Ask the agents to sweep their subnets for AMT devices now (every authorised subnet by default)",
		Example: `  amtopsctl discover
  amtopsctl discover --subnet 10.1.2.0/24
  amtopsctl devices list --subnet 10.1.2.0/24   # as the agent reports`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.Batch, error) {
				return c.StartBatch(ctx, &pb.StartBatchRequest{Kind: pb.JobKind_JOB_KIND_DISCOVER, Subnets: subnets})
			})
			if err != nil {
				return err
			}
			var sweeps []string
			if b.GetId() != "" {
				sweeps = strings.Split(b.GetId(), ",")
			}
			if a.structured() {
				err = a.printData(map[string]any{"sweeps": sweeps, "subnets": subnets})
			} else if len(sweeps) > 0 {
				_, err = fmt.Fprintf(a.stdout, "%d sweep(s) queued for the agents; devices appear in 'amtopsctl devices list' as they report\n", len(sweeps))
			}
			if err == nil && len(sweeps) == 0 {
				what := "any subnet"
				if len(subnets) > 0 {
					what = strings.Join(subnets, ", ")
				}
				return failed("no agent serves %s: nothing to sweep", what)
			}
			return err
		},
	}
	cmd.Flags().StringSliceVar(&subnets, "subnet", nil, "only this subnet (CIDR); repeat or comma-separate for several")
	return cmd
}
