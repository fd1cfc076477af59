// Package failure gives a failure the one line a person reads first —
// "unreachable: 16993 refused", "401 from device: admin password not
// accepted" — with the whole error chain on the lines after it, as job
// failures are stored and shown.
package failure

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/amtops/amtops/internal/wsman"
)

// Text is err as a failure reason is stored: Summary, then the chain on
// the next line when it says more.
func Text(err error) string {
	if err == nil {
		return ""
	}
	return join(Summary(err), err.Error())
}

// Of is Text for a reason that arrives as text (from an older agent, or
// written before summaries were stored): a message that already has a
// summary line, or that no known cause shortens, stays as it is.
func Of(msg string) string {
	if msg == "" || strings.Contains(msg, "\n") {
		return msg
	}
	return join(summarizeText(msg), msg)
}

// Split returns a stored reason's summary (its first line) and details
// (the rest, empty when there is none). A reason stored without a summary
// is summarised here.
func Split(msg string) (summary, details string) {
	msg = Of(msg)
	summary, details, _ = strings.Cut(msg, "\n")
	return summary, details
}

func join(summary, chain string) string {
	if summary == "" || summary == chain {
		return chain
	}
	return summary + "\n" + chain
}

// Summary names err's cause in a few words, from the errors in its chain;
// a cause it does not know is summarised from the text.
func Summary(err error) string {
	var (
		oe  *net.OpError
		fe  *wsman.FaultError
		rve *wsman.ReturnValueError
		he  *wsman.HTTPError
		uae x509.UnknownAuthorityError
		hne x509.HostnameError
		cie x509.CertificateInvalidError
	)
	if ports := refusedPorts(err.Error()); len(ports) > 1 {
		// Both transports tried (16993, then 16992): name each.
		return "unreachable: " + strings.Join(ports, " and ") + " refused"
	}
	switch {
	case errors.Is(err, wsman.ErrUnauthorized):
		return "401 from device: admin password not accepted"
	case errors.As(err, &oe) && oe.Op == "dial":
		return dialSummary(oe)
	case errors.As(err, &hne):
		return "TLS: the device's certificate is for " + strings.Join(hne.Certificate.DNSNames, ", ") + ", not " + hne.Host
	case errors.As(err, &uae):
		return "TLS: the device's certificate is not trusted (signed by an unknown CA)"
	case errors.As(err, &cie) && cie.Reason == x509.Expired:
		return "TLS: the device's certificate has expired"
	case errors.Is(err, wsman.ErrPinMismatch):
		return "TLS: the device serves another certificate than the one the site installed"
	case errors.As(err, &fe):
		return "device fault " + strings.Trim(fe.Code+"/"+fe.Subcode, "/") + ": " + cmpOr(fe.Reason, fe.Detail, "no reason given")
	case errors.As(err, &rve):
		return "device refused " + rve.Method + ": " + rve.Name + " (" + strconv.Itoa(rve.Code) + ")"
	case errors.As(err, &he):
		return "HTTP " + he.Status + " from device"
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out: " + summarizeText(strings.TrimSuffix(err.Error(), ": context deadline exceeded"))
	}
	return summarizeText(err.Error())
}

func cmpOr(xs ...string) string {
	for _, x := range xs {
		if x != "" {
			return x
		}
	}
	return ""
}

// dialSummary names a connection that never opened by port, and host
// when the port alone would not say where.
func dialSummary(oe *net.OpError) string {
	port, host := "", ""
	if oe.Addr != nil {
		if h, p, err := net.SplitHostPort(oe.Addr.String()); err == nil {
			host, port = h, p
		}
	}
	switch {
	case errors.Is(oe, syscall.ECONNREFUSED):
		return "unreachable: " + cmpOr(port, "the port") + " refused"
	case errors.Is(oe, syscall.EHOSTUNREACH):
		return "unreachable: no route to " + cmpOr(host, "the device")
	case errors.Is(oe, syscall.ENETUNREACH):
		return "unreachable: no network route to " + cmpOr(host, "the device")
	case oe.Timeout():
		return "unreachable: " + cmpOr(port, "the port") + " did not answer (timeout)"
	}
	return "unreachable: " + oe.Err.Error()
}

// refusedPorts are the distinct ports a message says refused a dial.
func refusedPorts(msg string) []string {
	var out []string
	for _, m := range refusedDial.FindAllStringSubmatch(msg, -1) {
		if p := cmpOr(m[1], m[2]); !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

var (
	refusedDial = regexp.MustCompile(`dial tcp (?:[^ \[]+:(\d+)|\[[^\]]+\]:(\d+)): connect: connection refused`)
	dialAddr    = regexp.MustCompile(`dial tcp (?:[^ ]+:(\d+)|\[[^\]]+\]:(\d+))`)
	validFor    = regexp.MustCompile(`certificate is valid for ([^,]+), not (\S+)`)
	noSuchHst   = regexp.MustCompile(`lookup (\S+)(?: on \S+)?: no such host`)
)

// causes maps a fragment of a message to its summary; %s is the port
// dialled, when the message names one.
var causes = []struct{ fragment, short string }{
	{"connection refused", "unreachable: %s refused"},
	{"no route to host", "unreachable: no route to the device"},
	{"network is unreachable", "unreachable: no network route to the device"},
	{"i/o timeout", "unreachable: %s did not answer (timeout)"},
	{"connection reset by peer", "connection reset (port %s)"},
	{"certificate signed by unknown authority", "TLS: the certificate is not trusted (signed by an unknown CA)"},
	{"certificate has expired", "TLS: the certificate has expired"},
	{"handshake failure", "TLS: handshake refused (port %s)"},
	{"401 Unauthorized", "401 from device: admin password not accepted"},
	{"wsman: unauthorized", "401 from device: admin password not accepted"},
}

// longChain is how long a message may be before its innermost cause
// stands for it.
const longChain = 120

// summarizeText shortens a message by the causes it names; an unknown
// one stays whole when short, and is its innermost cause when it is a
// long chain ("a: b: c: cause").
func summarizeText(msg string) string {
	port := "the port"
	if m := dialAddr.FindAllStringSubmatch(msg, -1); len(m) > 0 {
		port = cmpOr(m[len(m)-1][1], m[len(m)-1][2])
	}
	for _, c := range causes {
		if strings.Contains(msg, c.fragment) {
			return strings.Replace(c.short, "%s", port, 1)
		}
	}
	if m := validFor.FindStringSubmatch(msg); m != nil {
		return "TLS: the certificate is for " + m[1] + ", not " + m[2]
	}
	if m := noSuchHst.FindStringSubmatch(msg); m != nil {
		return "unknown host " + m[1]
	}
	if len(msg) <= longChain {
		return msg
	}
	// The innermost cause, with as many of its wrappers as it takes to
	// say something ("…: unexpected EOF" alone does not).
	parts := strings.Split(msg, ": ")
	i := len(parts) - 1
	for i > 0 && len(strings.Join(parts[i:], ": ")) < 30 {
		i--
	}
	return strings.Join(parts[i:], ": ")
}
