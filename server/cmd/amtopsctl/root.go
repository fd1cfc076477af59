package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/amtops/amtops/internal/version"
	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// Environment variables that stand in for global flags.
const (
	envServer    = "AMTOPS_SERVER"
	envCAFile    = "AMTOPS_CA_FILE"
	envToken     = "AMTOPS_TOKEN"
	envTokenFile = "AMTOPS_TOKEN_FILE"
)

// app is one invocation: its streams, global flags and the connection
// made on first use.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	tty            bool // stderr is a terminal: draw progress bars

	server    string
	caFile    string
	tokenFile string
	certFile  string
	keyFile   string
	output    string
	timeout   time.Duration
	verbose   bool

	conn   *grpc.ClientConn
	client pb.AdminServiceClient
}

func (a *app) close() {
	if a.conn != nil {
		_ = a.conn.Close()
	}
}

func (a *app) envOr(name, def string) string {
	if v := a.getenv(name); v != "" {
		return v
	}
	return def
}

func (a *app) root() *cobra.Command {
	root := &cobra.Command{
		Use:   "amtopsctl",
		Short: "Administer an amtops site server: devices, collections and bulk AMT operations",
		Long: `amtopsctl talks to the amtops site server's AdminService over TLS.

It needs the site CA certificate the server's TLS certificate chains to
(--ca-file) and an admin credential: a token (--token-file or $AMTOPS_TOKEN)
or a client certificate (--cert and --key, from 'amtopsctl certs request');
--cert with --token-file is refused, while --cert overrides a token from
the environment. On its first start the server writes an operate token to
<data_dir>/admin.token.

Exit codes: 0 success, 1 the operation failed or was refused, 2 bad usage or input.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if !slices.Contains(outputs, a.output) {
				return usage("--output %q: want one of %s", a.output, strings.Join(outputs, ", "))
			}
			if a.timeout <= 0 {
				return usage("--timeout %s: must be positive", a.timeout)
			}
			return a.checkCredentials(cmd)
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.server, "server", a.envOr(envServer, "127.0.0.1:7443"), "site server gRPC address host:port ($"+envServer+")")
	pf.StringVar(&a.caFile, "ca-file", a.getenv(envCAFile), "PEM file of the CA the server's TLS certificate chains to ($"+envCAFile+"); empty: the system roots")
	pf.StringVar(&a.tokenFile, "token-file", a.getenv(envTokenFile), "file holding the admin token ($"+envTokenFile+"; or the token itself in $"+envToken+")")
	pf.StringVar(&a.certFile, "cert", "", "PEM file of an admin client certificate (with --key; instead of a token)")
	pf.StringVar(&a.keyFile, "key", "", "PEM file of the private key of --cert")
	pf.StringVarP(&a.output, "output", "o", "table", "output format: table, wide (more columns), json, yaml or csv")
	pf.DurationVar(&a.timeout, "timeout", 30*time.Second, "deadline for each call to the server (watching has none)")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return usage("%v", err) })
	_ = root.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return outputs, cobra.ShellCompDirectiveNoFileComp
	})

	pf.BoolVarP(&a.verbose, "verbose", "v", false, "on failure, print the whole error chain after the one-line summary")
	root.Version = version.String()
	root.SetVersionTemplate("amtopsctl {{.Version}}\n")

	root.AddCommand(a.statusCmd(), a.devicesCmd(), a.collectionsCmd(), a.provisionCmd(), a.updateCmd(), a.removeCmd(),
		a.renameCmd(), a.sweepCmd(), a.discoverCmd(), a.jobsCmd(), a.agentsCmd(), a.tokensCmd(), a.certsCmd(), a.devCmd())
	refuseUnknownSubcommands(root)
	a.addCompletions(root)
	return root
}

// refuseUnknownSubcommands makes every command group (devices, jobs, …)
// fail on an unknown subcommand, naming it with the nearest ones, instead
// of printing its help and succeeding. A bare group still prints help.
func refuseUnknownSubcommands(c *cobra.Command) {
	for _, sub := range c.Commands() {
		refuseUnknownSubcommands(sub)
	}
	if !c.HasSubCommands() || c.Runnable() || !c.HasParent() {
		return // the root's own check already names unknown commands
	}
	c.Args, c.SuggestionsMinimumDistance = cobra.ArbitraryArgs, 2
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "; did you mean " + strings.Join(s, " or ") + "?"
		}
		return usage("%s", msg)
	}
}

// checkCredentials refuses --cert/--key together with --token-file: which
// one the server would honour is not obvious to a person, so amtopsctl
// makes them choose. Flags beat the environment: with --cert, a token in
// $AMTOPS_TOKEN or $AMTOPS_TOKEN_FILE is not used.
func (a *app) checkCredentials(cmd *cobra.Command) error {
	if a.certFile == "" && a.keyFile == "" {
		return nil
	}
	if a.certFile == "" || a.keyFile == "" {
		return usage("--cert and --key go together: pass both")
	}
	if f := cmd.Flag("token-file"); f != nil && f.Changed {
		return usage("--cert/--key and --token-file are both given: use one admin credential")
	}
	a.tokenFile = "" // from $AMTOPS_TOKEN_FILE: the certificate wins
	return nil
}

// token finds the admin token: --token-file, else $AMTOPS_TOKEN.
func (a *app) token() (string, error) {
	if a.tokenFile != "" {
		b, err := os.ReadFile(a.tokenFile)
		if err != nil {
			return "", usage("--token-file: %v", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", usage("--token-file %s: the file is empty", a.tokenFile)
		}
		return tok, nil
	}
	if tok := strings.TrimSpace(a.getenv(envToken)); tok != "" {
		return tok, nil
	}
	return "", usage("no admin token: pass --token-file or set $%s (the server writes its first token to <data_dir>/admin.token), or pass --cert and --key", envToken)
}

// bearer sends the admin token with every call; gRPC refuses to send it
// over a connection without TLS.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

// api returns the AdminService client, connecting on first use.
func (a *app) api() (pb.AdminServiceClient, error) {
	if a.client != nil {
		return a.client, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	var opts []grpc.DialOption
	if a.certFile != "" {
		cert, err := tls.LoadX509KeyPair(a.certFile, a.keyFile)
		if err != nil {
			return nil, usage("--cert %s --key %s: %v", a.certFile, a.keyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	} else {
		tok, err := a.token()
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(tok)))
	}
	if a.caFile != "" {
		pem, err := os.ReadFile(a.caFile)
		if err != nil {
			return nil, usage("--ca-file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usage("--ca-file %s: no PEM certificate in it", a.caFile)
		}
		tc.RootCAs = pool
	}
	conn, err := grpc.NewClient(a.server, append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tc)))...)
	if err != nil {
		return nil, usage("--server %q: %v", a.server, err)
	}
	a.conn, a.client = conn, pb.NewAdminServiceClient(conn)
	return a.client, nil
}

// call runs fn with the client and a context bounded by --timeout.
func call[T any](cmd *cobra.Command, a *app, fn func(context.Context, pb.AdminServiceClient) (T, error)) (T, error) {
	var zero T
	c, err := a.api()
	if err != nil {
		return zero, err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), a.timeout)
	defer cancel()
	return fn(ctx, c)
}

// exactArgs is cobra.ExactArgs with a usage error naming what is missing.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usage("%s needs %d argument(s): %s (got %d)", cmd.CommandPath(), len(names), strings.Join(names, " "), len(args))
		}
		return nil
	}
}

func minArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usage("%s needs at least %d %s", cmd.CommandPath(), n, what)
		}
		return nil
	}
}
