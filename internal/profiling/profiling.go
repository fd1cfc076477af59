// Package profiling serves Go's runtime profiles (net/http/pprof) on a
// process's own HTTP mux, when its configuration asks for them: the fleet
// bench reads the server's and the agents' CPU profiles this way.
package profiling

import (
	"net/http"
	"net/http/pprof"
)

// Register adds /debug/pprof/ and its profiles to mux.
func Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}
