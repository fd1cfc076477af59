package api

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/amtops/amtops/internal/domain"
)

// ToStatus maps a domain error to a gRPC status for both services (agents
// and administrators); the message is the wrapped error, which never
// carries a secret.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !isWrapped(err) {
		return err
	}
	var fe *domain.FieldError
	switch {
	case errors.As(err, &fe):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, domain.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, domain.ErrUnauthorized):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, domain.ErrLeaseLost):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, domain.ErrAlreadyCompleted):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, domain.ErrConflict), errors.Is(err, domain.ErrRenamePending), errors.Is(err, domain.ErrNotSupported):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case storeUnavailable(err): // after the context cases: DeadlineExceeded is a net.Error too
		// Redis down, restarting or still loading its AOF: a caller
		// should retry, as with any outage, not treat it as a bug.
		return status.Error(codes.Unavailable, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// isWrapped tells a bare status error from a domain error that merely
// implements GRPCStatus through wrapping (none do today).
func isWrapped(err error) bool { return errors.Unwrap(err) != nil }

// storeUnavailable reports whether err is the site database being out of
// reach: a network error on its connection, a connection cut mid-reply,
// or Redis answering LOADING while it reads its data back.
func storeUnavailable(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
		return true
	}
	var re interface {
		error
		RedisError()
	}
	return errors.As(err, &re) && strings.HasPrefix(re.Error(), "LOADING")
}
