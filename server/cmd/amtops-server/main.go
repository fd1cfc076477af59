// Command amtops-server runs one replica of the amtops site server.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc/grpclog"

	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/logging"
	"github.com/amtops/amtops/internal/version"
	"github.com/amtops/amtops/server"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "amtops-server:", err)
		os.Exit(1)
	}
}

func run() error {
	path := flag.String("config", "", "server configuration file (YAML); empty: defaults and AMTOPS_* variables")
	format := flag.String("log-format", "", "json or console (overrides log.format)")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("amtops-server", version.String())
		return nil
	}
	cfg, err := config.LoadServer(*path)
	if err != nil {
		return err
	}
	if *format != "" {
		cfg.Log.Format = *format
	}
	log, err := logging.New(os.Stderr, cfg.Log.Format, cfg.Log.Level)
	if err != nil {
		return err
	}
	// gRPC has only a process-wide logger; route it like everything else.
	grpclog.SetLoggerV2(logging.GRPC(log))
	log.Info().Str("version", version.String()).Msg("amtops-server starting")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer srv.Close()
	return srv.Run(ctx)
}
