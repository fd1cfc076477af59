package domain

import (
	"errors"
	"fmt"
)

// Sentinel errors shared by every layer; the API maps them to gRPC codes.
var (
	ErrNotFound      = errors.New("not found")
	ErrConflict      = errors.New("conflict")
	ErrRenamePending = errors.New("rename or domain move pending: re-provision after it completes")
	ErrNotSupported  = errors.New("AMT not supported")
	ErrLeaseLost     = errors.New("lease lost: token stale or expired")
	ErrUnauthorized  = errors.New("not authorized")
	// ErrConfirm8021X refuses an update that would change the 802.1X
	// settings of a device managed over an 802.1X wired link without the
	// administrator's confirmation (S15): phase 1 before it renews the
	// client certificate, the agent before it changes the device.
	ErrConfirm8021X = errors.New("the update changes the 802.1X settings of a device managed over an 802.1X wired link; " +
		"incompatible settings can drop the link while no OS runs: start the update with confirm_8021x to proceed")
)

// FieldError is bad input, naming the field and the offending value.
type FieldError struct {
	Field  string
	Value  string
	Reason string
}

func (e *FieldError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("%s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("%s %q: %s", e.Field, e.Value, e.Reason)
}

func fieldErr(field, value, reason string) error {
	return &FieldError{Field: field, Value: value, Reason: reason}
}

// InvalidField builds a FieldError; other packages use it so that every
// validation message has the same shape.
func InvalidField(field, value, reason string) error { return fieldErr(field, value, reason) }

// PermanentError marks a failure that retrying cannot fix (bad input, a
// refusal by AMT, the CA or the directory). Anything else is retried.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err so that IsPermanent reports true; nil stays nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err (or anything it wraps) is permanent.
// Field errors, not-found, rename-pending and unauthorized are permanent
// by nature.
func IsPermanent(err error) bool {
	var p *PermanentError
	var f *FieldError
	return errors.As(err, &p) || errors.As(err, &f) ||
		errors.Is(err, ErrNotFound) || errors.Is(err, ErrRenamePending) ||
		errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrNotSupported)
}
