package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	pb "github.com/amtops/amtops/proto/amtops/v1"
)

func (a *app) collShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show COLLECTION",
		Short: "Show a collection: members, rules, auto-provisioning, and the members kept from it (suppressed)",
		Long: `show prints a collection and lists its suppressed members: the devices
automatic provisioning leaves alone although the collection has it on
(after 'remove --suppress-auto' or 'devices suppress-auto'). Lift it with
'devices allow-auto DEVICE'.`,
		Args: exactArgs("COLLECTION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			list, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.ListCollectionsResponse, error) {
				return c.ListCollections(ctx, &pb.ListCollectionsRequest{})
			})
			if err != nil {
				return err
			}
			var coll *pb.Collection
			for _, c := range list.GetCollections() {
				if c.GetName() == args[0] {
					coll = c
				}
			}
			if coll == nil {
				return usage("not found: no collection %q ('collections list' names them)", args[0])
			}
			suppressed, err := a.listDevices(cmd, &pb.ListDevicesRequest{Collection: coll.GetName(), Suppressed: true}, nil, 0, false)
			if err != nil {
				return err
			}
			views := make([]deviceView, 0, len(suppressed))
			for _, d := range suppressed {
				views = append(views, viewDevice(d))
			}
			v := viewCollection(coll)
			if a.structured() {
				return a.printData(struct {
					Collection collectionView `json:"collection"`
					Suppressed []deviceView   `json:"suppressed"`
				}{v, views})
			}
			if err := a.keyValues("Name", v.Name, "Description", v.Description, "Auto-provisioning", map[bool]string{true: "on", false: "off"}[v.AutoProvision],
				"Members", fmt.Sprint(v.Members), "Rules", rulesString(v.Rules), "Created", v.CreatedAt,
				"Suppressed", fmt.Sprintf("%d member(s) kept from automatic provisioning", len(views))); err != nil {
				return err
			}
			if len(views) == 0 {
				return nil
			}
			fmt.Fprintln(a.stdout)
			t := a.newTable("SUPPRESSED", "ID", "STATUS", "IP")
			for _, d := range views {
				t.row(d.FQDN, d.ID, d.Status, d.IP)
			}
			return t.flush()
		},
	}
}
