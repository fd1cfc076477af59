package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// batchResult is what a bulk command prints: the batch and the jobs that
// failed (a device refused at once has error step "refused").
type batchResult struct {
	Batch      batchView `json:"batch"`
	FailedJobs []jobView `json:"failed_jobs"`
}

// maxWatchRetries bounds reconnections of one watch in a row.
const maxWatchRetries = 5

// maxListedFailures bounds the failed jobs a command prints.
const maxListedFailures = 50

// failedJobs lists up to maxListedFailures failed jobs of a batch.
func (a *app) failedJobs(cmd *cobra.Command, b *pb.Batch) ([]jobView, error) {
	out := []jobView{}
	if b.GetFailed() == 0 {
		return out, nil
	}
	resp, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.ListBatchJobsResponse, error) {
		return c.ListBatchJobs(ctx, &pb.ListBatchJobsRequest{BatchId: b.GetId(), State: "failed", Limit: maxListedFailures})
	})
	if err != nil {
		return nil, err
	}
	for _, j := range resp.GetJobs() {
		out = append(out, viewJob(j))
	}
	return out, a.nameJobs(cmd, out)
}

// nameJobs fills in each job's device FQDN, which people read better
// than a UUID: one GetDevice per job for a few, one listing for many. A
// device deleted since keeps its ID alone.
func (a *app) nameJobs(cmd *cobra.Command, jobs []jobView) error {
	names := map[string]string{}
	if len(jobs) > 100 {
		all, err := a.listDevices(cmd, &pb.ListDevicesRequest{}, nil, 0, false)
		if err != nil {
			return err
		}
		for _, d := range all {
			names[d.GetId()] = d.GetFqdn()
		}
	}
	for i, j := range jobs {
		fqdn, ok := names[j.DeviceID]
		if !ok && len(jobs) <= 100 {
			d, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.Device, error) {
				return c.GetDevice(ctx, &pb.GetDeviceRequest{Id: j.DeviceID})
			})
			if err != nil && status.Code(err) != codes.NotFound {
				return err
			}
			fqdn = d.GetFqdn()
			names[j.DeviceID] = fqdn
		}
		jobs[i].FQDN = fqdn
	}
	return nil
}

// runBatch starts a batch with start, optionally waits for it with a
// progress display, prints the result and turns refusals and failures
// into exit code 1.
func (a *app) runBatch(cmd *cobra.Command, wait bool, start func(context.Context, pb.AdminServiceClient) (*pb.Batch, error)) error {
	b, err := call(cmd, a, start)
	if err != nil {
		return err
	}
	for _, w := range b.GetWarnings() {
		fmt.Fprintln(a.stderr, "warning: "+w)
	}
	if wait && !b.GetDone() {
		warnings := b.GetWarnings()
		if b, err = a.watch(cmd, b.GetId()); err != nil {
			return err
		}
		b.Warnings = warnings
	}
	return a.reportBatch(cmd, b, wait)
}

// reportBatch prints a batch and its failed jobs; refused or failed jobs
// make the command fail.
func (a *app) reportBatch(cmd *cobra.Command, b *pb.Batch, waited bool) error {
	failedJobs, err := a.failedJobs(cmd, b)
	if err != nil {
		return err
	}
	v := viewBatch(b)
	if a.structured() {
		if err := a.printData(batchResult{Batch: v, FailedJobs: failedJobs}); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(a.stdout, "batch %s: %s of %d device(s): %d succeeded, %d failed, %d cancelled, %d pending\n",
			v.ID, v.Kind, v.Total, v.Succeeded, v.Failed, v.Cancelled, v.Pending)
		if len(failedJobs) > 0 {
			t := a.newTable("DEVICE", "FQDN", "STATE", "STEP", "ERROR")
			for _, j := range failedJobs {
				t.row(j.DeviceID, j.FQDN, j.State, j.ErrorStep, reason(j.LastError))
			}
			if err := t.flush(); err != nil {
				return err
			}
		}
		if !v.Done && !waited {
			fmt.Fprintf(a.stdout, "follow it with: amtopsctl jobs watch %s\n", v.ID)
		}
	}
	switch {
	case v.Failed > 0 && v.Done:
		return failed("batch %s: %d of %d device(s) failed or were refused", v.ID, v.Failed, v.Total)
	case v.Failed > 0:
		return failed("batch %s: %d of %d device(s) refused or already failed; the rest continue", v.ID, v.Failed, v.Total)
	case v.Cancelled > 0 && v.Done:
		return failed("batch %s: %d of %d device(s) cancelled", v.ID, v.Cancelled, v.Total)
	}
	return nil
}

// watch follows a batch until it is done: a live progress bar on a
// terminal, plain progress lines otherwise (logs, CI).
func (a *app) watch(cmd *cobra.Command, id string) (*pb.Batch, error) {
	c, err := a.api()
	if err != nil {
		return nil, err
	}
	var bar *progressbar.ProgressBar
	var last *pb.Batch
	var stream grpc.ServerStreamingClient[pb.Batch]
	retries := 0
	for {
		if stream == nil {
			if stream, err = c.WatchBatch(cmd.Context(), &pb.GetBatchRequest{Id: id}); err != nil {
				return nil, err
			}
		}
		b, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if status.Code(err) == codes.Unavailable && retries < maxWatchRetries {
			// A server restart or a replica going away ends the stream;
			// the batch lives on in Redis, so follow it again.
			retries++
			stream = nil
			select {
			case <-cmd.Context().Done():
				return nil, cmd.Context().Err()
			case <-time.After(time.Duration(retries) * time.Second):
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		retries = 0
		last = b
		ended := int(b.GetSucceeded() + b.GetFailed() + b.GetCancelled())
		desc := fmt.Sprintf("%s %s: %d ok, %d failed, %d cancelled", kindName(b.GetKind()), b.GetId(), b.GetSucceeded(), b.GetFailed(), b.GetCancelled())
		if !a.tty {
			fmt.Fprintf(a.stderr, "%s: %d/%d done\n", desc, ended, b.GetTotal())
			continue
		}
		if bar == nil {
			bar = progressbar.NewOptions(int(b.GetTotal()), progressbar.OptionSetWriter(a.stderr),
				progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true), progressbar.OptionSetWidth(30),
				progressbar.OptionSetRenderBlankState(true), progressbar.OptionThrottle(0))
		}
		bar.Describe(desc)
		_ = bar.Set(ended)
	}
	if bar != nil {
		_ = bar.Finish()
		fmt.Fprintln(a.stderr)
	}
	if last == nil {
		return nil, failed("batch %s: the server ended the watch without any progress", id)
	}
	return last, nil
}

// selection reads DEVICE arguments and --collection.
func selection(args []string, collection string) error {
	if len(args) == 0 && collection == "" {
		return usage("name devices (ID, FQDN or IP) or a --collection")
	}
	return nil
}

func (a *app) provisionCmd() *cobra.Command {
	var collection string
	var wait bool
	cmd := &cobra.Command{
		Use:   "provision [DEVICE...] [--collection NAME]",
		Short: "Provision devices: phase 1 at the site (certificate, AD account, SPNs), phase 2 by the subnet's agent",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := selection(args, collection); err != nil {
				return err
			}
			return a.runBatch(cmd, wait, func(ctx context.Context, c pb.AdminServiceClient) (*pb.Batch, error) {
				return c.StartBatch(ctx, &pb.StartBatchRequest{Kind: pb.JobKind_JOB_KIND_PROVISION, DeviceIds: args, Collection: collection})
			})
		},
	}
	batchFlags(cmd, &collection, &wait)
	return cmd
}

func (a *app) updateCmd() *cobra.Command {
	var collection string
	var wait, confirm bool
	cmd := &cobra.Command{
		Use:   "update [DEVICE...] [--collection NAME]",
		Short: "Update the memory of provisioned controllers with the current site settings",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := selection(args, collection); err != nil {
				return err
			}
			return a.runBatch(cmd, wait, func(ctx context.Context, c pb.AdminServiceClient) (*pb.Batch, error) {
				return c.StartBatch(ctx, &pb.StartBatchRequest{Kind: pb.JobKind_JOB_KIND_UPDATE, DeviceIds: args, Collection: collection,
					Confirm_8021X: confirm})
			})
		},
	}
	batchFlags(cmd, &collection, &wait)
	cmd.Flags().BoolVar(&confirm, "confirm-8021x", false, "apply 802.1X settings over 802.1X wired links even though incompatible settings can drop the link")
	return cmd
}

func (a *app) removeCmd() *cobra.Command {
	var collection string
	var wait, keep, all, suppress, dryRun, yes bool
	cmd := &cobra.Command{
		Use: "remove (--keep-identity | --all) [DEVICE...] [--collection NAME]",
		Long: `Remove provisioning information: configuration only (--keep-identity), or
configuration and identity (--all). --all on a whole --collection asks for
confirmation on a terminal and needs --yes elsewhere; --dry-run lists the
devices a removal would touch and changes nothing.`,
		Short: "Remove provisioning information: configuration only, or configuration and identity",
		RunE: func(cmd *cobra.Command, args []string) error {
			if keep == all {
				return usage("choose one of --keep-identity (configuration only) or --all (configuration and identity)")
			}
			if err := selection(args, collection); err != nil {
				return err
			}
			kind := pb.JobKind_JOB_KIND_REMOVE_CONFIG
			if all {
				kind = pb.JobKind_JOB_KIND_REMOVE_ALL
			}
			if dryRun || all && collection != "" {
				targets, err := a.removalTargets(cmd, args, collection)
				if err != nil {
					return err
				}
				if dryRun {
					return a.printTargets(targets)
				}
				if err := a.confirm(yes, fmt.Sprintf("remove configuration AND identity from the %d device(s) of collection %s", len(targets), collection),
					" (or --dry-run to see the devices)"); err != nil {
					return err
				}
			}
			return a.runBatch(cmd, wait, func(ctx context.Context, c pb.AdminServiceClient) (*pb.Batch, error) {
				return c.StartBatch(ctx, &pb.StartBatchRequest{Kind: kind, DeviceIds: args, Collection: collection, SuppressAutoProvision: suppress})
			})
		},
	}
	batchFlags(cmd, &collection, &wait)
	f := cmd.Flags()
	f.BoolVar(&keep, "keep-identity", false, "remove the configuration (IDE-R, SOL, ping, web UI…) but keep name, IP address and DNS suffix")
	f.BoolVar(&all, "all", false, "remove configuration and identity")
	f.BoolVar(&suppress, "suppress-auto", false, "keep automatic provisioning away from the devices afterwards (lift with devices allow-auto)")
	f.BoolVar(&dryRun, "dry-run", false, "list the devices the removal would touch; change nothing")
	f.BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation (--all --collection)")
	return cmd
}

// removalTargets lists the devices a removal would touch.
func (a *app) removalTargets(cmd *cobra.Command, args []string, collection string) ([]*pb.Device, error) {
	var out []*pb.Device
	if collection != "" {
		all, err := a.listDevices(cmd, &pb.ListDevicesRequest{Collection: collection}, nil, 0, false)
		if err != nil {
			return nil, err
		}
		out = append(out, all...)
	}
	for _, arg := range args {
		d, err := a.resolveDevice(cmd, arg)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

func (a *app) printTargets(ds []*pb.Device) error {
	if a.structured() {
		views := make([]deviceView, 0, len(ds))
		for _, d := range ds {
			views = append(views, viewDevice(d))
		}
		return a.printData(views)
	}
	t := a.newTable("ID", "FQDN", "IP", "STATUS")
	for _, d := range ds {
		t.row(d.GetId(), d.GetFqdn(), d.GetIp(), statusName(d.GetStatus()))
	}
	if err := t.flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(a.stdout, "dry run: %d device(s); nothing changed\n", len(ds))
	return err
}

// confirm asks on a terminal whether to go ahead with what; off a
// terminal (scripts) it needs --yes. hint follows that advice.
func (a *app) confirm(yes bool, what, hint string) error {
	if yes {
		return nil
	}
	if !a.tty {
		return usage("%s: pass --yes to confirm%s", what, hint)
	}
	fmt.Fprintf(a.stderr, "%s? [y/N] ", what)
	line, _ := bufio.NewReader(a.stdin).ReadString('\n')
	if ans := strings.ToLower(strings.TrimSpace(line)); ans != "y" && ans != "yes" {
		return failed("not confirmed; nothing changed")
	}
	return nil
}

func batchFlags(cmd *cobra.Command, collection *string, wait *bool) {
	cmd.Flags().StringVar(collection, "collection", "", "every member of this collection")
	cmd.Flags().BoolVar(wait, "wait", false, "follow the batch with a progress bar until every device is done")
}

func (a *app) renameCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rename",
		Short: "Rename a provisioned computer or move it to another domain, in the enforced order",
		Long: `A renamed or moved computer must have its provisioning information removed
and be provisioned again, and re-provisioning must wait for the rename.

  amtopsctl rename begin DEVICE...          removes everything, blocks provisioning
  (rename the computer or move its domain)
  amtopsctl rename complete DEVICE NEW_FQDN records the new name and provisions again`,
	}
	var waitBegin, waitComplete bool
	begin := &cobra.Command{
		Use:   "begin DEVICE...",
		Short: "Mark devices rename-pending and remove their provisioning information",
		Args:  minArgs(1, "device"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runBatch(cmd, waitBegin, func(ctx context.Context, c pb.AdminServiceClient) (*pb.Batch, error) {
				return c.BeginRename(ctx, &pb.BeginRenameRequest{DeviceIds: args})
			})
		},
	}
	// Waiting is the default: rename complete is refused until the removal is done.
	begin.Flags().BoolVar(&waitBegin, "wait", true, "follow the removal until it is done (--wait=false returns at once)")
	complete := &cobra.Command{
		Use:   "complete DEVICE NEW_FQDN",
		Short: "Record the new name after the rename or move, and provision the device again",
		Args:  exactArgs("DEVICE", "NEW_FQDN"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runBatch(cmd, waitComplete, func(ctx context.Context, c pb.AdminServiceClient) (*pb.Batch, error) {
				return c.CompleteRename(ctx, &pb.CompleteRenameRequest{DeviceId: args[0], NewFqdn: args[1]})
			})
		},
	}
	complete.Flags().BoolVar(&waitComplete, "wait", false, "follow the provisioning until it is done")
	cmd.AddCommand(begin, complete)
	return cmd
}

func (a *app) sweepCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "sweep", Short: "Automatic-provisioning sweeps"}
	var wait bool
	now := &cobra.Command{
		Use:   "now",
		Short: "Provision now what auto-provisioning collections hold and is ready",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runBatch(cmd, wait, func(ctx context.Context, c pb.AdminServiceClient) (*pb.Batch, error) {
				return c.SweepNow(ctx, &pb.SweepNowRequest{})
			})
		},
	}
	now.Flags().BoolVar(&wait, "wait", false, "follow the sweep's batch until it is done")
	cmd.AddCommand(now)
	return cmd
}

func (a *app) jobsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "jobs",
		Aliases: []string{"batches", "batch"},
		Short:   "List, show, watch and cancel batches (bulk operations) and their per-device jobs",
	}
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List recent batches, newest first",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.ListBatchesResponse, error) {
				return c.ListBatches(ctx, &pb.ListBatchesRequest{Limit: int32(limit)})
			})
			if err != nil {
				return err
			}
			views := make([]batchView, 0, len(resp.GetBatches()))
			for _, b := range resp.GetBatches() {
				views = append(views, viewBatch(b))
			}
			if a.structured() {
				return a.printData(views)
			}
			t := a.newTable("BATCH", "KIND", "ORIGIN", "BY", "TOTAL", "OK", "FAILED", "CANCELLED", "PENDING", "CREATED")
			for _, v := range views {
				t.row(v.ID, v.Kind, v.Origin, v.Requester, fmt.Sprint(v.Total), fmt.Sprint(v.Succeeded), fmt.Sprint(v.Failed),
					fmt.Sprint(v.Cancelled), fmt.Sprint(v.Pending), v.CreatedAt)
			}
			return t.flush()
		},
	}
	list.Flags().IntVar(&limit, "limit", 20, "how many batches")

	var state string
	var jobLimit int
	show := &cobra.Command{
		Use:   "show BATCH",
		Short: "Show a batch and each device's job, by FQDN",
		Long: `show prints a batch and each device's job, by FQDN (-o wide adds the device
ID). ATTEMPTS counts phase 1's attempts and, once phase 2 has run, phase 2's
after a '+': "1+5" is the fifth phase-2 attempt, as the operations log's
"attempt 5 failed" counts.`,
		Args: exactArgs("BATCH"),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.Batch, error) {
				return c.GetBatch(ctx, &pb.GetBatchRequest{Id: args[0]})
			})
			if err != nil {
				return err
			}
			resp, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.ListBatchJobsResponse, error) {
				return c.ListBatchJobs(ctx, &pb.ListBatchJobsRequest{BatchId: args[0], State: state, Limit: int32(jobLimit)})
			})
			if err != nil {
				return err
			}
			jobs := make([]jobView, 0, len(resp.GetJobs()))
			for _, j := range resp.GetJobs() {
				jobs = append(jobs, viewJob(j))
			}
			if err := a.nameJobs(cmd, jobs); err != nil {
				return err
			}
			v := viewBatch(b)
			if a.structured() {
				return a.printData(struct {
					Batch batchView `json:"batch"`
					Jobs  []jobView `json:"jobs"`
				}{v, jobs})
			}
			if err := a.keyValues("Batch", v.ID, "Kind", v.Kind, "Origin", v.Origin, "Requested by", v.Requester,
				"Options", optionsString(v.Options), "Created", v.CreatedAt,
				"Progress", fmt.Sprintf("%d succeeded, %d failed, %d cancelled, %d pending of %d", v.Succeeded, v.Failed, v.Cancelled, v.Pending, v.Total),
				"Cancel requested", map[bool]string{true: "yes"}[v.CancelRequested]); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout)
			header := []string{"DEVICE", "STATE", "ATTEMPTS", "STEP", "ERROR"}
			if a.output == "wide" {
				header = append(header, "ID")
			}
			t := a.newTable(header...)
			slices.SortStableFunc(jobs, func(x, y jobView) int {
				return strings.Compare(strings.ToLower(x.device()), strings.ToLower(y.device()))
			})
			for _, j := range jobs {
				row := []string{j.device(), j.State, j.attempts(), j.ErrorStep, reason(j.LastError)}
				if a.output == "wide" {
					row = append(row, j.DeviceID)
				}
				t.row(row...)
			}
			if err := t.flush(); err != nil {
				return err
			}
			if resp.GetNextCursor() != "" {
				fmt.Fprintf(a.stdout, "(first %d jobs; raise --limit for more)\n", len(jobs))
			}
			return nil
		},
	}
	show.Flags().StringVar(&state, "state", "", "only jobs in this state: queued, phase1, phase2, succeeded, failed, cancelled")
	show.Flags().IntVar(&jobLimit, "limit", 1000, "at most this many jobs")

	watch := &cobra.Command{
		Use:   "watch BATCH",
		Short: "Follow a batch with a live progress bar until every device is done",
		Args:  exactArgs("BATCH"),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := a.watch(cmd, args[0])
			if err != nil {
				return err
			}
			return a.reportBatch(cmd, b, true)
		},
	}
	cancel := &cobra.Command{
		Use:   "cancel BATCH",
		Short: "Cancel a batch: queued jobs stop now, running ones at their next step",
		Args:  exactArgs("BATCH"),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.Batch, error) {
				return c.CancelBatch(ctx, &pb.GetBatchRequest{Id: args[0]})
			})
			if err != nil {
				return err
			}
			v := viewBatch(b)
			if a.structured() {
				return a.printData(v)
			}
			_, err = fmt.Fprintf(a.stdout, "batch %s: cancel requested: %d cancelled, %d pending\n", v.ID, v.Cancelled, v.Pending)
			return err
		},
	}
	cmd.AddCommand(list, show, watch, cancel, a.retryCmd())
	return cmd
}
