package main

import (
	"context"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// readinessView is one device's line of `devices readiness`.
type readinessView struct {
	ID              string           `json:"id"`
	FQDN            string           `json:"fqdn,omitempty"`
	IP              string           `json:"ip,omitempty"`
	State           int32            `json:"provisioning_state"`
	ControlMode     string           `json:"control_mode,omitempty"`
	NeedsActivation bool             `json:"needs_activation"`
	Ready           bool             `json:"ready"`
	TrustedDomain   string           `json:"trusted_domain,omitempty"`
	HelloAt         string           `json:"hello_at,omitempty"`
	Problems        []readinessIssue `json:"problems"`
}

type readinessIssue struct {
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

func (a *app) devicesReadinessCmd() *cobra.Command {
	var subnet, statusFlag, collection string
	cmd := &cobra.Command{
		Use:   "readiness",
		Short: "Whether each device can be activated by remote configuration, and why not",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := parseStatus(statusFlag)
			if err != nil {
				return err
			}
			var views []readinessView
			for cursor, first := "", true; first || cursor != ""; first = false {
				resp, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.DeviceReadinessResponse, error) {
					return c.DeviceReadiness(ctx, &pb.ListDevicesRequest{Subnet: subnet, Status: st, Collection: collection,
						Limit: 1000, Cursor: cursor})
				})
				if err != nil {
					return err
				}
				for _, d := range resp.GetDevices() {
					views = append(views, viewReadiness(d))
				}
				cursor = resp.GetNextCursor()
			}
			if a.structured() {
				if views == nil {
					views = []readinessView{}
				}
				return a.printData(views)
			}
			t := a.newTable("ID", "FQDN", "STATE", "MODE", "ACTIVATE", "READY", "TRUSTED DOMAIN", "WHY NOT")
			for _, v := range views {
				why := make([]string, len(v.Problems))
				for i, p := range v.Problems {
					why[i] = p.Message
				}
				t.row(v.ID, v.FQDN, strconv.Itoa(int(v.State)), v.ControlMode, yesNo(v.NeedsActivation), yesNo(v.Ready), v.TrustedDomain,
					strings.Join(why, "; "))
			}
			return t.flush()
		},
	}
	f := cmd.Flags()
	f.StringVar(&subnet, "subnet", "", "only devices on this subnet (CIDR)")
	f.StringVar(&statusFlag, "status", "", "only devices with this status: "+strings.Join(statusNames(), ", "))
	f.StringVar(&collection, "collection", "", "only members of this collection")
	return cmd
}

func viewReadiness(d *pb.DeviceReadiness) readinessView {
	v := readinessView{ID: d.GetId(), FQDN: d.GetFqdn(), IP: d.GetIp(), State: d.GetProvisioningState(), ControlMode: d.GetControlMode(),
		NeedsActivation: d.GetNeedsActivation(), Ready: d.GetReady(), TrustedDomain: d.GetTrustedDomain(),
		HelloAt: tsString(d.GetHelloAt()), Problems: []readinessIssue{}}
	for _, p := range d.GetProblems() {
		v.Problems = append(v.Problems, readinessIssue{Reason: p.GetReason(), Message: p.GetMessage()})
	}
	return v
}
