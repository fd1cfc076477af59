// Package amt is the typed layer over internal/wsman: one method per Intel
// AMT operation the agent needs for identity, phase-2 provisioning (S7–S10)
// and removal (S16), plus AMT's password and user-name rules.
//
// A Client wraps one *wsman.Client and therefore talks to one device. Types
// read from the device keep the instance they came from, because AMT wants
// whole instances back on Put: read, modify the typed fields, put.
package amt
