package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	pb "github.com/amtops/amtops/proto/amtops/v1"
)

type deletedView struct {
	ID             string   `json:"id"`
	FQDN           string   `json:"fqdn"`
	RevokedSerials []string `json:"revoked_serials"`
	SecretsDeleted int32    `json:"secrets_deleted"`
	Collections    []string `json:"collections"`
}

func (a *app) devicesDeleteCmd() *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "delete DEVICE",
		Short: "Forget a device: revoke its certificates, delete its secrets and memberships (operate role)",
		Long: `delete forgets a device the site no longer manages. Every certificate the
site issued for it that is still valid is revoked, its sealed secrets and
its collection memberships are deleted, and the deletion is recorded in its
operations log (kept: 'devices log ID' still reads it).

A provisioned device is refused: remove its provisioning information first
('amtopsctl remove DEVICE --all --wait'). A device a job is working on is
refused until the job ends. delete asks for confirmation on a terminal and
needs --yes elsewhere.`,
		Example: `  amtopsctl devices delete pc-0-001.amt.example --yes`,
		Args:    exactArgs("DEVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := a.resolveDevice(cmd, args[0])
			if err != nil {
				return err
			}
			if err := a.confirm(yes, fmt.Sprintf("delete device %s (%s) and revoke its certificates", d.GetFqdn(), d.GetId()), ""); err != nil {
				return err
			}
			resp, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.DeleteDeviceResponse, error) {
				return c.DeleteDevice(ctx, &pb.DeleteDeviceRequest{Id: d.GetId()})
			})
			if err != nil {
				return err
			}
			v := deletedView{ID: resp.GetId(), FQDN: resp.GetFqdn(), RevokedSerials: append([]string{}, resp.GetRevokedSerials()...),
				SecretsDeleted: resp.GetSecretsDeleted(), Collections: append([]string{}, resp.GetCollections()...)}
			if a.structured() {
				return a.printData(v)
			}
			return a.keyValues("Deleted", v.FQDN+" ("+v.ID+")", "Certificates revoked", fmt.Sprint(len(v.RevokedSerials)),
				"Serials", strings.Join(v.RevokedSerials, ", "), "Secrets deleted", fmt.Sprint(v.SecretsDeleted),
				"Left collections", strings.Join(v.Collections, ", "))
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}
