package jobs

import "github.com/amtops/amtops/internal/domain"

// Every secret a job or a device keeps in the site database is named
// here, and only this package reads or writes them: phase 1 makes them,
// the effects of a phase-2 result promote or delete them.

// keySecret names a job's sealed private key for purpose; deleted once
// phase 2 has installed the key.
func keySecret(jobID string, p domain.CertPurpose) string {
	return "job/" + jobID + "/key/" + string(p)
}

// certSecret names what a job had issued for purpose (an issued).
func certSecret(jobID string, p domain.CertPurpose) string {
	return "job/" + jobID + "/cert/" + string(p)
}

// signOnDeviceSecret marks a job whose server certificate the device's
// own key gets in phase 2 (key_on_device); it holds the FQDN phase 1
// prepared.
func signOnDeviceSecret(jobID string) string { return "job/" + jobID + "/sign-on-device" }

// signedSecret names what SignDeviceCSR issued for a job, kept so that a
// retry with the same device key gets the same certificate back.
func signedSecret(jobID string) string { return "job/" + jobID + "/device-signed" }

// pendingPasswordSecret names the new admin password phase 1 made;
// promoted to adminPasswordSecret when phase 2 succeeds.
func pendingPasswordSecret(deviceID string) string { return "device/" + deviceID + "/admin-pending" }

// adminPasswordSecret names the device's current admin password.
func adminPasswordSecret(deviceID string) string { return "device/" + deviceID + "/admin" }

// pendingMEBxSecret names the new MEBx password an activation job made;
// promoted to mebxPasswordSecret when phase 2 succeeds.
func pendingMEBxSecret(deviceID string) string { return "device/" + deviceID + "/mebx-pending" }

// mebxPasswordSecret names the MEBx password a device got from us.
func mebxPasswordSecret(deviceID string) string { return "device/" + deviceID + "/mebx" }

// activationSecret marks a job phase 1 prepared for remote configuration:
// SignProvisioning signs only for such a job. It holds the device ID.
func activationSecret(jobID string) string { return "job/" + jobID + "/activation" }

// provisioningSecret is the site's provisioning certificate and key as
// loaded from amt.remote_config (a sealedIdentity).
const provisioningSecret = "site/provisioning-certificate"

// kerberosSecret names the sealed Kerberos key of a device (a pb.Kerberos).
func kerberosSecret(deviceID string) string { return "device/" + deviceID + "/kerberos" }

// jobSecrets are the names a finished job leaves behind; the device's
// own secrets outlive it.
// resultSecret holds a success being recorded (succeeding), until the
// job is finished: sealed like the other job marks, and not secret.
func resultSecret(jobID string) string { return "job/" + jobID + "/result" }

func jobSecrets(jobID string) []string {
	return []string{keySecret(jobID, domain.PurposeServerAuth), keySecret(jobID, domain.Purpose8021X),
		keySecret(jobID, domain.PurposeWireless), signOnDeviceSecret(jobID), signedSecret(jobID), activationSecret(jobID)}
}
