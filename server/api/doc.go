// Package api holds the site server's gRPC services. It is the only place
// where domain errors become gRPC status codes. AgentService serves the
// per-subnet agents (C4, C6, S11, S21) over mTLS with certificates from
// the site's agent CA.
package api
