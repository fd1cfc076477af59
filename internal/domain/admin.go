package domain

import (
	"net/netip"
	"time"
)

// AdminRole is what an administrator's token allows.
type AdminRole string

const (
	// RoleRead may list and watch: devices, collections, batches, logs.
	RoleRead AdminRole = "read"
	// RoleOperate may also change devices and start operations.
	RoleOperate AdminRole = "operate"
)

// Valid reports whether r is a known role.
func (r AdminRole) Valid() bool { return r == RoleRead || r == RoleOperate }

// AdminToken describes an administrator's bearer token. The token itself
// is never stored, only its SHA-256.
type AdminToken struct {
	Name      string    `json:"name"`
	Role      AdminRole `json:"role"`
	Hash      string    `json:"hash"` // hex SHA-256 of the token
	CreatedAt time.Time `json:"created_at"`
}

// AdminCert records a client certificate issued to an administrator. A
// certificate authenticates only while its record exists: revoking the
// name (RevokeAdminToken) deletes the records of every certificate
// issued to it, which takes effect on the next call.
type AdminCert struct {
	Serial    string    `json:"serial"` // lower-case hex
	Name      string    `json:"name"`
	Role      AdminRole `json:"role"`
	NotAfter  time.Time `json:"not_after"`
	CreatedAt time.Time `json:"created_at"`
}

// Enrollment is what a one-time enrollment token grants: the agent ID it
// may take (empty lets the agent choose) and the subnets it may serve.
type Enrollment struct {
	AgentID   string         `json:"agent_id,omitempty"`
	Subnets   []netip.Prefix `json:"subnets"`
	CreatedBy string         `json:"created_by,omitempty"`
	CreatedAt time.Time      `json:"created_at"`
	ExpiresAt time.Time      `json:"expires_at"`
}
