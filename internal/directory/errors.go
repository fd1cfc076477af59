package directory

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/amtops/amtops/internal/domain"
	"github.com/go-ldap/ldap/v3"
)

// SPNConflictError says that another directory object already holds one of
// the AMT SPNs (AD and Samba: result 19, constraintViolation, 0000202F).
// It matches errors.Is(err, domain.ErrConflict) and is permanent.
type SPNConflictError struct {
	SPN    string // the SPN as we asked for it
	HeldBy string // DN of the object that has it ("" if the search found none)
	Err    error  // the directory's answer
}

func (e *SPNConflictError) Error() string {
	holder := e.HeldBy
	if holder == "" {
		holder = "an object this account cannot see"
	}
	return fmt.Sprintf("SPN %s is already registered on %s", e.SPN, holder)
}

// Unwrap exposes domain.ErrConflict and the LDAP error.
func (e *SPNConflictError) Unwrap() []error { return []error{domain.ErrConflict, e.Err} }

// NameConflictError says that the AMT account's sAMAccountName or DN is
// taken by an object that is not this device's AMT account.
type NameConflictError struct {
	Name   string // sAMAccountName or DN we wanted
	HeldBy string // DN of the other object
}

func (e *NameConflictError) Error() string {
	return fmt.Sprintf("account name %s is already used by %s", e.Name, e.HeldBy)
}

// Unwrap exposes domain.ErrConflict.
func (e *NameConflictError) Unwrap() error { return domain.ErrConflict }

// permanentCodes are LDAP results that retrying cannot change.
var permanentCodes = []uint16{
	ldap.LDAPResultProtocolError,
	ldap.LDAPResultAuthMethodNotSupported,
	ldap.LDAPResultStrongAuthRequired,
	ldap.LDAPResultNoSuchAttribute,
	ldap.LDAPResultUndefinedAttributeType,
	ldap.LDAPResultInappropriateMatching,
	ldap.LDAPResultConstraintViolation,
	ldap.LDAPResultAttributeOrValueExists,
	ldap.LDAPResultInvalidAttributeSyntax,
	ldap.LDAPResultNoSuchObject,
	ldap.LDAPResultInvalidDNSyntax,
	ldap.LDAPResultInappropriateAuthentication,
	ldap.LDAPResultInvalidCredentials,
	ldap.LDAPResultInsufficientAccessRights,
	ldap.LDAPResultUnwillingToPerform,
	ldap.LDAPResultNamingViolation,
	ldap.LDAPResultObjectClassViolation,
	ldap.LDAPResultNotAllowedOnNonLeaf,
	ldap.LDAPResultNotAllowedOnRDN,
	ldap.LDAPResultEntryAlreadyExists,
	ldap.LDAPResultObjectClassModsProhibited,
	ldap.LDAPResultAffectsMultipleDSAs,
	ldap.ErrorFilterCompile,
	ldap.ErrorFilterDecompile,
	ldap.ErrorEmptyPassword,
}

// fail wraps err with the operation and marks it permanent when the
// directory's answer cannot change by retrying.
func fail(op string, err error) error {
	if err == nil {
		return nil
	}
	wrapped := fmt.Errorf("directory: %s: %w", op, err)
	if ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
		wrapped = fmt.Errorf("directory: %s: %w: %w", op, domain.ErrUnauthorized, err)
	}
	if permanent(err) {
		return domain.Permanent(wrapped)
	}
	return wrapped
}

func permanent(err error) bool {
	if domain.IsPermanent(err) || errors.Is(err, domain.ErrConflict) {
		return true
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var certErr x509.CertificateInvalidError
	if errors.As(err, &unknownCA) || errors.As(err, &hostErr) || errors.As(err, &certErr) {
		return true
	}
	return ldap.IsErrorAnyOf(err, permanentCodes...)
}

// brokenConn reports whether err leaves the connection unusable.
func brokenConn(err error) bool {
	if err == nil {
		return false
	}
	if ldap.IsErrorWithCode(err, ldap.ErrorNetwork) {
		return true
	}
	var le *ldap.Error
	if errors.As(err, &le) {
		return false
	}
	return true // not an LDAP result: an I/O or context failure
}

// isSPNConflict recognises AD's "duplicate SPN" constraint violation.
func isSPNConflict(err error) bool {
	if !ldap.IsErrorWithCode(err, ldap.LDAPResultConstraintViolation) {
		return false
	}
	var le *ldap.Error
	if errors.As(err, &le) && le.Err != nil {
		msg := le.Err.Error()
		return strings.Contains(msg, "0000202F") || strings.Contains(strings.ToLower(msg), "servicePrincipalName")
	}
	return false
}
