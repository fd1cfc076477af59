package main

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/pki"
	"github.com/amtops/amtops/server/admin/admintest"
)

var (
	serialNums = regexp.MustCompile(`\b\d{15,}\b`)
	spaces     = regexp.MustCompile(` +`)
)

// issueCert has the site's device CA issue a certificate for the stored
// device id and records it as phase 1 would, with status st.
func issueCert(t *testing.T, s *admintest.Server, id string, st domain.CertStatus) string {
	t.Helper()
	ctx := context.Background()
	d, err := s.Store.GetDevice(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
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
	rec := domain.CertificateRecord{Serial: iss.Serial, DeviceID: id, Purpose: domain.PurposeServerAuth, Status: st,
		Subject: d.FQDN(), NotBefore: iss.NotBefore, NotAfter: iss.NotAfter, CA: iss.CA, Profile: string(iss.Profile), JobID: "b1:" + id}
	if st == domain.CertRevoked {
		rec.Reason, rec.RevokedAt = domain.ReasonSuperseded, iss.NotBefore
	}
	if err := s.Store.PutCertificate(ctx, rec); err != nil {
		t.Fatal(err)
	}
	return iss.Serial
}

func TestCertsList(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	seed(t, s)
	ctx := context.Background()
	revoked := issueCert(t, s, "d2", domain.CertRevoked)
	installed := issueCert(t, s, "d2", domain.CertInstalled)
	issueCert(t, s, "d1", domain.CertIssued)
	if _, err := s.Store.UpdateDevice(ctx, "d2", func(d *domain.Device) error {
		d.ADAccountDN, d.SPNs = "CN=pc2,OU=AMT,DC=amt,DC=test", []string{"HTTP/pc2.amt.test:16992", "HTTP/pc2.amt.test:16993"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	r := cli(t, s, s.Read, "certs", "list")
	r.want(t, 0)
	if n := strings.Count(r.stdout, "\n"); n != 4 {
		t.Fatalf("certs list: %d lines, want a header and 3 certificates:\n%s", n, r.stdout)
	}
	r = cli(t, s, s.Read, "certs", "list", "--state", "revoked", "-o", "csv")
	r.want(t, 0)
	if !strings.Contains(r.stdout, revoked) {
		t.Fatalf("revoked serial %s not listed:\n%s", revoked, r.stdout)
	}
	golden(t, "certs_list_revoked_csv", serialNums.ReplaceAllString(r.stdout, "SERIAL"))
	r = cli(t, s, s.Read, "certs", "list", "--device", "pc2", "--state", "live")
	r.want(t, 0)
	if !strings.Contains(r.stdout, installed) || strings.Contains(r.stdout, revoked) {
		t.Fatalf("live certificates of pc2:\n%s", r.stdout)
	}
	// Serials differ in length, and so the column widths.
	golden(t, "certs_list_device_live", spaces.ReplaceAllString(serialNums.ReplaceAllString(r.stdout, "SERIAL"), " "))
	cli(t, s, s.Read, "certs", "list", "--state", "bogus").want(t, 2, "state", "live")
	cli(t, s, s.Read, "certs", "list", "--device", "nosuch").want(t, 2, "nosuch")

	r = cli(t, s, s.Read, "devices", "show", "pc2")
	r.want(t, 0)
	for _, want := range []string{"AD account:", "CN=pc2,OU=AMT,DC=amt,DC=test", "HTTP/pc2.amt.test:16993", "Certificates:", installed, revoked, "yes (superseded)"} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("devices show does not mention %q:\n%s", want, r.stdout)
		}
	}
	r = cli(t, s, s.Read, "devices", "show", "pc2", "-o", "json")
	r.want(t, 0)
	if !strings.Contains(r.stdout, `"ad_account_dn": "CN=pc2`) || strings.Count(r.stdout, `"serial"`) != 2 {
		t.Fatalf("devices show -o json:\n%s", r.stdout)
	}
}
