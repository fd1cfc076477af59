package main

import (
	"cmp"
	"context"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/amtops/amtops/proto/amtops/v1"
)

func (a *app) devicesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "devices",
		Aliases: []string{"device", "dev"},
		Short:   "List and show devices, their operations log, and automatic provisioning",
	}
	cmd.AddCommand(a.devicesListCmd(), a.devicesSearchCmd(), a.devicesShowCmd(), a.devicesLogCmd(), a.devicesReadinessCmd(), a.devicesDeleteCmd(),
		a.devicesSuppressCmd("suppress-auto", true), a.devicesSuppressCmd("allow-auto", false))
	return cmd
}

// statusFailed is a --status of its own: devices whose last operation
// failed (they carry a last error), whatever their AMT status.
const statusFailed = "failed"

func (a *app) devicesListCmd() *cobra.Command {
	return a.deviceListing("list", "List devices, filtered by subnet, status, collection, name or search text, sorted by FQDN",
		`  amtopsctl devices list --status failed
  amtopsctl devices list --name 'pc-0-*' -o csv
  amtopsctl devices list --query 10.0.5. --generation 16`)
}

// devicesSearchCmd is devices list --query TEXT.
func (a *app) devicesSearchCmd() *cobra.Command {
	return a.deviceListing("search TEXT", "Find devices whose ID, host name, FQDN, IP address or UUID contains TEXT (any case)",
		`  amtopsctl devices search pc-0-01
  amtopsctl devices search 8c4f --status provisioned`)
}

// deviceListing is devices list, and devices search (whose one argument
// is the --query).
func (a *app) deviceListing(use, short, example string) *cobra.Command {
	var subnet, statusFlag, collection, name, query, generation string
	var limit int
	search := strings.HasPrefix(use, "search")
	args := exactArgs()
	if search {
		args = exactArgs("TEXT")
	}
	cmd := &cobra.Command{
		Use:     use,
		Short:   short,
		Example: example,
		Args:    args,
		RunE: func(cmd *cobra.Command, pos []string) error {
			if search {
				query = pos[0]
			}
			var st pb.DeviceStatus
			if statusFlag != statusFailed {
				var err error
				if st, err = parseStatus(statusFlag); err != nil {
					return err
				}
			}
			if _, err := path.Match(name, ""); err != nil {
				return usage("--name %q: bad pattern: %v", name, err)
			}
			if limit < 0 {
				return usage("--limit %d: must not be negative", limit)
			}
			// The name glob is matched here; the limit then applies after it.
			devices, err := a.listDevices(cmd, &pb.ListDevicesRequest{Subnet: subnet, Status: st, Collection: collection,
				Failed: statusFlag == statusFailed, Query: query, Generation: generation},
				func(d *pb.Device) bool { return matchName(d, name) }, limit, name != "")
			if err != nil {
				return err
			}
			if a.structured() {
				views := make([]deviceView, 0, len(devices))
				for _, d := range devices {
					views = append(views, viewDevice(d))
				}
				return a.printData(views)
			}
			header := []string{"ID", "FQDN", "IP", "SUBNET", "STATUS", "COLLECTIONS", "FLAGS"}
			if a.output == "wide" {
				header = append(header, "STEP", "LAST ERROR")
			}
			t := a.newTable(header...)
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
				row := []string{d.GetId(), d.GetFqdn(), d.GetIp(), d.GetSubnet(), statusName(d.GetStatus()),
					strings.Join(d.GetCollections(), ","), strings.Join(flags, ",")}
				if a.output == "wide" {
					row = append(row, d.GetLastErrorStep(), reason(d.GetLastError()))
				}
				t.row(row...)
			}
			return t.flush()
		},
	}
	f := cmd.Flags()
	f.StringVar(&subnet, "subnet", "", "only devices on this subnet (CIDR)")
	f.StringVar(&statusFlag, "status", "", "only devices with this status: "+strings.Join(append(statusNames(), statusFailed), ", ")+
		" ("+statusFailed+": the last operation failed)")
	f.StringVar(&collection, "collection", "", "only members of this collection")
	f.StringVar(&name, "name", "", "only devices whose host name or FQDN matches this pattern (* and ? wildcards; without them, contains it)")
	if !search {
		f.StringVarP(&query, "query", "q", "", "only devices whose ID, host name, FQDN, IP address or UUID contains this (any case; the server searches)")
	}
	f.StringVar(&generation, "generation", "", "only devices of this AMT major version (16), or unknown")
	f.IntVar(&limit, "limit", 0, "at most this many devices (0: all)")
	_ = cmd.RegisterFlagCompletionFunc("status", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return append(statusNames(), statusFailed), cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

// listDevices pages through ListDevices, keeps those keep accepts and
// sorts them by FQDN (then ID). A limit stops paging early unless the
// list must be complete before filtering or sorting makes it meaningful.
func (a *app) listDevices(cmd *cobra.Command, req *pb.ListDevicesRequest, keep func(*pb.Device) bool, limit int, filtered bool) ([]*pb.Device, error) {
	var devices []*pb.Device
	cursor := ""
	for {
		page := 1000
		if limit > 0 && !filtered {
			page = min(page, limit-len(devices))
		}
		req.Limit, req.Cursor = int32(page), cursor
		resp, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.ListDevicesResponse, error) {
			return c.ListDevices(ctx, req)
		})
		if err != nil {
			return nil, err
		}
		for _, d := range resp.GetDevices() {
			if keep == nil || keep(d) {
				devices = append(devices, d)
			}
		}
		cursor = resp.GetNextCursor()
		if cursor == "" || limit > 0 && !filtered && len(devices) >= limit {
			break
		}
	}
	slices.SortFunc(devices, func(x, y *pb.Device) int {
		return cmp.Or(strings.Compare(deviceName(x), deviceName(y)), strings.Compare(x.GetId(), y.GetId()))
	})
	if limit > 0 && len(devices) > limit {
		devices = devices[:limit]
	}
	return devices, nil
}

// deviceName is what a device is sorted and found by: its FQDN, else its
// host name, lower case.
func deviceName(d *pb.Device) string {
	if d.GetFqdn() != "" {
		return strings.ToLower(d.GetFqdn())
	}
	return strings.ToLower(d.GetHostName())
}

// matchName reports whether d's host name or FQDN matches pattern: a
// glob with * or ?, else a substring; case does not matter.
func matchName(d *pb.Device, pattern string) bool {
	if pattern == "" {
		return true
	}
	pattern = strings.ToLower(pattern)
	for _, n := range []string{strings.ToLower(d.GetHostName()), strings.ToLower(d.GetFqdn())} {
		if n == "" {
			continue
		}
		if !strings.ContainsAny(pattern, "*?[") && strings.Contains(n, pattern) {
			return true
		}
		if ok, _ := path.Match(pattern, n); ok {
			return true
		}
	}
	return false
}

// resolveDevice turns what a person typed into a device ID the server
// knows: the server finds IDs, FQDNs and IPs; a short host name
// (pc-0-001) is looked up among all devices, and must be unique.
func (a *app) resolveDevice(cmd *cobra.Command, arg string) (*pb.Device, error) {
	d, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.Device, error) {
		return c.GetDevice(ctx, &pb.GetDeviceRequest{Id: arg})
	})
	if status.Code(err) != codes.NotFound || strings.Contains(arg, ".") {
		return d, err
	}
	all, lerr := a.listDevices(cmd, &pb.ListDevicesRequest{}, func(d *pb.Device) bool {
		return strings.EqualFold(d.GetHostName(), arg)
	}, 0, true)
	switch {
	case lerr != nil:
		return nil, err
	case len(all) == 1:
		// Lists leave out what only GetDevice reads (certificates).
		return call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.Device, error) {
			return c.GetDevice(ctx, &pb.GetDeviceRequest{Id: all[0].GetId()})
		})
	case len(all) > 1:
		var names []string
		for _, m := range all {
			names = append(names, m.GetFqdn()+" ("+m.GetId()+")")
		}
		return nil, usage("device %q is ambiguous: %d devices have that host name: %s; name one by FQDN or ID",
			arg, len(all), strings.Join(names, ", "))
	}
	return nil, usage("not found: no device has the ID, FQDN, IP address or host name %q", arg)
}

func (a *app) devicesShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show DEVICE",
		Short: "Show one device, named by ID, FQDN, IP address or host name",
		Args:  exactArgs("DEVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := a.resolveDevice(cmd, args[0])
			if err != nil {
				return err
			}
			v := viewDevice(d)
			if a.structured() {
				return a.printData(v)
			}
			certs := ""
			if a.output == "csv" {
				certs = certSummary(v.Certificates)
			}
			err = a.keyValues(
				"ID", v.ID, "UUID", v.UUID, "FQDN", v.FQDN, "IP", v.IP, "Subnet", v.Subnet, "Status", v.Status,
				"Provisioning state", strconv.Itoa(int(v.ProvisioningState)), "Control mode", v.ControlMode, "Link", v.Link, "AMT version", v.AMTVersion,
				"Computer DN", v.ComputerDN, "Collections", strings.Join(v.Collections, ", "),
				"Auto-provisioning", map[bool]string{true: "suppressed", false: "allowed"}[v.SuppressAutoProvision],
				"Rename pending", yesNo(v.RenamePending), "Last error", strings.TrimSpace(v.LastErrorStep+" "+reason(v.LastError)),
				"Error details", errorDetails(v.LastError),
				"Warnings", strings.Join(v.Warnings, "; "), "Updated", v.UpdatedAt, "Provisioned", v.ProvisionedAt,
				"AD account", v.ADAccountDN, "SPNs", strings.Join(v.SPNs, ", "), "Certificates", certs)
			if err != nil || a.output == "csv" || len(v.Certificates) == 0 {
				return err
			}
			fmt.Fprintln(a.stdout, "\nCertificates:")
			return a.certTable(v.Certificates)
		},
	}
}

func (a *app) devicesLogCmd() *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "log DEVICE",
		Long:  "Show a device's operations log. DEVICE is an ID, FQDN, IP address or unique short host name.",
		Short: "Show a device's operations log (every step, with its phase)",
		Args:  exactArgs("DEVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			get := func(id string) (*pb.GetDeviceLogResponse, error) {
				return call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.GetDeviceLogResponse, error) {
					return c.GetDeviceLog(ctx, &pb.GetDeviceLogRequest{Id: id, Limit: int32(limit)})
				})
			}
			resp, err := get(args[0])
			if status.Code(err) == codes.NotFound && !strings.Contains(args[0], ".") {
				// Perhaps a short host name.
				d, rerr := a.resolveDevice(cmd, args[0])
				if rerr != nil {
					return rerr
				}
				resp, err = get(d.GetId())
			}
			if err != nil {
				return err
			}
			if a.structured() {
				views := make([]eventView, 0, len(resp.GetEvents()))
				for _, e := range resp.GetEvents() {
					views = append(views, viewEvent(e))
				}
				return a.printData(views)
			}
			t := a.newTable("TIME", "PHASE", "STEP", "OUTCOME", "ACTOR", "DETAIL")
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
	short := "Keep automatic provisioning away from devices"
	if !suppress {
		short = "Let automatic provisioning pick devices up again"
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
			if a.structured() {
				return a.printData(map[string]int32{"changed": resp.GetChanged()})
			}
			_, err = fmt.Fprintf(a.stdout, "%d device(s) changed\n", resp.GetChanged())
			return err
		},
	}
}

// certSummary is the certificates in one field (devices show -o csv):
// serial, purpose, state, expiry.
func certSummary(cs []deviceCertView) string {
	var lines []string
	for _, c := range cs {
		st := c.State
		if c.Revoked && c.Reason != "" {
			st += " (" + c.Reason + ")"
		}
		lines = append(lines, c.Serial+" "+c.Purpose+" "+st+" until "+c.NotAfter)
	}
	return strings.Join(lines, "; ")
}

// errorDetails is what follows a stored reason's summary line, on one
// line; empty when the summary is all there is.
func errorDetails(msg string) string {
	if _, rest, ok := strings.Cut(msg, "\n"); ok {
		return strings.ReplaceAll(rest, "\n", " ")
	}
	if s := summarize(msg); s != msg {
		return msg
	}
	return ""
}
