package admin_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/pki"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/admin/admintest"
)

// issueFor has the site's device CA issue a server certificate for d and
// records it with status st, as phase 1 does.
func issueFor(t *testing.T, s *admintest.Server, d domain.Device, st domain.CertStatus) string {
	t.Helper()
	ctx := context.Background()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CSR(key, d.FQDN())
	if err != nil {
		t.Fatal(err)
	}
	iss, err := s.DeviceCA.Issue(ctx, pki.Request{Profile: pki.ProfileServerAuth, FQDN: d.FQDN(), CSR: csr})
	if err != nil {
		t.Fatal(err)
	}
	rec := domain.CertificateRecord{Serial: iss.Serial, DeviceID: d.ID, Purpose: domain.PurposeServerAuth, Status: st,
		Subject: d.FQDN(), NotBefore: iss.NotBefore, NotAfter: iss.NotAfter, CA: iss.CA, Profile: string(iss.Profile), JobID: "b0:" + d.ID}
	if st == domain.CertRevoked {
		if err := s.DeviceCA.Revoke(ctx, iss.Serial, domain.ReasonSuperseded); err != nil {
			t.Fatal(err)
		}
		rec.Reason, rec.RevokedAt = domain.ReasonSuperseded, iss.NotBefore
	}
	if err := s.Store.PutCertificate(ctx, rec); err != nil {
		t.Fatal(err)
	}
	return iss.Serial
}

func TestDeleteDeviceRefusals(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	ctx := context.Background()
	op := s.Dial(t, s.Operate)
	s.Device(t, "prov", "pc-prov", "10.0.0.1", domain.StatusProvisioned)
	kept := s.Device(t, "kept", "pc-kept", "10.0.0.2", domain.StatusNotProvisioned)
	kept.State = domain.ProvisioningIn
	if err := s.Store.PutDevice(ctx, kept); err != nil {
		t.Fatal(err)
	}
	if err := s.Store.PutSecret(ctx, "device/kept/admin", []byte("Adm1n!pass")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, ref string
		code      codes.Code
		mentions  []string
	}{
		{"provisioned", "pc-prov.amt.test", codes.FailedPrecondition, []string{"is provisioned", "remove prov --all"}},
		{"admin account kept", "kept", codes.FailedPrecondition, []string{"admin account", "remove kept --all"}},
		{"unknown", "nosuch", codes.NotFound, []string{"nosuch"}},
		{"empty", "", codes.InvalidArgument, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := op.DeleteDevice(ctx, &pb.DeleteDeviceRequest{Id: c.ref})
			wantCode(t, err, c.code, c.mentions...)
		})
	}
	for _, id := range []string{"prov", "kept"} {
		if _, err := s.Store.GetDevice(ctx, id); err != nil {
			t.Errorf("refused deletion removed %s: %v", id, err)
		}
	}
	if _, err := s.Store.GetSecret(ctx, "device/kept/admin"); err != nil {
		t.Errorf("refused deletion lost the admin password: %v", err)
	}
	if _, err := s.Dial(t, s.Read).DeleteDevice(ctx, &pb.DeleteDeviceRequest{Id: "kept"}); err == nil {
		t.Error("read token deleted a device")
	}
}

// A device is deleted only once no job holds it; the deletion revokes
// every live certificate at the CA, deletes its secrets and memberships
// and leaves an event naming the administrator.
func TestDeleteDevice(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	ctx := context.Background()
	op := s.Dial(t, s.Operate)
	if _, err := op.CreateCollection(ctx, &pb.CreateCollectionRequest{Name: "lab"}); err != nil {
		t.Fatal(err)
	}
	d := s.Device(t, "d1", "pc-1", "10.0.0.5", domain.StatusNotProvisioned)
	other := s.Device(t, "d2", "pc-2", "10.0.0.6", domain.StatusNotProvisioned)
	if _, err := op.AddCollectionMembers(ctx, &pb.CollectionMembersRequest{Collection: "lab", DeviceIds: []string{"d1", "d2"}}); err != nil {
		t.Fatal(err)
	}
	live := []string{issueFor(t, s, d, domain.CertInstalled), issueFor(t, s, d, domain.CertIssued)}
	old := issueFor(t, s, d, domain.CertRevoked)
	othersCert := issueFor(t, s, other, domain.CertInstalled)
	secrets := []string{"device/d1/admin", "device/d1/kerberos", "device/d1/mebx", "device/d2/admin"}
	for _, n := range secrets {
		if err := s.Store.PutSecret(ctx, n, []byte("secret of "+n)); err != nil {
			t.Fatal(err)
		}
	}

	b, err := op.StartBatch(ctx, &pb.StartBatchRequest{Kind: pb.JobKind_JOB_KIND_PROVISION, DeviceIds: []string{"d1"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = op.DeleteDevice(ctx, &pb.DeleteDeviceRequest{Id: "pc-1.amt.test"})
	wantCode(t, err, codes.FailedPrecondition, "busy with job "+b.GetId()+":d1", "cancel batch "+b.GetId())
	if _, err := op.CancelBatch(ctx, &pb.GetBatchRequest{Id: b.GetId()}); err != nil {
		t.Fatal(err)
	}

	resp, err := op.DeleteDevice(ctx, &pb.DeleteDeviceRequest{Id: "pc-1.amt.test"})
	if err != nil {
		t.Fatalf("delete after the batch was cancelled: %v", err)
	}
	if got, want := strings.Join(slices.Sorted(slices.Values(resp.GetRevokedSerials())), ","), strings.Join(slices.Sorted(slices.Values(live)), ","); got != want {
		t.Errorf("revoked %s, want the live ones %s", got, want)
	}
	if resp.GetSecretsDeleted() != 3 || strings.Join(resp.GetCollections(), ",") != "lab" {
		t.Errorf("response %v: want 3 secrets and collection lab", resp)
	}
	if _, err := op.GetDevice(ctx, &pb.GetDeviceRequest{Id: "d1"}); err == nil {
		t.Error("device still there")
	}
	for _, serial := range append(live, old) {
		rec, err := s.DeviceCA.Lookup(ctx, serial)
		if err != nil || !rec.Revoked {
			t.Errorf("CA: %s revoked=%v (%v)", serial, rec != nil && rec.Revoked, err)
		}
		cr, err := s.Store.CertificateBySerial(ctx, serial)
		if err != nil || cr.Status != domain.CertRevoked {
			t.Errorf("record %s: %v %v", serial, cr.Status, err)
		}
		if serial != old && cr.Reason != domain.ReasonCessationOfOperation {
			t.Errorf("record %s: reason %d, want cessation of operation", serial, cr.Reason)
		}
	}
	if rec, err := s.DeviceCA.Lookup(ctx, othersCert); err != nil || rec.Revoked {
		t.Errorf("another device's certificate revoked: %v %v", rec, err)
	}
	for _, n := range secrets {
		_, err := s.Store.GetSecret(ctx, n)
		if gone := err != nil; gone != strings.HasPrefix(n, "device/d1/") {
			t.Errorf("secret %s: gone=%v", n, gone)
		}
	}
	cols, err := op.ListCollections(ctx, &pb.ListCollectionsRequest{})
	if err != nil || len(cols.GetCollections()) != 1 || cols.GetCollections()[0].GetMembers() != 1 {
		t.Errorf("collections after delete: %v %v; want lab with d2 only", cols, err)
	}
	log, err := op.GetDeviceLog(ctx, &pb.GetDeviceLogRequest{Id: "d1"})
	if err != nil {
		t.Fatalf("log of the deleted device: %v", err)
	}
	evs := log.GetEvents()
	last := evs[len(evs)-1]
	if last.GetStep() != "delete" || !strings.Contains(last.GetDetail(), "deleted by ops") || !strings.Contains(last.GetDetail(), "2 certificate(s) revoked") {
		t.Errorf("last event %v: want the deletion by ops", last)
	}
	if _, err := op.DeleteDevice(ctx, &pb.DeleteDeviceRequest{Id: "d1"}); err == nil {
		t.Error("second delete of the same device succeeded")
	}
	// The claim is released: a device made again with the ID takes a batch.
	s.Device(t, "d1", "pc-1", "10.0.0.5", domain.StatusNotProvisioned)
	b2, err := op.StartBatch(ctx, &pb.StartBatchRequest{Kind: pb.JobKind_JOB_KIND_PROVISION, DeviceIds: []string{"d1"}})
	if err != nil || b2.GetFailed() != 0 {
		t.Errorf("batch on a re-made device: %v %v", b2, err)
	}
}
