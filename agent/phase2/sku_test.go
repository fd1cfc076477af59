package phase2_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/amtops/amtops/agent/phase2"
	"github.com/amtops/amtops/internal/amtsim"
	"github.com/amtops/amtops/internal/amtsim/amtsimtest"
	"github.com/amtops/amtops/internal/domain"
)

// A Standard Manageability device has no KVM: provisioning and update skip
// it with a reason (read from the SKU in the identity step, no extra
// call) and end as they do on full AMT; full AMT gets its KVM.
func TestKVMBySKU(t *testing.T) {
	sim := amtsimtest.Start(t, amtsim.Config{Devices: 2, Kind: amtsim.KindMEBx, Password: provPassword, CommitDelay: 30 * time.Millisecond,
		BaseIP: netip.MustParseAddr("127.21.1.1")},
		map[int]amtsim.Override{0: {SKU: amtsim.SKUAMT}, 1: {SKU: amtsim.SKUStandard}})
	c := newCA(t)
	cases := []struct {
		name    string
		sku     amtsim.SKU
		wantKVM bool
	}{
		{name: "full AMT configures KVM", sku: amtsim.SKUAMT, wantKVM: true},
		{name: "Standard Manageability skips KVM", sku: amtsim.SKUStandard},
	}
	requests := map[amtsim.SKU]int{}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := sim.Addrs()[i]
			if st := device(t, sim, a); st.SKU != tc.sku {
				t.Fatalf("device SKU %q, want %q", st.SKU, tc.sku)
			}
			prov := provisionJob(t, c, a, "sku"+string(tc.sku))
			before := device(t, sim, a).Requests
			rec := &recorder{}
			res := phase2.NewExecutor(execConfig(sim)).Run(context.Background(), prov, rec)
			if res.Err != nil {
				t.Fatalf("provision: step %s: %v\n%s", res.ErrorStep, res.Err, rec.all())
			}
			st := device(t, sim, a)
			requests[tc.sku] = st.Requests - before
			skipEvent := phase2.StepKVM + " " + string(domain.OutcomeSkipped) + " " + phase2.SkipNoKVM
			if got := strings.Contains(rec.all(), skipEvent); got == tc.wantKVM {
				t.Errorf("kvm skipped event present %t, want %t\n%s", got, !tc.wantKVM, rec.all())
			}
			if st.ProvisioningState != 2 || st.KVM != tc.wantKVM || !st.ListenerEnabled || !st.IDER || !st.SOL {
				t.Errorf("state %d KVM %t listener %t IDER %t SOL %t, want provisioned, KVM %t, listener, IDE-R and SOL on",
					st.ProvisioningState, st.KVM, st.ListenerEnabled, st.IDER, st.SOL, tc.wantKVM)
			}
			// Update asks for KVM again: skipped again, the job still ends well.
			up := updateJob(prov, nil, false)
			up.Settings.Kvm = true
			rec = &recorder{}
			if res := phase2.NewExecutor(execConfig(sim)).Run(context.Background(), up, rec); res.Err != nil {
				t.Fatalf("update: step %s: %v\n%s", res.ErrorStep, res.Err, rec.all())
			}
			if got := strings.Contains(rec.all(), skipEvent); got == tc.wantKVM {
				t.Errorf("update: kvm skipped event present %t, want %t", got, !tc.wantKVM)
			}
			if st := device(t, sim, a); st.KVM != tc.wantKVM || !st.ListenerEnabled {
				t.Errorf("after update KVM %t listener %t, want KVM %t with the listener on", st.KVM, st.ListenerEnabled, tc.wantKVM)
			}
		})
	}
	// Reading the SKU costs nothing: the Standard device needs fewer calls
	// (no KVM change, no KVM read-back), never more.
	if requests[amtsim.SKUStandard] >= requests[amtsim.SKUAMT] {
		t.Errorf("provisioning took %d WS-Man requests on Standard Manageability, %d on full AMT; want fewer",
			requests[amtsim.SKUStandard], requests[amtsim.SKUAMT])
	}
}

func execConfig(sim *amtsim.Sim) phase2.Config {
	return phase2.Config{
		HTTPPort: sim.HTTPPort(), TLSPort: sim.TLSPort(),
		CallTimeout: 5 * time.Second, CommitWait: 40 * time.Millisecond,
		CommitDeadline: 5 * time.Second, PollInterval: 20 * time.Millisecond,
	}
}
