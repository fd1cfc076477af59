package main

import (
	"context"
	"strings"

	"github.com/spf13/cobra"

	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// deviceCertView is one certificate the site issued for a device.
type deviceCertView struct {
	Serial    string `json:"serial"`
	DeviceID  string `json:"device_id"`
	FQDN      string `json:"fqdn"`
	Purpose   string `json:"purpose"`
	Profile   string `json:"profile"`
	CA        string `json:"ca"`
	State     string `json:"state"`
	Installed bool   `json:"installed"`
	Revoked   bool   `json:"revoked"`
	Reason    string `json:"revocation_reason,omitempty"`
	RevokedAt string `json:"revoked_at,omitempty"`
	NotBefore string `json:"not_before"`
	NotAfter  string `json:"not_after"`
	JobID     string `json:"job_id,omitempty"`
}

func viewDeviceCert(c *pb.Certificate) deviceCertView {
	return deviceCertView{Serial: c.GetSerial(), DeviceID: c.GetDeviceId(), FQDN: c.GetFqdn(), Purpose: c.GetPurpose(),
		Profile: c.GetProfile(), CA: c.GetCa(), State: c.GetState(), Installed: c.GetState() == "installed",
		Revoked: c.GetState() == "revoked", Reason: c.GetRevocationReason(), RevokedAt: tsString(c.GetRevokedAt()),
		NotBefore: tsString(c.GetNotBefore()), NotAfter: tsString(c.GetNotAfter()), JobID: c.GetJobId()}
}

// revokedCell is "no", or "yes (reason)".
func (v deviceCertView) revokedCell() string {
	if !v.Revoked {
		return "no"
	}
	return strings.TrimSpace("yes (" + v.Reason + ")")
}

// certStates are the --state values the server knows.
var certStates = []string{"requested", "not-issued", "issued", "installed", "revoked", "live"}

func (a *app) certsListCmd() *cobra.Command {
	var device, state string
	var limit int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the certificates the site issued for devices, newest first",
		Long: `list shows the device certificates the site's CA issued: serial, device,
purpose and profile, expiry, whether the device has it installed, and
whether it was revoked and why. --state live selects those still valid
(issued or installed).`,
		Example: `  amtopsctl certs list --device pc-0-001
  amtopsctl certs list --state revoked -o csv`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return usage("--limit %d: must not be negative", limit)
			}
			if device != "" {
				d, err := a.resolveDevice(cmd, device)
				if err != nil {
					return err
				}
				device = d.GetId()
			}
			resp, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.ListCertificatesResponse, error) {
				return c.ListCertificates(ctx, &pb.ListCertificatesRequest{Device: device, State: state, Limit: int32(limit)})
			})
			if err != nil {
				return err
			}
			views := make([]deviceCertView, 0, len(resp.GetCertificates()))
			for _, c := range resp.GetCertificates() {
				views = append(views, viewDeviceCert(c))
			}
			if a.structured() {
				return a.printData(views)
			}
			return a.certTable(views)
		},
	}
	f := cmd.Flags()
	f.StringVar(&device, "device", "", "only this device's (ID, FQDN, IP address or host name)")
	f.StringVar(&state, "state", "", "only certificates in this state: "+strings.Join(certStates, ", "))
	f.IntVar(&limit, "limit", 0, "at most this many (0: all)")
	_ = cmd.RegisterFlagCompletionFunc("state", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return certStates, cobra.ShellCompDirectiveNoFileComp
	})
	_ = cmd.RegisterFlagCompletionFunc("device", func(cmd *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
		return a.complete(cmd, "device", prefix)
	})
	return cmd
}

// certTable prints certificates as a table (wide adds CA, issue time and job).
func (a *app) certTable(views []deviceCertView) error {
	header := []string{"SERIAL", "DEVICE", "FQDN", "PURPOSE", "PROFILE", "NOT AFTER", "INSTALLED", "REVOKED"}
	if a.output == "wide" {
		header = append(header, "CA", "NOT BEFORE", "REVOKED AT", "JOB")
	}
	t := a.newTable(header...)
	for _, v := range views {
		row := []string{v.Serial, v.DeviceID, v.FQDN, v.Purpose, v.Profile, v.NotAfter, yesNo(v.Installed), v.revokedCell()}
		if a.output == "wide" {
			row = append(row, v.CA, v.NotBefore, v.RevokedAt, v.JobID)
		}
		t.row(row...)
	}
	return t.flush()
}
