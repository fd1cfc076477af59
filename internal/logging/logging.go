// Package logging builds the zerolog logger every component is handed.
// JSON by default for machines; console format for people, with the date,
// and coloured only on a terminal when NO_COLOR is not set.
package logging

import (
	"fmt"
	"io"
	"os"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// TimeFormat is the console format's timestamp: date and time to the
// second (zerolog's own precision), with the zone.
const TimeFormat = "2006-01-02 15:04:05Z07:00"

// New returns a logger writing to w in format "json" or "console" at level.
func New(w io.Writer, format, level string) (zerolog.Logger, error) {
	return newLogger(w, format, level, colour(w, os.LookupEnv))
}

func newLogger(w io.Writer, format, level string, colour bool) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Nop(), fmt.Errorf("logging: level %q: must be debug, info, warn or error", level)
	}
	switch format {
	case "json", "":
	case "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: TimeFormat, NoColor: !colour}
	default:
		return zerolog.Nop(), fmt.Errorf("logging: format %q: must be json or console", format)
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

// colour reports whether console output to w may use colour: only on a
// terminal, and never with NO_COLOR set to anything but "" (no-color.org).
func colour(w io.Writer, lookup func(string) (string, bool)) bool {
	if v, ok := lookup("NO_COLOR"); ok && v != "" {
		return false
	}
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}
