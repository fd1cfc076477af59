package domain

import "net/netip"

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
