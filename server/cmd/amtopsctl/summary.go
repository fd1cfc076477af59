package main

import (
	"regexp"
	"strings"
)

// Errors from deep in the stack arrive as long chains ("phase2: connect:
// tls: amt: get setup and configuration: wsman: … dial tcp 10.0.0.5:16993:
// connect: connection refused"). People need the cause first: summarize
// names it in a few words; the chain stays available (-v, -o json).

var (
	dialAddr  = regexp.MustCompile(`dial tcp ([^ :]+:\d+|\[[^\]]+\]:\d+)`)
	validFor  = regexp.MustCompile(`certificate is valid for ([^,]+), not (\S+)`)
	noSuchHst = regexp.MustCompile(`lookup (\S+)(?: on \S+)?: no such host`)
)

// causes maps a fragment of the innermost cause to its short form; %s is
// the address dialled, when the chain names one.
var causes = []struct{ fragment, short string }{
	{"connection refused", "unreachable: %s refused the connection"},
	{"no route to host", "unreachable: no route to %s"},
	{"network is unreachable", "unreachable: no network route to %s"},
	{"i/o timeout", "unreachable: %s did not answer (timeout)"},
	{"connection reset by peer", "connection to %s reset"},
	{"certificate signed by unknown authority", "TLS: certificate not trusted (signed by an unknown CA)"},
	{"certificate has expired", "TLS: certificate expired"},
	{"handshake failure", "TLS: handshake refused by %s"},
	{"401 Unauthorized", "refused: wrong user name or password (HTTP 401)"},
}

// summarize returns a one-line summary of msg when its cause is one
// summarize knows, else msg itself: the server's own messages (a field
// and why) are already written for people and must stay whole.
func summarize(msg string) string {
	addr := "the device"
	if m := dialAddr.FindAllStringSubmatch(msg, -1); len(m) > 0 {
		addr = m[len(m)-1][1]
	}
	for _, c := range causes {
		if strings.Contains(msg, c.fragment) {
			return strings.Replace(c.short, "%s", addr, 1)
		}
	}
	if m := validFor.FindStringSubmatch(msg); m != nil {
		return "TLS: certificate is for " + m[1] + ", not " + m[2]
	}
	if m := noSuchHst.FindStringSubmatch(msg); m != nil {
		return "unknown host " + m[1]
	}
	return msg
}

// reason is a stored failure reason's summary line for a table cell; a
// reason stored without one (before servers stored summaries) is
// summarised here.
func reason(msg string) string {
	if first, _, ok := strings.Cut(msg, "\n"); ok {
		return first
	}
	return summarize(msg)
}
