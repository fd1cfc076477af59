package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/amtops/amtops/server/api"
	"github.com/amtops/amtops/server/console"
	"github.com/amtops/amtops/server/rest"
)

// buildConsole makes the HTTPS server of the REST API and the web
// console with its live-update hub: the gRPC listener's CA signs its certificate and verifies
// administrators' client certificates, so one CA file serves amtopsctl,
// curl and browsers.
func (s *Server) buildConsole() error {
	if s.consoleLis == nil {
		return nil
	}
	cert, err := s.agentCA.ServerCertificate(s.cfg.Console.Listen, s.cfg.GRPC.Names)
	if err != nil {
		return fmt.Errorf("server: console certificate: %w", err)
	}
	apiH, err := rest.Handler(s.admin)
	if err != nil {
		return fmt.Errorf("server: rest api: %w", err)
	}
	s.hub = console.NewHub(s.admin, console.HubOptions{Log: s.log})
	mux := http.NewServeMux()
	mux.Handle(rest.Prefix, apiH)
	mux.Handle("GET "+rest.Prefix+"events", s.hub)
	mux.Handle("/", console.Handler())
	s.console = &http.Server{Handler: mux, TLSConfig: api.ServerTLS(s.agentCA, cert), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: log.New(httpErrors{s.log}, "", 0)}
	return nil
}

// ConsoleAddr is the bound HTTPS address of the REST API and console, or
// "" when configured off.
func (s *Server) ConsoleAddr() string {
	if s.consoleLis == nil {
		return ""
	}
	return s.consoleLis.Addr().String()
}

// serveConsole serves until the server closes.
func (s *Server) serveConsole() error {
	if s.console == nil {
		return nil
	}
	if err := s.console.Serve(tls.NewListener(s.consoleLis, s.console.TLSConfig)); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("server: console: %w", err)
	}
	return nil
}

func (s *Server) listenConsole() error {
	if s.cfg.Console.Disabled {
		return nil
	}
	var err error
	if s.consoleLis, err = net.Listen("tcp", s.cfg.Console.Listen); err != nil {
		return fmt.Errorf("server: console.listen: %w", err)
	}
	return nil
}

// httpErrors takes net/http's own messages (a browser giving up on a
// TLS handshake with an untrusted CA, mostly) into the log at debug.
type httpErrors struct{ log zerolog.Logger }

func (h httpErrors) Write(p []byte) (int, error) {
	h.log.Debug().Str("error", strings.TrimSpace(string(p))).Msg("console http error")
	return len(p), nil
}
