package logging

import (
	"fmt"
	stdlog "log"
	"strings"

	"github.com/rs/zerolog"
	"google.golang.org/grpc/grpclog"
)

// Libraries with loggers of their own are routed here, so that every
// line is a zerolog event: a static message naming the library and the
// library's text in the "detail" field.

// Std returns a standard-library logger (http.Server.ErrorLog) whose
// lines become warnings with message msg.
func Std(log zerolog.Logger, msg string) *stdlog.Logger {
	return stdlog.New(stdWriter{log, msg}, "", 0)
}

type stdWriter struct {
	log zerolog.Logger
	msg string
}

func (w stdWriter) Write(p []byte) (int, error) {
	w.log.Warn().Str("detail", strings.TrimSpace(string(p))).Msg(w.msg)
	return len(p), nil
}

// GRPC adapts log for grpclog.SetLoggerV2: gRPC's info lines (connection
// state chatter) are debug events, its warnings and errors stay so.
// Fatal is logged and then exits, as gRPC expects.
func GRPC(log zerolog.Logger) grpclog.LoggerV2 {
	return grpcLogger{log.With().Str("component", "grpc").Logger()}
}

type grpcLogger struct{ log zerolog.Logger }

func (g grpcLogger) ev(e *zerolog.Event, s string) { e.Str("detail", strings.TrimSpace(s)).Msg("grpc") }

func (g grpcLogger) Info(a ...any)               { g.ev(g.log.Debug(), fmt.Sprint(a...)) }
func (g grpcLogger) Infoln(a ...any)             { g.ev(g.log.Debug(), fmt.Sprintln(a...)) }
func (g grpcLogger) Infof(f string, a ...any)    { g.ev(g.log.Debug(), fmt.Sprintf(f, a...)) }
func (g grpcLogger) Warning(a ...any)            { g.ev(g.log.Warn(), fmt.Sprint(a...)) }
func (g grpcLogger) Warningln(a ...any)          { g.ev(g.log.Warn(), fmt.Sprintln(a...)) }
func (g grpcLogger) Warningf(f string, a ...any) { g.ev(g.log.Warn(), fmt.Sprintf(f, a...)) }
func (g grpcLogger) Error(a ...any)              { g.ev(g.log.Error(), fmt.Sprint(a...)) }
func (g grpcLogger) Errorln(a ...any)            { g.ev(g.log.Error(), fmt.Sprintln(a...)) }
func (g grpcLogger) Errorf(f string, a ...any)   { g.ev(g.log.Error(), fmt.Sprintf(f, a...)) }
func (g grpcLogger) Fatal(a ...any)              { g.ev(g.log.Fatal(), fmt.Sprint(a...)) }
func (g grpcLogger) Fatalln(a ...any)            { g.ev(g.log.Fatal(), fmt.Sprintln(a...)) }
func (g grpcLogger) Fatalf(f string, a ...any)   { g.ev(g.log.Fatal(), fmt.Sprintf(f, a...)) }
func (g grpcLogger) V(l int) bool                { return g.log.GetLevel() <= zerolog.DebugLevel || l <= 0 }
