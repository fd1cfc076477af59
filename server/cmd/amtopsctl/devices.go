package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	pb "github.com/amtops/amtops/proto/amtops/v1"
)

func (a *app) devicesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "devices",
		Aliases: []string{"device", "dev"},
		Short:   "List and show devices, their operations log, and automatic provisioning",
	}
	cmd.AddCommand(a.devicesListCmd(), a.devicesShowCmd(), a.devicesLogCmd(), a.devicesReadinessCmd(),
		a.devicesSuppressCmd("suppress-auto", true), a.devicesSuppressCmd("allow-auto", false))
	return cmd
}

func (a *app) devicesListCmd() *cobra.Command {
	var subnet, statusFlag, collection string
	var limit int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List devices, filtered by subnet, status or collection",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := parseStatus(statusFlag)
			if err != nil {
				return err
			}
			if limit < 0 {
				return usage("--limit %d: must not be negative", limit)
			}
			var devices []*pb.Device
			cursor := ""
			for {
				page := 1000
				if limit > 0 {
					page = min(page, limit-len(devices))
				}
				resp, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.ListDevicesResponse, error) {
					return c.ListDevices(ctx, &pb.ListDevicesRequest{Subnet: subnet, Status: st, Collection: collection,
						Limit: int32(page), Cursor: cursor})
				})
				if err != nil {
					return err
				}
				devices = append(devices, resp.GetDevices()...)
				cursor = resp.GetNextCursor()
				if cursor == "" || limit > 0 && len(devices) >= limit {
					break
				}
			}
			if a.output == "json" {
				views := make([]deviceView, 0, len(devices))
				for _, d := range devices {
					views = append(views, viewDevice(d))
				}
				return printJSON(a.stdout, views)
			}
			t := newTable(a.stdout, "ID", "FQDN", "IP", "SUBNET", "STATUS", "COLLECTIONS", "FLAGS")
			for _, d := range devices {
				var flags []string
				if d.GetRenamePending() {
					flags = append(flags, "rename-pending")
				}
				if d.GetSuppressAutoProvision() {
					flags = append(flags, "no-auto")
				}
				if d.GetLastError() != "" {
					flags = append(flags, "error")
				}
				t.row(d.GetId(), d.GetFqdn(), d.GetIp(), d.GetSubnet(), statusName(d.GetStatus()),
					strings.Join(d.GetCollections(), ","), strings.Join(flags, ","))
			}
			return t.flush()
		},
	}
	f := cmd.Flags()
	f.StringVar(&subnet, "subnet", "", "only devices on this subnet (CIDR)")
	f.StringVar(&statusFlag, "status", "", "only devices with this status: "+strings.Join(statusNames(), ", "))
	f.StringVar(&collection, "collection", "", "only members of this collection")
	f.IntVar(&limit, "limit", 0, "at most this many devices (0: all)")
	_ = cmd.RegisterFlagCompletionFunc("status", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return statusNames(), cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

func (a *app) devicesShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show DEVICE",
		Short: "Show one device, named by ID, FQDN or IP address",
		Args:  exactArgs("DEVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.Device, error) {
				return c.GetDevice(ctx, &pb.GetDeviceRequest{Id: args[0]})
			})
			if err != nil {
				return err
			}
			v := viewDevice(d)
			if a.output == "json" {
				return printJSON(a.stdout, v)
			}
			return keyValues(a.stdout,
				"ID", v.ID, "UUID", v.UUID, "FQDN", v.FQDN, "IP", v.IP, "Subnet", v.Subnet, "Status", v.Status,
				"Provisioning state", strconv.Itoa(int(v.ProvisioningState)), "Control mode", v.ControlMode, "Link", v.Link, "AMT version", v.AMTVersion,
				"Computer DN", v.ComputerDN, "Collections", strings.Join(v.Collections, ", "),
				"Auto-provisioning", map[bool]string{true: "suppressed", false: "allowed"}[v.SuppressAutoProvision],
				"Rename pending", yesNo(v.RenamePending), "Last error", strings.TrimSpace(v.LastErrorStep+" "+v.LastError),
				"Warnings", strings.Join(v.Warnings, "; "), "Updated", v.UpdatedAt, "Provisioned", v.ProvisionedAt)
		},
	}
}

func (a *app) devicesLogCmd() *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "log DEVICE",
		Short: "Show a device's operations log (every step, with its phase)",
		Args:  exactArgs("DEVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.GetDeviceLogResponse, error) {
				return c.GetDeviceLog(ctx, &pb.GetDeviceLogRequest{Id: args[0], Limit: int32(limit)})
			})
			if err != nil {
				return err
			}
			if a.output == "json" {
				views := make([]eventView, 0, len(resp.GetEvents()))
				for _, e := range resp.GetEvents() {
					views = append(views, viewEvent(e))
				}
				return printJSON(a.stdout, views)
			}
			t := newTable(a.stdout, "TIME", "PHASE", "STEP", "OUTCOME", "ACTOR", "DETAIL")
			for _, e := range resp.GetEvents() {
				v := viewEvent(e)
				t.row(v.Time, strconv.Itoa(int(v.Phase)), v.Step, v.Outcome, v.Actor, v.Detail)
			}
			return t.flush()
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 200, "newest events to show")
	return cmd
}

func (a *app) devicesSuppressCmd(name string, suppress bool) *cobra.Command {
	short := "Keep automatic provisioning away from devices (S18)"
	if !suppress {
		short = "Let automatic provisioning pick devices up again (S18)"
	}
	return &cobra.Command{
		Use:   name + " DEVICE...",
		Short: short,
		Args:  minArgs(1, "device"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.SetAutoProvisionSuppressedResponse, error) {
				return c.SetAutoProvisionSuppressed(ctx, &pb.SetAutoProvisionSuppressedRequest{DeviceIds: args, Suppressed: suppress})
			})
			if err != nil {
				return err
			}
			if a.output == "json" {
				return printJSON(a.stdout, map[string]int32{"changed": resp.GetChanged()})
			}
			_, err = fmt.Fprintf(a.stdout, "%d device(s) changed\n", resp.GetChanged())
			return err
		},
	}
}
