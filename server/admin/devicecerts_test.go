package admin_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/admin/admintest"
)

func serials(cs []*pb.Certificate) string {
	var out []string
	for _, c := range cs {
		out = append(out, c.GetSerial())
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

func sortedJoin(xs ...string) string {
	slices.Sort(xs)
	return strings.Join(xs, ",")
}

func TestListCertificates(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	ctx := context.Background()
	d1 := s.Device(t, "d1", "pc-1", "10.0.0.5", domain.StatusProvisioned)
	d2 := s.Device(t, "d2", "pc-2", "10.0.0.6", domain.StatusProvisioned)
	if _, err := s.Store.UpdateDevice(ctx, "d1", func(d *domain.Device) error {
		d.ADAccountDN = "CN=pc-1,OU=AMT,DC=amt,DC=test"
		d.SPNs = []string{"HTTP/pc-1.amt.test:16992", "HTTP/pc-1.amt.test:16993"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	installed, issued, revoked := issueFor(t, s, d1, domain.CertInstalled), issueFor(t, s, d1, domain.CertIssued), issueFor(t, s, d1, domain.CertRevoked)
	other := issueFor(t, s, d2, domain.CertInstalled)
	read := s.Dial(t, s.Read)

	for _, c := range []struct {
		name, device, state string
		want                string
	}{
		{"all", "", "", sortedJoin(installed, issued, revoked, other)},
		{"installed", "", "installed", sortedJoin(installed, other)},
		{"live of one device by FQDN", "pc-1.amt.test", "live", sortedJoin(installed, issued)},
		{"revoked", "", "REVOKED", revoked},
		{"issued of the other device", "d2", "issued", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, err := read.ListCertificates(ctx, &pb.ListCertificatesRequest{Device: c.device, State: c.state})
			if err != nil {
				t.Fatal(err)
			}
			if got := serials(resp.GetCertificates()); got != c.want {
				t.Errorf("serials %s, want %s", got, c.want)
			}
		})
	}
	resp, err := read.ListCertificates(ctx, &pb.ListCertificatesRequest{State: "revoked"})
	if err != nil {
		t.Fatal(err)
	}
	rc := resp.GetCertificates()[0]
	if rc.GetRevocationReason() != "superseded" || rc.GetRevokedAt() == nil || rc.GetFqdn() != "pc-1.amt.test" || rc.GetPurpose() != "server-auth" ||
		rc.GetNotAfter().AsTime().Before(rc.GetNotBefore().AsTime()) || rc.GetDeviceId() != "d1" {
		t.Errorf("revoked certificate %v", rc)
	}
	if resp, err := read.ListCertificates(ctx, &pb.ListCertificatesRequest{Limit: 2}); err != nil || len(resp.GetCertificates()) != 2 {
		t.Errorf("limit 2: %v %v", resp, err)
	}
	_, err = read.ListCertificates(ctx, &pb.ListCertificatesRequest{State: "expired"})
	wantCode(t, err, codes.InvalidArgument, "live")
	_, err = read.ListCertificates(ctx, &pb.ListCertificatesRequest{Device: "nosuch"})
	wantCode(t, err, codes.NotFound, "nosuch")

	dev, err := read.GetDevice(ctx, &pb.GetDeviceRequest{Id: "pc-1.amt.test"})
	if err != nil {
		t.Fatal(err)
	}
	if got := serials(dev.GetCertificates()); got != sortedJoin(installed, issued, revoked) {
		t.Errorf("device certificates %s", got)
	}
	if dev.GetAdAccountDn() != "CN=pc-1,OU=AMT,DC=amt,DC=test" || len(dev.GetSpns()) != 2 {
		t.Errorf("device AD account %q SPNs %v", dev.GetAdAccountDn(), dev.GetSpns())
	}
	list, err := read.ListDevices(ctx, &pb.ListDevicesRequest{})
	if err != nil || len(list.GetDevices()) != 2 || len(list.GetDevices()[0].GetCertificates()) != 0 {
		t.Errorf("lists carry no certificates: %v %v", list, err)
	}
}
