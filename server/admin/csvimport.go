package admin

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/api"
)

// CSV columns. host_name, domain and ip are required; uuid and subnet
// are optional.
const (
	colHost   = "host_name"
	colDomain = "domain"
	colIP     = "ip"
	colUUID   = "uuid"
	colSubnet = "subnet"
)

var csvColumns = []string{colHost, colDomain, colIP, colUUID, colSubnet}

// maxCSVErrors bounds the problems one reply lists; the rest are counted.
const maxCSVErrors = 20

// csvRow is one checked line of an import file.
type csvRow struct {
	line     int
	host     string
	domain   string
	ip       netip.Addr
	uuid     string
	subnet   netip.Prefix
	existing *domain.Device // set by plan
}

func (r csvRow) fqdn() string { return strings.ToLower(r.host + "." + r.domain) }

// lineErr names the line and field of bad input. The value is cut
// short: twenty problems quoting megabyte fields would make a reply
// larger than gRPC carries.
func lineErr(line int, field, value, reason string) error {
	if r := []rune(value); len(r) > maxQuoted {
		value = string(r[:maxQuoted]) + "…"
	}
	return fmt.Errorf("csv line %d: %w", line, domain.InvalidField(field, value, reason))
}

// maxQuoted is how much of a bad value an error quotes.
const maxQuoted = 64

// errList gathers line errors up to maxCSVErrors.
type errList struct {
	errs  []error
	extra int
}

func (l *errList) add(err error) {
	if len(l.errs) < maxCSVErrors {
		l.errs = append(l.errs, err)
	} else {
		l.extra++
	}
}

func (l *errList) err() error {
	if len(l.errs) == 0 {
		return nil
	}
	errs := l.errs
	if l.extra > 0 {
		errs = append(slices.Clone(errs), fmt.Errorf("and %d more problems", l.extra))
	}
	return errors.Join(errs...)
}

// parseCSV checks a whole import file: the header, every field of every
// line, and duplicates within the file. Every problem names its line and
// field.
func parseCSV(data []byte) ([]csvRow, error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // a BOM from spreadsheet exports
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	r.TrimLeadingSpace = true
	r.Comment = '#'
	col, width, err := csvHeader(r)
	if err != nil {
		return nil, err
	}
	var errs errList
	var rows []csvRow
	seen := csvSeen{byFQDN: map[string]int{}, byIP: map[netip.Addr]int{}, byUUID: map[string]int{}}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			errs.add(csvSyntax(err))
			var pe *csv.ParseError
			if errors.As(err, &pe) && !errors.Is(pe.Err, csv.ErrFieldCount) {
				// A quoting error leaves the reader unsure where lines
				// end; stop here.
				return nil, errs.err()
			}
			continue
		}
		line, _ := r.FieldPos(0)
		if len(rec) != width {
			errs.add(fmt.Errorf("csv line %d: %w", line, domain.InvalidField("fields", fmt.Sprint(len(rec)), fmt.Sprintf("the header has %d columns", width))))
			continue
		}
		get := func(c string) string {
			if col[c] == 0 {
				return ""
			}
			return strings.TrimSpace(rec[col[c]-1])
		}
		if row, ok := csvLine(line, get, &errs); ok && seen.first(row, &errs) {
			rows = append(rows, row)
		}
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, domain.InvalidField("csv", "", "no devices after the header")
	}
	return rows, nil
}

// csvHeader reads the header: each column's position (1-based; 0 is
// absent) and the number of columns every line must have.
func csvHeader(r *csv.Reader) (map[string]int, int, error) {
	header, err := r.Read()
	if errors.Is(err, io.EOF) {
		return nil, 0, domain.InvalidField("csv", "", "empty file: the first line must be the header "+strings.Join(csvColumns[:3], ",")+"[,uuid][,subnet]")
	}
	if err != nil {
		return nil, 0, csvSyntax(err)
	}
	hline, _ := r.FieldPos(0)
	col := map[string]int{}
	var errs errList
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(h))
		switch {
		case !slices.Contains(csvColumns, h):
			errs.add(lineErr(hline, "header", h, "unknown column (want host_name,domain,ip[,uuid][,subnet])"))
		case col[h] != 0:
			errs.add(lineErr(hline, "header", h, "column appears twice"))
		default:
			col[h] = i + 1
		}
	}
	for _, need := range csvColumns[:3] {
		if col[need] == 0 {
			errs.add(lineErr(hline, "header", need, "required column missing (the first line must be the header host_name,domain,ip[,uuid][,subnet])"))
		}
	}
	return col, len(header), errs.err()
}

// csvLine checks the fields of one line; every problem goes to errs.
func csvLine(line int, get func(string) string, errs *errList) (csvRow, bool) {
	row, ok := csvRow{line: line}, true
	bad := func(field, value, reason string) { errs.add(lineErr(line, field, value, reason)); ok = false }
	row.host = get(colHost)
	if row.host == "" {
		bad(colHost, "", "required")
	} else if err := domain.ValidateHostName(row.host); err != nil {
		var fe *domain.FieldError
		errors.As(err, &fe)
		bad(colHost, row.host, fe.Reason)
	}
	row.domain = strings.TrimSuffix(get(colDomain), ".")
	if reason := checkDomain(row.domain); reason != "" {
		bad(colDomain, row.domain, reason)
	}
	if s := get(colIP); s == "" {
		bad(colIP, "", "required")
	} else if ip, err := netip.ParseAddr(s); err != nil || ip.Zone() != "" {
		bad(colIP, s, "not an IP address")
	} else {
		row.ip = ip.Unmap()
	}
	if s := get(colUUID); s != "" {
		if u, err := uuid.Parse(s); err != nil {
			bad(colUUID, s, "not a UUID")
		} else {
			row.uuid = u.String()
		}
	}
	if s := get(colSubnet); s != "" {
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			bad(colSubnet, s, "not a CIDR prefix")
		case row.ip.IsValid() && !p.Contains(row.ip):
			bad(colSubnet, s, "does not contain ip "+row.ip.String())
		default:
			row.subnet = p.Masked()
		}
	}
	return row, ok
}

// csvSeen finds a name, address or UUID that an earlier line already has.
type csvSeen struct {
	byFQDN map[string]int
	byIP   map[netip.Addr]int
	byUUID map[string]int
}

// first records row and reports whether it repeats no earlier line.
func (s csvSeen) first(row csvRow, errs *errList) bool {
	ok := true
	bad := func(field, value, reason string) { errs.add(lineErr(row.line, field, value, reason)); ok = false }
	if prev, dup := s.byFQDN[row.fqdn()]; dup {
		bad(colHost, row.host+"."+row.domain, fmt.Sprintf("the same name is on line %d", prev))
	}
	if prev, dup := s.byIP[row.ip]; dup {
		bad(colIP, row.ip.String(), fmt.Sprintf("the same address is on line %d", prev))
	}
	if prev, dup := s.byUUID[row.uuid]; dup && row.uuid != "" {
		bad(colUUID, row.uuid, fmt.Sprintf("the same UUID is on line %d", prev))
	}
	if ok {
		s.byFQDN[row.fqdn()], s.byIP[row.ip] = row.line, row.line
		if row.uuid != "" {
			s.byUUID[row.uuid] = row.line
		}
	}
	return ok
}

// csvSyntax turns a reader error into one naming the line.
func csvSyntax(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return fmt.Errorf("csv line %d: %w", pe.Line, domain.InvalidField("column "+fmt.Sprint(pe.Column), "", pe.Err.Error()))
	}
	return domain.InvalidField("csv", "", err.Error())
}

// checkDomain applies DNS rules to a domain name; "" is fine.
func checkDomain(d string) string {
	if d == "" {
		return "required"
	}
	if len(d) > 191 {
		return "longer than 191 characters"
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return "each label must be 1 to 63 characters"
		}
		if err := domain.ValidateHostName(label); err != nil {
			return "only letters, digits, '-' and '.' are allowed"
		}
	}
	return ""
}

// planImport checks the rows against the site database: it finds the
// device each row updates (by FQDN, else UUID) and refuses rows whose
// name, UUID or ID belong to different devices. Nothing is written.
func (s *Service) planImport(ctx context.Context, rows []csvRow) (warnings []string, err error) {
	unserved := 0
	var errs errList
	for i := range rows {
		r := &rows[i]
		var byName, byID *domain.Device
		if d, err := s.st.DeviceByFQDN(ctx, r.fqdn()); err == nil {
			byName = &d
		} else if !errors.Is(err, domain.ErrNotFound) {
			return nil, err
		}
		id := r.uuid
		if id == "" {
			id = r.fqdn()
		}
		if d, err := s.st.GetDevice(ctx, id); err == nil {
			byID = &d
		} else if !errors.Is(err, domain.ErrNotFound) {
			return nil, err
		}
		switch {
		case byName != nil && byID != nil && byName.ID != byID.ID:
			field := colUUID
			if r.uuid == "" {
				field = colHost
			}
			errs.add(lineErr(r.line, field, id, fmt.Sprintf("is device %s, but %s is device %s", byID.ID, r.fqdn(), byName.ID)))
			continue
		case byName != nil && r.uuid != "" && byName.UUID != "" && byName.UUID != r.uuid:
			errs.add(lineErr(r.line, colUUID, r.uuid, fmt.Sprintf("device %s (%s) has UUID %s", byName.ID, r.fqdn(), byName.UUID)))
			continue
		case byName != nil:
			r.existing = byName
		case byID != nil && byID.HostName != "":
			// The ID is taken by a device now known under another name:
			// a rename goes through `rename`, not an import.
			errs.add(lineErr(r.line, colHost, r.host+"."+r.domain, fmt.Sprintf("device %s is named %s; rename it with `amtopsctl rename` first", byID.ID, byID.FQDN())))
			continue
		case byID != nil:
			r.existing = byID
		}
		served, err := s.resolveSubnet(ctx, r)
		switch {
		case err != nil:
			return nil, err
		case served:
		case len(warnings) < maxCSVWarnings:
			warnings = append(warnings, fmt.Sprintf("csv line %d: no enrolled agent serves %s: add a subnet column or authorize an agent before provisioning", r.line, r.ip))
		default:
			unserved++
		}
	}
	if unserved > 0 {
		warnings = append(warnings, fmt.Sprintf("and %d more lines whose address no enrolled agent serves", unserved))
	}
	return warnings, errs.err()
}

// resolveSubnet fills a row's subnet when the file gave none: the one the
// device is already on, else the narrowest an enrolled agent serves. It
// reports whether the row has a subnet now.
func (s *Service) resolveSubnet(ctx context.Context, r *csvRow) (bool, error) {
	switch {
	case r.subnet.IsValid():
		return true, nil
	case r.existing != nil && r.existing.Subnet.IsValid() && r.existing.Subnet.Contains(r.ip):
		r.subnet = r.existing.Subnet
		return true, nil
	}
	p, ok, err := s.agentSubnet(ctx, r.ip)
	if ok {
		r.subnet = p
	}
	return ok, err
}

// maxCSVWarnings bounds the warnings one reply lists (a reply of 40,000
// of them exceeds gRPC's message limit); the rest are counted.
const maxCSVWarnings = 100

// agentSubnet finds the narrowest subnet an enrolled agent serves that
// contains ip.
func (s *Service) agentSubnet(ctx context.Context, ip netip.Addr) (netip.Prefix, bool, error) {
	agents, err := s.st.ListAgents(ctx)
	if err != nil {
		return netip.Prefix{}, false, err
	}
	var best netip.Prefix
	for _, a := range agents {
		for _, p := range a.Subnets {
			if p.Contains(ip) && (!best.IsValid() || p.Bits() > best.Bits()) {
				best = p
			}
		}
	}
	return best, best.IsValid(), nil
}

// ImportDevices creates or updates the devices of a CSV file and adds
// them to a collection. The file is checked whole, then against the site
// database, before anything is written.
func (s *Service) ImportDevices(ctx context.Context, req *pb.ImportDevicesRequest) (*pb.ImportDevicesResponse, error) {
	c, err := s.collection(ctx, req.GetCollection())
	if err != nil {
		return nil, api.ToStatus(err)
	}
	rows, err := parseCSV(req.GetCsv())
	if err != nil {
		return nil, api.ToStatus(err)
	}
	warnings, err := s.planImport(ctx, rows)
	if err != nil {
		return nil, api.ToStatus(err)
	}
	resp := &pb.ImportDevicesResponse{Warnings: warnings}
	for _, r := range rows {
		if r.existing == nil {
			resp.Created++
			resp.Added++
			continue
		}
		resp.Updated++
		if !slices.Contains(r.existing.Collections, c.Name) {
			resp.Added++
		}
	}
	if req.GetDryRun() {
		return resp, nil
	}
	for _, r := range rows {
		if err := s.writeRow(ctx, c.Name, r); err != nil {
			return nil, api.ToStatus(fmt.Errorf("csv line %d: %w", r.line, err))
		}
	}
	p, _ := principalFrom(ctx)
	s.opts.Log.Info().Str("collection", c.Name).Str("admin", p.Name).Int32("created", resp.Created).
		Int32("updated", resp.Updated).Int32("added", resp.Added).Msg("devices imported")
	return resp, nil
}

func (s *Service) writeRow(ctx context.Context, coll string, r csvRow) error {
	if r.existing == nil {
		id := r.uuid
		if id == "" {
			id = r.fqdn()
		}
		d := domain.Device{ID: id, UUID: r.uuid, HostName: r.host, Domain: r.domain, IP: r.ip, Subnet: r.subnet,
			Status: domain.StatusUnknown, Collections: []string{coll}}
		return s.st.PutDevice(ctx, d)
	}
	_, err := s.st.UpdateDevice(ctx, r.existing.ID, func(d *domain.Device) error {
		d.HostName, d.Domain, d.IP = r.host, r.domain, r.ip
		if r.subnet.IsValid() {
			d.Subnet = r.subnet
		} else if d.Subnet.IsValid() && !d.Subnet.Contains(r.ip) {
			d.Subnet = netip.Prefix{}
		}
		if d.UUID == "" {
			d.UUID = r.uuid
		}
		if !slices.Contains(d.Collections, coll) {
			d.Collections = append(d.Collections, coll)
		}
		return nil
	})
	return err
}
