// Package wsman is the agent's WS-Management client for Intel AMT: it builds
// request envelopes the way AMT firmware expects them, speaks HTTP Digest
// (qop=auth, MD5) over plain HTTP (port 16992) or TLS (16993) — TLS 1.2
// with the RSA key-exchange suites AMT 11/12 need, an optional client
// certificate behind a crypto.Signer, and the device verified by site
// chain, pin, or trust on first use (see TLSConfig) — keeps one
// request in flight per device, and decodes replies into a prefix-independent
// element tree plus typed errors (SOAP faults, method ReturnValues, 401).
//
// A Client talks to exactly one device. Typed AMT operations live in
// internal/amt; this package knows only the WS-Man verbs.
package wsman
