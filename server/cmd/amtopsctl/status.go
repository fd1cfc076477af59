package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// statusView is the fleet at a glance (FleetSummary).
type statusView struct {
	Devices              int64            `json:"devices"`
	ByStatus             map[string]int64 `json:"by_status"`
	ByControlMode        map[string]int64 `json:"by_control_mode"`
	ByGeneration         map[string]int64 `json:"by_generation"`
	Failed               int64            `json:"failed"`
	Blockers             map[string]int64 `json:"blockers"`
	ProvisionedLastHour  int64            `json:"provisioned_last_hour"`
	ProvisionedPerMinute []int32          `json:"provisioned_per_minute"`
	AgentsOnline         int32            `json:"agents_online"`
	AgentsOffline        int32            `json:"agents_offline"`
	ComputedAt           string           `json:"computed_at"`
}

func viewStatus(s *pb.FleetSummaryResponse) statusView {
	v := statusView{Devices: s.GetDevices(), ByStatus: map[string]int64{}, ByControlMode: orEmpty(s.GetByControlMode()),
		ByGeneration: orEmpty(s.GetByGeneration()), Failed: s.GetFailed(), Blockers: orEmpty(s.GetBlockers()),
		ProvisionedPerMinute: s.GetProvisionedPerMinute(), AgentsOnline: s.GetAgentsOnline(), AgentsOffline: s.GetAgentsOffline(),
		ComputedAt: tsString(s.GetComputedAt())}
	for k, n := range s.GetByStatus() {
		v.ByStatus[enumName(k, "DEVICE_STATUS_")] = n
	}
	for _, n := range v.ProvisionedPerMinute {
		v.ProvisionedLastHour += int64(n)
	}
	if v.ProvisionedPerMinute == nil {
		v.ProvisionedPerMinute = []int32{}
	}
	return v
}

func orEmpty(m map[string]int64) map[string]int64 {
	if m == nil {
		return map[string]int64{}
	}
	return m
}

// counts is "a 3, b 1": largest first, then by name.
func counts(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y string) int { return cmp.Or(cmp.Compare(m[y], m[x]), strings.Compare(x, y)) })
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func (a *app) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "The fleet at a glance: devices by status, mode and generation, failures, blockers, agents",
		Long: `status prints the site's fleet summary, as the console's overview shows it:
devices by status, control mode and AMT generation, devices whose last
operation failed ('devices list --status failed' lists them), what keeps
devices from remote configuration, devices provisioned in the last hour, and
agents online and offline. The server computes it at most every few seconds.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.FleetSummaryResponse, error) {
				return c.FleetSummary(ctx, &pb.FleetSummaryRequest{})
			})
			if err != nil {
				return err
			}
			v := viewStatus(s)
			if a.structured() {
				return a.printData(v)
			}
			return a.keyValues("Devices", fmt.Sprint(v.Devices), "By status", counts(v.ByStatus),
				"By control mode", counts(v.ByControlMode), "By AMT generation", counts(v.ByGeneration),
				"Failed", fmt.Sprint(v.Failed), "Activation blockers", counts(v.Blockers),
				"Provisioned, last hour", fmt.Sprint(v.ProvisionedLastHour),
				"Agents", fmt.Sprintf("%d online, %d offline", v.AgentsOnline, v.AgentsOffline), "Computed", v.ComputedAt)
		},
	}
}
