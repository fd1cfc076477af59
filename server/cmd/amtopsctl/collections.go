package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// maxCSV keeps an import inside gRPC's default 4 MiB message limit.
const maxCSV = 4<<20 - 64<<10

func (a *app) collectionsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "collections",
		Aliases: []string{"collection", "coll"},
		Short:   "Group devices: create collections, add devices by list, CSV or rule, enable automatic provisioning",
	}
	cmd.AddCommand(a.collListCmd(), a.collShowCmd(), a.collCreateCmd(), a.collDeleteCmd(), a.collMembersCmd(true), a.collMembersCmd(false),
		a.collImportCmd(), a.collAutoCmd())
	return cmd
}

func (a *app) printCollection(c *pb.Collection) error {
	v := viewCollection(c)
	if a.structured() {
		return a.printData(v)
	}
	return a.keyValues("Name", v.Name, "Description", v.Description, "Auto-provisioning", map[bool]string{true: "on", false: "off"}[v.AutoProvision],
		"Members", fmt.Sprint(v.Members), "Rules", rulesString(v.Rules), "Created", v.CreatedAt)
}

func (a *app) collListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List collections with their member counts and rules",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.ListCollectionsResponse, error) {
				return c.ListCollections(ctx, &pb.ListCollectionsRequest{})
			})
			if err != nil {
				return err
			}
			views := make([]collectionView, 0, len(resp.GetCollections()))
			for _, c := range resp.GetCollections() {
				views = append(views, viewCollection(c))
			}
			if a.structured() {
				return a.printData(views)
			}
			t := a.newTable("NAME", "AUTO", "MEMBERS", "RULES", "DESCRIPTION")
			for _, v := range views {
				t.row(v.Name, map[bool]string{true: "on", false: "off"}[v.AutoProvision], fmt.Sprint(v.Members), rulesString(v.Rules), v.Description)
			}
			return t.flush()
		},
	}
}

func (a *app) collCreateCmd() *cobra.Command {
	var description string
	var auto bool
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an empty collection",
		Args:  exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.Collection, error) {
				return c.CreateCollection(ctx, &pb.CreateCollectionRequest{Name: args[0], Description: description, AutoProvision: auto})
			})
			if err != nil {
				return err
			}
			return a.printCollection(c)
		},
	}
	cmd.Flags().StringVar(&description, "description", "", "what the collection is for")
	cmd.Flags().BoolVar(&auto, "auto-provision", false, "let periodic sweeps provision its members")
	return cmd
}

func (a *app) collDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a collection (its devices stay)",
		Args:  exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.DeleteCollectionResponse, error) {
				return c.DeleteCollection(ctx, &pb.DeleteCollectionRequest{Name: args[0]})
			})
			if err != nil {
				return err
			}
			if a.structured() {
				return a.printData(map[string]string{"deleted": args[0]})
			}
			_, err = fmt.Fprintf(a.stdout, "collection %s deleted\n", args[0])
			return err
		},
	}
}

func (a *app) collMembersCmd(add bool) *cobra.Command {
	var subnet, pattern string
	use, short := "add NAME [DEVICE...]", "Add devices (by ID, FQDN or IP) and/or a rule (--subnet, --name-pattern) that adds every device it matches"
	if !add {
		use, short = "remove NAME [DEVICE...]", "Remove devices; with --subnet/--name-pattern, drop that rule and the members only it matched"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  minArgs(1, "argument: the collection name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &pb.CollectionMembersRequest{Collection: args[0], DeviceIds: args[1:]}
			if subnet != "" || pattern != "" {
				req.Rule = &pb.MemberRule{Subnet: subnet, NamePattern: pattern}
			}
			if len(req.DeviceIds) == 0 && req.Rule == nil {
				return usage("name devices, or a rule with --subnet and/or --name-pattern")
			}
			resp, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.CollectionMembersResponse, error) {
				if add {
					return c.AddCollectionMembers(ctx, req)
				}
				return c.RemoveCollectionMembers(ctx, req)
			})
			if err != nil {
				return err
			}
			if a.structured() {
				return a.printData(map[string]int32{"changed": resp.GetChanged()})
			}
			verb := "added to"
			if !add {
				verb = "removed from"
			}
			_, err = fmt.Fprintf(a.stdout, "%d device(s) %s %s\n", resp.GetChanged(), verb, args[0])
			return err
		},
	}
	cmd.Flags().StringVar(&subnet, "subnet", "", "rule: devices whose address is in this CIDR prefix")
	cmd.Flags().StringVar(&pattern, "name-pattern", "", "rule: devices whose host name matches this glob (case-insensitive), e.g. 'lab-*'")
	return cmd
}

func (a *app) collImportCmd() *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "import NAME FILE",
		Short: "Import devices from CSV into a collection ('-' reads standard input)",
		Long: `Import devices from a CSV file into a collection.

The first line is the header: host_name,domain,ip and optionally uuid and
subnet, in any order. Unknown devices are created (status unknown); known
ones (same FQDN) are updated. The whole file is checked first: a bad line
is reported with its line number and field, and nothing is written.`,
		Args: exactArgs("NAME", "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var r io.Reader = a.stdin
			if args[1] != "-" {
				f, err := os.Open(args[1])
				if err != nil {
					return usage("%v", err)
				}
				defer f.Close()
				r = f
			}
			data, err := io.ReadAll(io.LimitReader(r, maxCSV+1))
			if err != nil {
				return usage("read %s: %v", args[1], err)
			}
			if len(data) > maxCSV {
				return usage("%s: larger than %d bytes: split it", args[1], maxCSV)
			}
			resp, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.ImportDevicesResponse, error) {
				return c.ImportDevices(ctx, &pb.ImportDevicesRequest{Collection: args[0], Csv: data, DryRun: dryRun})
			})
			if err != nil {
				return err
			}
			for _, w := range resp.GetWarnings() {
				fmt.Fprintln(a.stderr, "warning: "+w)
			}
			if a.structured() {
				return a.printData(struct {
					Created  int32    `json:"created"`
					Updated  int32    `json:"updated"`
					Added    int32    `json:"added"`
					DryRun   bool     `json:"dry_run"`
					Warnings []string `json:"warnings,omitempty"`
				}{resp.GetCreated(), resp.GetUpdated(), resp.GetAdded(), dryRun, resp.GetWarnings()})
			}
			prefix := ""
			if dryRun {
				prefix = "dry run, nothing written: "
			}
			_, err = fmt.Fprintf(a.stdout, "%s%d created, %d updated, %d added to %s\n", prefix, resp.GetCreated(), resp.GetUpdated(), resp.GetAdded(), args[0])
			return err
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "check the file and report what would change, writing nothing")
	return cmd
}

func (a *app) collAutoCmd() *cobra.Command {
	return &cobra.Command{
		Use:       "auto-provision NAME on|off",
		Short:     "Turn automatic provisioning of a collection's members on or off",
		Args:      exactArgs("NAME", "on|off"),
		ValidArgs: []string{"on", "off"},
		RunE: func(cmd *cobra.Command, args []string) error {
			var on bool
			switch args[1] {
			case "on":
				on = true
			case "off":
			default:
				return usage("auto-provision %q: want on or off", args[1])
			}
			c, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.Collection, error) {
				return c.UpdateCollection(ctx, &pb.UpdateCollectionRequest{Name: args[0], AutoProvision: &on})
			})
			if err != nil {
				return err
			}
			return a.printCollection(c)
		},
	}
}
