package main

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/amtops/amtops/internal/amtsim"
	"github.com/amtops/amtops/internal/domain"
)

// audit is what one experiment left, every figure exact: each list
// names the devices, jobs or certificates behind its count.
type audit struct {
	name, title string
	devices     int
	elapsed     time.Duration
	terminal    bool
	notes       []string

	provisioned int
	failures    map[string][]string // "step: reason" → devices
	notTerminal []string
	lost        []string

	disagreements []string
	byKind        map[string]int // disagreements by what differed

	certs       certFigures
	orphanCerts []string
	orphanAD    int

	conflicts []string
	late      lateVerdict
	hasLate   bool
	jobs      [3]int // succeeded, failed, cancelled
	// helloBatches counts the batches Hellos started; otherBatches
	// names any other (a sweep during the run).
	helloBatches int
	otherBatches []string

	scan         scanFigures
	secretsFound []string
}

type certFigures struct {
	issued, revoked, installed, expired, unrecorded int
	// servedRevoked counts revoked certificates a device serves on 16993.
	servedRevoked int
}

func (a *audit) failedCount() int {
	n := 0
	for _, ds := range a.failures {
		n += len(ds)
	}
	return n
}

func (a *audit) disagree(kind, dev, format string, args ...any) {
	a.byKind[kind]++
	a.disagreements = append(a.disagreements, fmt.Sprintf("%s %s: %s", kind, dev, fmt.Sprintf(format, args...)))
}

// audit reads the simulators, the site and the CA once the agents have
// stopped.
func (r *runState) audit(ctx context.Context, elapsed time.Duration, terminal bool) (*audit, error) {
	a := &audit{name: r.e.name, title: r.e.title(r.o), devices: r.o.devices, elapsed: elapsed,
		terminal: terminal, notes: r.notesOf(), failures: map[string][]string{}, byKind: map[string]int{}}
	sims, err := r.f.SimDevices(ctx)
	if err != nil {
		return nil, err
	}
	site := map[netip.Addr][]domain.Device{}
	if err := r.st.EachDevice(ctx, func(d domain.Device) error {
		site[d.IP] = append(site[d.IP], d)
		return nil
	}); err != nil {
		return nil, err
	}
	jobs, err := r.jobStates(ctx, a)
	if err != nil {
		return nil, err
	}
	openJobs := map[string]bool{}  // by device
	succeeded := map[string]bool{} // by device
	for _, j := range jobs {
		if !j.State.Final() {
			openJobs[j.DeviceID] = true
		}
		if j.State == domain.JobSucceeded {
			succeeded[j.DeviceID] = true
		}
		switch j.State {
		case domain.JobSucceeded:
			a.jobs[0]++
		case domain.JobFailed:
			a.jobs[1]++
		case domain.JobCancelled:
			a.jobs[2]++
		}
	}
	events := map[string][]domain.OperationEvent{} // by job
	seen := map[netip.Addr]bool{}
	for _, s := range sims {
		seen[s.Addr] = true
		ds := site[s.Addr]
		if err := r.auditDevice(ctx, a, s, ds, deviceJobs{open: openJobs, succeeded: succeeded}, events); err != nil {
			return nil, err
		}
	}
	for ip, ds := range site {
		if !seen[ip] {
			for _, d := range ds {
				a.disagree("record", d.ID, "site record at %s with no such device in the fleet", ip)
			}
		}
	}
	if err := r.auditCerts(ctx, a, sims); err != nil {
		return nil, err
	}
	a.conflicts = append(a.conflicts, conflicts(events, jobs)...)
	if len(r.late.jobs) > 0 && !r.late.returned.IsZero() {
		a.hasLate = true
		if a.late, err = r.late.verdict(ctx, r, events); err != nil {
			return nil, err
		}
		a.conflicts = append(a.conflicts, a.late.accepted...)
	}
	hits, fig, err := r.scanSecrets(ctx)
	if err != nil {
		return nil, err
	}
	a.scan = fig
	for _, h := range hits {
		a.secretsFound = append(a.secretsFound, h.secret+" in "+h.where)
	}
	return a, nil
}

// jobStates reads every batch's jobs, by job ID, and counts the batches
// by origin into a.
func (r *runState) jobStates(ctx context.Context, a *audit) (map[string]domain.Job, error) {
	out := map[string]domain.Job{}
	ids, err := r.st.ListBatches(ctx, 10000)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		b, err := r.st.GetBatch(ctx, id)
		if err != nil {
			return nil, err
		}
		if b.Origin == "hello" {
			a.helloBatches++
		} else {
			a.otherBatches = append(a.otherBatches, fmt.Sprintf("%s (origin %s, %d jobs)", b.ID, b.Origin, b.Total))
		}
		cursor := ""
		for {
			page, err := r.st.ListJobs(ctx, id, domain.JobFilter{Limit: 10000, Cursor: cursor})
			if err != nil {
				return nil, err
			}
			for _, j := range page.Jobs {
				out[j.ID] = j
			}
			if cursor = page.Next; cursor == "" {
				break
			}
		}
	}
	return out, nil
}

// deviceJobs say, by device ID, which have a job open and which one
// that succeeded.
type deviceJobs struct{ open, succeeded map[string]bool }

// auditDevice compares one simulated device with the site's record.
func (r *runState) auditDevice(ctx context.Context, a *audit, s amtsim.DeviceState, ds []domain.Device,
	jobs deviceJobs, events map[string][]domain.OperationEvent) error {
	if len(ds) == 0 {
		a.lost = append(a.lost, fmt.Sprintf("%s: no site record", s.Addr))
		return nil
	}
	if len(ds) > 1 {
		a.disagree("record", s.Addr.String(), "%d site records for one device", len(ds))
	}
	d := ds[0]
	name := d.HostName + " (" + s.Addr.String() + ")"
	if d.UUID != "" && !strings.EqualFold(d.UUID, s.UUID) {
		a.lost = append(a.lost, fmt.Sprintf("%s: site record has UUID %s, the device %s", name, d.UUID, s.UUID))
		return nil
	}
	evs, err := r.st.Events(ctx, d.ID, 0)
	if err != nil {
		return err
	}
	for _, e := range evs {
		if e.JobID != "" {
			events[e.JobID] = append(events[e.JobID], e)
		}
	}
	open := jobs.open[d.ID]
	if d.Status == domain.StatusProvisioned && !jobs.succeeded[d.ID] {
		a.disagree("record", name, "the site says provisioned, none of its jobs succeeded")
	}
	switch {
	case open || d.Status != domain.StatusProvisioned && d.LastError == "":
		a.notTerminal = append(a.notTerminal, fmt.Sprintf("%s: status %s, job open %v", name, d.Status, open))
	case d.Status == domain.StatusProvisioned:
		a.provisioned++
	default:
		reason := d.LastErrorStep + ": " + clip(d.LastError, 160)
		a.failures[reason] = append(a.failures[reason], name)
	}
	return r.compare(ctx, a, name, d, s)
}

// compare is the device against the site: status, admin credential,
// the certificate serving TLS.
func (r *runState) compare(ctx context.Context, a *audit, name string, d domain.Device, s amtsim.DeviceState) error {
	activated := s.ProvisioningState == 2 && s.ControlMode == 2
	siteProv := d.Status == domain.StatusProvisioned
	// A job that failed after its activation's commit leaves the device in
	// ACM without the rest of its configuration: the site agrees when it
	// records that (state 2, ACM, the failure), and its sweep finishes it.
	siteActivated := siteProv || d.State == domain.ProvisioningPost && d.ControlMode == domain.ControlModeAdmin && d.LastError != ""
	if siteActivated != activated {
		a.disagree("status", name, "site %s (state %d, control mode %d), device in state %d, control mode %d",
			d.Status, d.State, d.ControlMode, s.ProvisioningState, s.ControlMode)
	} else if siteProv && (d.State != domain.ProvisioningPost || d.ControlMode != domain.ControlModeAdmin) {
		a.disagree("status", name, "site provisioned with state %d, control mode %d", d.State, d.ControlMode)
	}
	if siteProv && s.UncommittedChanges {
		a.disagree("uncommitted", name, "the site says provisioned, the device holds uncommitted changes (commits %d, reboots %d)", s.Commits, s.Reboots)
	}
	if activated {
		if err := r.compareAdmin(ctx, a, name, d, s); err != nil {
			return err
		}
	}
	if siteProv {
		return r.compareTLS(ctx, a, name, d, s)
	}
	return nil
}

// compareAdmin: the device's digest HA1 for its admin account against
// MD5(user:realm:password) of the site's sealed admin password.
func (r *runState) compareAdmin(ctx context.Context, a *audit, name string, d domain.Device, s amtsim.DeviceState) error {
	pw, err := r.st.GetSecret(ctx, "device/"+d.ID+"/admin")
	if errors.Is(err, domain.ErrNotFound) {
		pending := "none"
		if p, err := r.st.GetSecret(ctx, "device/"+d.ID+"/admin-pending"); err == nil {
			pending = "does not match"
			if ha1(s.AdminUser, s.DigestRealm, p) == s.AdminHA1 {
				pending = "matches"
			}
		}
		a.disagree("admin", name, "device activated, the site has no admin password (its pending one: %s)", pending)
		return nil
	}
	if err != nil {
		return err
	}
	if ha1(s.AdminUser, s.DigestRealm, pw) != s.AdminHA1 {
		a.disagree("admin", name, "the device's admin credential (%s) is not the site's password", s.AdminUser)
	}
	return nil
}

func ha1(user, realm string, pw []byte) string {
	sum := md5.Sum([]byte(user + ":" + realm + ":" + string(pw)))
	return hex.EncodeToString(sum[:])
}

// compareTLS: the leaf the device serves on 16993 against the site's
// live server certificate records of the device.
func (r *runState) compareTLS(ctx context.Context, a *audit, name string, d domain.Device, s amtsim.DeviceState) error {
	recs, err := r.st.CertificatesByDevice(ctx, d.ID)
	if err != nil {
		return err
	}
	var live []domain.CertificateRecord
	for _, c := range recs {
		if c.Purpose == domain.PurposeServerAuth && c.Status.Live() {
			live = append(live, c)
		}
	}
	served := ""
	if len(s.TLS.ServedChain) > 0 {
		if c, err := x509.ParseCertificate(s.TLS.ServedChain[0]); err == nil {
			served = c.SerialNumber.String()
		}
	}
	switch {
	case len(live) == 0 && served == "":
		a.disagree("tls", name, "no live server certificate recorded, none served")
	case len(live) != 1:
		a.disagree("tls", name, "%d live server certificates recorded, device serves %q", len(live), served)
	case served == "":
		a.disagree("tls", name, "site records serial %s (%s), the device serves none", live[0].Serial, live[0].Status)
	case live[0].Serial != served:
		a.disagree("tls", name, "site records serial %s (%s), the device serves %s", live[0].Serial, live[0].Status, served)
	case live[0].Status != domain.CertInstalled:
		a.disagree("tls", name, "device serves serial %s, the site records it %s, not installed", served, live[0].Status)
	}
	return nil
}

// caCert is the built-in CA's record of a certificate it issued.
type caCert struct {
	DER []byte `json:"der"`
}

// auditCerts compares what the CA issued and revoked with what the
// devices hold: a live certificate installed on no device is an orphan.
func (r *runState) auditCerts(ctx context.Context, a *audit, sims []amtsim.DeviceState) error {
	onDevice, served := map[[32]byte]bool{}, map[[32]byte]bool{}
	for _, s := range sims {
		for _, c := range s.Certificates {
			onDevice[sha256.Sum256(c.DER)] = true
		}
		for i, c := range s.TLS.ServedChain {
			onDevice[sha256.Sum256(c)] = true
			served[sha256.Sum256(c)] = served[sha256.Sum256(c)] || i == 0
		}
	}
	revoked := map[string]bool{}
	members, err := r.ca().SetMembers(ctx, "revoked")
	if err != nil {
		return err
	}
	for _, m := range members {
		serial, _, _ := strings.Cut(m, ":")
		revoked[serial] = true
	}
	var keys []string
	iter := r.f.Redis().Scan(ctx, 0, "amtops:{blob:ca}:v:cert/*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return err
	}
	sort.Strings(keys)
	now := time.Now()
	for _, k := range keys {
		serial := k[strings.LastIndexByte(k, '/')+1:]
		raw, err := r.ca().Get(ctx, "cert/"+serial)
		if err != nil {
			return err
		}
		var rec caCert
		if err := json.Unmarshal(raw, &rec); err != nil {
			return fmt.Errorf("CA record %s: %w", serial, err)
		}
		cert, err := x509.ParseCertificate(rec.DER)
		if err != nil {
			return fmt.Errorf("CA certificate %s: %w", serial, err)
		}
		a.certs.issued++
		installed := onDevice[sha256.Sum256(rec.DER)]
		if installed {
			a.certs.installed++
		}
		if _, err := r.st.CertificateBySerial(ctx, serial); errors.Is(err, domain.ErrNotFound) {
			a.certs.unrecorded++
		}
		switch {
		case revoked[serial]:
			a.certs.revoked++
			if served[sha256.Sum256(rec.DER)] {
				a.certs.servedRevoked++
			}
		case now.After(cert.NotAfter):
			a.certs.expired++
		case !installed:
			a.orphanCerts = append(a.orphanCerts, fmt.Sprintf("serial %s for %s: live, on no device%s", serial,
				cert.Subject.CommonName, r.siteView(ctx, serial)))
		}
	}
	return nil
}

// siteView is what the site records of a certificate, for the report.
func (r *runState) siteView(ctx context.Context, serial string) string {
	rec, err := r.st.CertificateBySerial(ctx, serial)
	if err != nil {
		return "; the site has no record of it"
	}
	return fmt.Sprintf("; the site records it %s for job %s", rec.Status, rec.JobID)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
