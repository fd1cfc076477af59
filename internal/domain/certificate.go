package domain

import "time"

// CertPurpose is what a certificate issued for an AMT device is for.
type CertPurpose string

const (
	PurposeServerAuth CertPurpose = "server-auth" // S2
	Purpose8021X      CertPurpose = "8021x"       // S3, wired client auth
	PurposeWireless   CertPurpose = "wireless"    // S3, wireless client auth
)

// CertStatus is where a certificate record is in its life.
type CertStatus string

const (
	// CertRequested is recorded before the CA is asked, under the serial
	// the site chose: the CA may have issued it, and a lost answer leaves
	// it live there, so it counts as live until revoked.
	CertRequested CertStatus = "requested"
	// CertNotIssued closes a request the CA refused or never received.
	CertNotIssued CertStatus = "not-issued"
	CertIssued    CertStatus = "issued"
	CertInstalled CertStatus = "installed"
	CertRevoked   CertStatus = "revoked"
)

// Live reports whether the certificate may be valid in the CA's eyes.
func (s CertStatus) Live() bool { return s == CertRequested || s == CertIssued || s == CertInstalled }

// RevocationReason is an RFC 5280 CRLReason.
type RevocationReason int

const (
	ReasonUnspecified          RevocationReason = 0
	ReasonKeyCompromise        RevocationReason = 1
	ReasonAffiliationChanged   RevocationReason = 3
	ReasonSuperseded           RevocationReason = 4 // S1
	ReasonCessationOfOperation RevocationReason = 5 // S17
)

// CertificateRecord is the site database's record of one issued certificate.
type CertificateRecord struct {
	Serial    string           `json:"serial"` // decimal, as CAs and CRLs print it
	DeviceID  string           `json:"device_id"`
	Purpose   CertPurpose      `json:"purpose"`
	Status    CertStatus       `json:"status"`
	Reason    RevocationReason `json:"reason,omitempty"`
	Subject   string           `json:"subject"`
	NotBefore time.Time        `json:"not_before"`
	NotAfter  time.Time        `json:"not_after"`
	CA        string           `json:"ca"`      // backend name: builtin, step-ca
	Profile   string           `json:"profile"` // the certificate template
	JobID     string           `json:"job_id,omitempty"`
	RevokedAt time.Time        `json:"revoked_at,omitzero"`
	UpdatedAt time.Time        `json:"updated_at"`
}
