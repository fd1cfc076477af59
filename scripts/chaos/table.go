package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// listMax bounds how many entries of a list the table names.
const listMax = 10

// printAudit prints one experiment's table: every must-be-0 figure
// marked, then what stands behind each non-zero one.
func printAudit(w io.Writer, a *audit) {
	fmt.Fprintf(w, "\n== %s: %s\n", a.name, a.title)
	for _, n := range a.notes {
		fmt.Fprintf(w, "   %s\n", n)
	}
	row := func(k string, must bool, n int, detail string) {
		mark := ""
		if must {
			mark = "must be 0"
			if n != 0 {
				mark = "MUST BE 0"
			}
		}
		fmt.Fprintf(w, "  %-30s %6d  %-10s %s\n", k, n, mark, detail)
	}
	fmt.Fprintf(w, "  %-30s %6s  %-10s %s\n", "", "", "", "")
	row("devices", false, a.devices, "")
	row("provisioned", false, a.provisioned, fmt.Sprintf("jobs: %d succeeded, %d failed, %d cancelled (repeated Hellos)", a.jobs[0], a.jobs[1], a.jobs[2]))
	row("batches", false, a.helloBatches+len(a.otherBatches), fmt.Sprintf("%d started by Hellos, %d otherwise", a.helloBatches, len(a.otherBatches)))
	list(w, a.otherBatches)
	row("failed (with a reason)", false, a.failedCount(), "")
	reasons := make([]string, 0, len(a.failures))
	for k := range a.failures {
		reasons = append(reasons, k)
	}
	sort.Slice(reasons, func(i, j int) bool { return len(a.failures[reasons[i]]) > len(a.failures[reasons[j]]) })
	for _, k := range reasons {
		fmt.Fprintf(w, "  %38d  %s  e.g. %s\n", len(a.failures[k]), k, a.failures[k][0])
	}
	row("not terminal after deadline", true, len(a.notTerminal), "")
	list(w, a.notTerminal)
	row("lost", true, len(a.lost), "fleet devices the site no longer knows")
	list(w, a.lost)
	row("disagreements", true, len(a.disagreements), kinds(a.byKind))
	list(w, a.disagreements)
	row("certificates issued (CA)", false, a.certs.issued, fmt.Sprintf("revoked %d (%d of them served by a device), installed on a device %d, expired %d, unknown to the site %d",
		a.certs.revoked, a.certs.servedRevoked, a.certs.installed, a.certs.expired, a.certs.unrecorded))
	row("live certs installed nowhere", true, len(a.orphanCerts), "")
	list(w, a.orphanCerts)
	row("AD orphans", true, a.orphanAD, "no directory in this run: not checked")
	late := ""
	if a.hasLate {
		late = fmt.Sprintf("stranded leases %d, reaped before the return %d, stale results taken %d, stale attempts dropped or refused (agent log) %d",
			a.late.stranded, a.late.reaped, len(a.late.accepted), a.late.refused)
	}
	row("conflicting results", true, len(a.conflicts), late)
	list(w, a.conflicts)
	row("secrets found", true, len(a.secretsFound), fmt.Sprintf("%d needles in %d logs, %d Redis values, %d Redis files (AOF), %.1f MB",
		a.scan.needles, a.scan.logs, a.scan.values, a.scan.aofFiles, float64(a.scan.bytes)/(1<<20)))
	list(w, a.secretsFound)
	end := "all terminal"
	if !a.terminal {
		end = "DEADLINE"
	}
	fmt.Fprintf(w, "  %-30s %6.1f s  (%s)\n", "time to finish", a.elapsed.Seconds(), end)
}

func list(w io.Writer, xs []string) {
	for i, x := range xs {
		if i == listMax {
			fmt.Fprintf(w, "%42s… %d more\n", "", len(xs)-listMax)
			return
		}
		fmt.Fprintf(w, "%42s%s\n", "", x)
	}
}

func kinds(m map[string]int) string {
	var out []string
	for _, k := range []string{"status", "uncommitted", "admin", "tls", "record"} {
		out = append(out, fmt.Sprintf("%s %d", k, m[k]))
	}
	return "by kind: " + strings.Join(out, ", ")
}
