package wsman

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
)

// ErrUnauthorized: the device refused our credentials (401 after a digest
// answer computed with a fresh nonce). Permanent: retrying cannot help.
var ErrUnauthorized = errors.New("wsman: unauthorized")

// ErrResponseTooLarge: the reply exceeded Config.MaxResponseBytes.
var ErrResponseTooLarge = errors.New("wsman: response too large")

// ErrPinMismatch: the device's TLS leaf certificate is not the pinned one.
var ErrPinMismatch = errors.New("wsman: tls leaf certificate does not match pin")

// FaultError is a SOAP fault returned by the device (normally with HTTP 400).
// Code and Subcode are the fault QNames without their prefix (prefixes vary),
// e.g. Code "Sender", Subcode "AlreadyExists".
type FaultError struct {
	HTTPStatus int
	Code       string
	Subcode    string
	Reason     string
	Detail     string
}

func (e *FaultError) Error() string {
	s := "wsman fault " + e.Code
	if e.Subcode != "" {
		s += "/" + e.Subcode
	}
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	return s
}

// ReturnValueError is a method call that completed with a non-zero
// ReturnValue; Name is AMT's PT_STATUS name when known (IsReturnValue
// tests for codes).
type ReturnValueError struct {
	Method string
	Code   int
	Name   string
}

func (e *ReturnValueError) Error() string {
	return fmt.Sprintf("%s returned %d (%s)", e.Method, e.Code, e.Name)
}

// IsReturnValue reports whether err carries a method ReturnValue equal to
// one of codes.
func IsReturnValue(err error, codes ...int) bool {
	var rve *ReturnValueError
	if !errors.As(err, &rve) {
		return false
	}
	for _, c := range codes {
		if rve.Code == c {
			return true
		}
	}
	return false
}

// HTTPError is a reply with an unexpected HTTP status and no SOAP fault.
type HTTPError struct {
	StatusCode int
	Status     string
	Location   string // of a redirect, which is never followed
}

func (e *HTTPError) Error() string {
	if e.Location != "" {
		return "wsman: http status " + e.Status + ": redirect to " + e.Location + " not followed"
	}
	return "wsman: http status " + e.Status
}

// AMT status codes (PT_STATUS_*) seen as ReturnValue, as AMT-WSMAN.md and
// Intel's SDK number them (0x800 block: 0x806 INVALID_PASSWORD, 0x80A
// DUPLICATE, 0x814 NOT_FOUND).
const (
	StatusSuccess                 = 0
	StatusInternalError           = 1
	StatusInvalidMode             = 3
	StatusNotPermitted            = 16
	StatusMaxLimitReached         = 23
	StatusInvalidParameter        = 36
	StatusFlashWriteLimitExceeded = 38
	StatusInvalidHandle           = 2053
	StatusInvalidPassword         = 2054
	StatusInvalidRealm            = 2055
	StatusDataMissing             = 2057
	StatusDuplicate               = 2058
	StatusInvalidKey              = 2062
	StatusInvalidCert             = 2063
	StatusCertKeyNotMatch         = 2064
	StatusNotFound                = 2068 // NOT_FOUND: never "duplicate key" (that is 2058)
)

var statusNames = map[int]string{
	0:    "SUCCESS",
	1:    "INTERNAL_ERROR",
	2:    "NOT_READY",
	3:    "INVALID_PT_MODE",
	4:    "INVALID_MESSAGE_LENGTH",
	16:   "NOT_PERMITTED",
	23:   "MAX_LIMIT_REACHED",
	36:   "INVALID_PARAMETER",
	38:   "FLASH_WRITE_LIMIT_EXCEEDED",
	2053: "INVALID_HANDLE",
	2054: "INVALID_PASSWORD",
	2055: "INVALID_REALM",
	2056: "STORAGE_ACL_ENTRY_IN_USE",
	2057: "DATA_MISSING",
	2058: "DUPLICATE",
	2059: "EVENTLOG_FROZEN",
	2060: "PKI_MISSING_KEYS",
	2061: "PKI_GENERATING_KEYS",
	2062: "INVALID_KEY",
	2063: "INVALID_CERT",
	2064: "CERT_KEY_NOT_MATCH",
	2065: "MAX_KERB_DOMAIN_REACHED",
	2066: "UNSUPPORTED",
	2067: "INVALID_PRIORITY",
	2068: "NOT_FOUND",
}

// StatusName returns AMT's name for a ReturnValue, or "UNKNOWN_<n>".
func StatusName(code int) string {
	if n, ok := statusNames[code]; ok {
		return n
	}
	return "UNKNOWN_" + strconv.Itoa(code)
}

// Retryable decides, once for the whole agent, whether an error from this
// package is transient (worth another attempt later: network trouble,
// timeouts, 5xx, a device restarting its network stack after CommitChanges)
// or permanent (faults, non-zero ReturnValues, bad credentials, TLS identity
// mismatch, malformed replies, a port that speaks neither AMT's HTTP nor TLS,
// caller cancellation).
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	var (
		fe  *FaultError
		rve *ReturnValueError
		he  *HTTPError
		uae x509.UnknownAuthorityError
		hne x509.HostnameError
		cie x509.CertificateInvalidError
		ne  net.Error
		rhe tls.RecordHeaderError
	)
	switch {
	case errors.Is(err, ErrUnauthorized), errors.Is(err, ErrResponseTooLarge),
		errors.Is(err, ErrPinMismatch), errors.Is(err, ErrMalformed),
		errors.Is(err, context.Canceled):
		return false
	case errors.As(err, &fe):
		// wsman:TimedOut means the device ran out of OperationTimeout; the
		// same request may well succeed later. Every other fault is a verdict.
		return fe.Subcode == "TimedOut"
	case errors.As(err, &rve):
		return false
	case errors.As(err, &he):
		return he.StatusCode >= 500 || he.StatusCode == 408 || he.StatusCode == 429
	case errors.As(err, &uae), errors.As(err, &hne), errors.As(err, &cie):
		return false
	case errors.Is(err, context.DeadlineExceeded):
		return true
	case strings.Contains(err.Error(), "remote error: tls: "):
		// The device's TLS alert is its verdict on us (our client
		// certificate, chain or offer), not a network hiccup.
		return false
	case errors.As(err, &rhe), strings.Contains(err.Error(), "malformed HTTP"),
		strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		// Something that is not AMT's TLS or HTTP listens there.
		return false
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return true
	case errors.As(err, &ne):
		return true // timeouts and other transport failures
	}
	// net/http wraps some transport failures in plain strings.
	msg := err.Error()
	return strings.Contains(msg, "connection reset") || strings.Contains(msg, "server closed idle connection")
}

// faultFromBody extracts a FaultError from a decoded envelope, or nil.
func faultFromEnvelope(env *Envelope, status int) *FaultError {
	f := env.Body.Child("Fault")
	if f == nil {
		return nil
	}
	return &FaultError{
		HTTPStatus: status,
		Code:       localPart(f.Path("Code", "Value").Value()),
		Subcode:    localPart(f.Path("Code", "Subcode", "Value").Value()),
		Reason:     f.Path("Reason", "Text").Value(),
		Detail:     detailText(f.Child("Detail")),
	}
}

func localPart(qname string) string {
	if i := strings.LastIndexByte(qname, ':'); i >= 0 {
		return qname[i+1:]
	}
	return qname
}

func detailText(n *Node) string {
	if n == nil {
		return ""
	}
	var parts []string
	var walk func(*Node, int)
	walk = func(n *Node, depth int) {
		if v := n.Value(); v != "" {
			parts = append(parts, v)
		}
		if depth > maxDepth {
			return
		}
		for _, c := range n.Children {
			walk(c, depth+1)
		}
	}
	walk(n, 0)
	return strings.Join(parts, " ")
}
