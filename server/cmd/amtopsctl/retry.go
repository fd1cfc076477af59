package main

import (
	"context"

	"github.com/spf13/cobra"

	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// retryCmd starts a new batch of the same kind and options for the
// devices whose jobs in a batch failed; those that succeeded are left
// alone.
func (a *app) retryCmd() *cobra.Command {
	var wait bool
	cmd := &cobra.Command{
		Use:   "retry BATCH",
		Short: "Run a batch's operation again for its failed devices only",
		Args:  exactArgs("BATCH"),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.Batch, error) {
				return c.GetBatch(ctx, &pb.GetBatchRequest{Id: args[0]})
			})
			if err != nil {
				return err
			}
			opts := b.GetOptions()
			switch {
			case opts["rename"] == "true":
				return usage("batch %s is a rename: run amtopsctl rename begin again for its devices", b.GetId())
			case b.GetKind() == pb.JobKind_JOB_KIND_DISCOVER || b.GetKind() == pb.JobKind_JOB_KIND_UNSPECIFIED:
				return usage("batch %s (%s) cannot be retried per device", b.GetId(), kindName(b.GetKind()))
			}
			devices, err := a.failedDevices(cmd, b.GetId())
			if err != nil {
				return err
			}
			if len(devices) == 0 {
				return failed("batch %s has no failed devices to retry", b.GetId())
			}
			return a.runBatch(cmd, wait, func(ctx context.Context, c pb.AdminServiceClient) (*pb.Batch, error) {
				return c.StartBatch(ctx, &pb.StartBatchRequest{Kind: b.GetKind(), DeviceIds: devices,
					SuppressAutoProvision: opts["suppress_auto"] == "true", Confirm_8021X: opts["confirm_8021x"] == "true"})
			})
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the new batch with a progress bar until every device is done")
	return cmd
}

// failedDevices lists the devices of every failed job of a batch.
func (a *app) failedDevices(cmd *cobra.Command, batch string) ([]string, error) {
	var out []string
	cursor := ""
	for {
		resp, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.ListBatchJobsResponse, error) {
			return c.ListBatchJobs(ctx, &pb.ListBatchJobsRequest{BatchId: batch, State: "failed", Limit: 1000, Cursor: cursor})
		})
		if err != nil {
			return nil, err
		}
		for _, j := range resp.GetJobs() {
			out = append(out, j.GetDeviceId())
		}
		if cursor = resp.GetNextCursor(); cursor == "" {
			return out, nil
		}
	}
}
