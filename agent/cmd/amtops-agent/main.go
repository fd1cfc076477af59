// Command amtops-agent is the per-subnet agent that pulls phase-2 jobs.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc/grpclog"

	"github.com/amtops/amtops/agent"
	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/logging"
	"github.com/amtops/amtops/internal/version"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "amtops-agent:", err)
		os.Exit(1)
	}
}

func run() error {
	path := flag.String("config", "agent.yaml", "configuration file")
	format := flag.String("log-format", "", "json or console (overrides log.format)")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("amtops-agent", version.String())
		return nil
	}
	cfg, err := config.LoadAgent(*path)
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
	log.Info().Str("version", version.String()).Msg("amtops-agent starting")
	a, err := agent.New(cfg, log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return a.Run(ctx)
}
