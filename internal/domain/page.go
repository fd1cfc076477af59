package domain

import (
	"net/netip"
	"slices"
	"strings"
)

// Filters and pages of the site database's listings.

// JobFilter selects jobs of one batch. Zero fields match all.
type JobFilter struct {
	State  JobState
	Limit  int    // default 100, at most 10000
	Cursor string // Next of the previous page
}

// JobPage is one page of ListJobs. Next is empty on the last page.
type JobPage struct {
	Jobs []Job
	Next string
}

// DeviceFilter selects devices for ListDevices. Zero fields match all.
type DeviceFilter struct {
	Subnet     netip.Prefix
	Status     Status
	Collection string
	// Query matches part of the ID, host name, FQDN, IP or UUID, ignoring
	// case; lower-case it once with Normalize.
	Query string
	// Generation is the AMT major version ("16"), or GenerationUnknown.
	Generation string
	// Failed selects devices whose last operation failed.
	Failed bool
	// Suppressed selects devices kept from automatic provisioning (S18).
	Suppressed bool
	// Limit is the page size: default 100, at most 10000.
	Limit int
	// Cursor is the Next value of the previous page; empty starts over.
	Cursor string
}

// DevicePage is one page of ListDevices. Next is empty on the last page.
type DevicePage struct {
	Devices []Device
	Next    string
}

// GenerationUnknown is the generation of a device whose AMT version is not
// known.
const GenerationUnknown = "unknown"

// Generation is the AMT major version of d ("16" of "16.1.25"), or
// GenerationUnknown.
func (d Device) Generation() string {
	major, _, _ := strings.Cut(d.AMTVersion, ".")
	if major == "" {
		return GenerationUnknown
	}
	return major
}

// Failed reports whether the device's last operation failed.
func (d Device) Failed() bool { return d.LastError != "" }

// Match reports whether d passes every field of f but the paging ones.
func (f DeviceFilter) Match(d Device) bool {
	return (f.Status == "" || d.Status == f.Status) &&
		(!f.Subnet.IsValid() || d.Subnet == f.Subnet.Masked()) &&
		(f.Collection == "" || slices.Contains(d.Collections, f.Collection)) &&
		(f.Generation == "" || d.Generation() == f.Generation) &&
		(!f.Failed || d.Failed()) &&
		(!f.Suppressed || d.SuppressAutoProvision) &&
		(f.Query == "" || d.matchesQuery(strings.ToLower(f.Query)))
}

func (d Device) matchesQuery(q string) bool {
	for _, v := range []string{d.ID, d.HostName, d.FQDN(), d.UUID} {
		if strings.Contains(strings.ToLower(v), q) {
			return true
		}
	}
	return d.IP.IsValid() && strings.Contains(d.IP.String(), q)
}

// Indexed reports whether only indexed fields (or none) filter: the rest
// are matched by reading every candidate.
func (f DeviceFilter) Indexed() bool {
	return f.Query == "" && f.Generation == "" && !f.Failed && !f.Suppressed
}
