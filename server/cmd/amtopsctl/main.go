// Command amtopsctl is the administrators' command line for amtops: it
// lists devices and their operations logs, manages collections, starts,
// watches and cancels bulk operations (provision, update, remove, rename,
// sweep) through the site server's AdminService over TLS with an admin
// token or an admin client certificate (certs request).
//
// Exit codes: 0 success, 1 the operation failed or was refused, 2 bad
// usage or bad input.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // the operation failed or was refused
	exitUsage  = 2 // bad usage or bad input
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv, isTerminal(os.Stderr))
	stop()
	os.Exit(code)
}

// isTerminal reports whether f is a character device (a terminal), where
// a live progress bar makes sense.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// exitError carries an exit code with a message already fit for people.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func failed(format string, a ...any) error {
	return &exitError{code: exitFailed, msg: fmt.Sprintf(format, a...)}
}

func usage(format string, a ...any) error {
	return &exitError{code: exitUsage, msg: fmt.Sprintf(format, a...)}
}

// run executes one command line and returns the exit code. Everything it
// touches comes in as arguments, so tests run the real command tree.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string, tty bool) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv, tty: tty}
	defer a.close()
	root := a.root()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	code, msg := classify(err)
	head, detail := splitError(msg)
	fmt.Fprintln(stderr, "amtopsctl: "+head)
	switch {
	case detail != "" && a.verbose:
		fmt.Fprintln(stderr, "  detail: "+detail)
	case detail != "":
		fmt.Fprintln(stderr, "  (-v shows the whole error)")
	}
	if code == exitUsage && cmd != nil && !isServerError(err) {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

// splitError returns the one line to show first and, when that line
// leaves something out, the whole message for --verbose. The summary
// keeps classify's prefix ("server unavailable: ").
func splitError(msg string) (head, detail string) {
	// cobra's "Did you mean this?" block becomes part of the line.
	if before, sugg, ok := strings.Cut(msg, "\n\nDid you mean this?\n"); ok {
		return before + "; did you mean " + strings.Join(strings.Fields(sugg), " or ") + "?", ""
	}
	prefix, rest := "", msg
	for _, p := range []string{"server unavailable: ", "refused: ", "bad input: "} {
		if strings.HasPrefix(msg, p) {
			prefix, rest = p, strings.TrimPrefix(msg, p)
		}
	}
	if s := summarize(rest); s != rest {
		return prefix + s, msg
	}
	return msg, ""
}

func isServerError(err error) bool {
	_, ok := status.FromError(err)
	return ok
}

// classify turns an error into an exit code and a message. Server errors
// keep their message, prefixed by what kind of failure it was; cobra's own
// errors (unknown command or flag, wrong argument count) are usage errors.
func classify(err error) (int, string) {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code, ee.msg
	}
	if st, ok := status.FromError(err); ok {
		msg := st.Message()
		switch st.Code() {
		case codes.InvalidArgument:
			return exitUsage, "bad input: " + msg
		case codes.NotFound:
			return exitUsage, "not found: " + msg
		case codes.PermissionDenied:
			return exitFailed, "refused: " + msg
		case codes.Unauthenticated:
			return exitFailed, "not authenticated: " + msg
		case codes.FailedPrecondition, codes.Aborted:
			return exitFailed, "refused: " + msg
		case codes.Unavailable:
			return exitFailed, "server unavailable: " + msg
		case codes.DeadlineExceeded:
			return exitFailed, "timed out: " + msg + " (raise --timeout?)"
		case codes.Canceled:
			return exitFailed, "cancelled"
		case codes.Unimplemented:
			return exitFailed, "not supported by this server: " + msg
		}
		return exitFailed, strings.ToLower(st.Code().String()) + ": " + msg
	}
	if errors.Is(err, context.Canceled) {
		return exitFailed, "cancelled"
	}
	return exitUsage, err.Error()
}
