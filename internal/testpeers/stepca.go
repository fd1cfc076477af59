package testpeers

import (
	"os"
	"testing"
)

// StepCAPeer is the step-ca that scripts/stepca.sh started, as announced in
// the environment by the env file it writes.
type StepCAPeer struct {
	URL          string // https://127.0.0.1:PORT
	RootFile     string // PEM root certificate
	Provisioner  string // JWK provisioner name
	PasswordFile string // the provisioner's password
	CAConfigFile string // ca.json, holding the provisioner's encrypted key
}

// StepCA returns the running step-ca, or skips t (fails it under
// AMTOPS_REQUIRE_PEERS=1) when none is announced.
func StepCA(t testing.TB) StepCAPeer {
	t.Helper()
	p := StepCAPeer{
		URL:          os.Getenv("AMTOPS_TEST_STEPCA_URL"),
		RootFile:     os.Getenv("AMTOPS_TEST_STEPCA_ROOT"),
		Provisioner:  os.Getenv("AMTOPS_TEST_STEPCA_PROVISIONER"),
		PasswordFile: os.Getenv("AMTOPS_TEST_STEPCA_PASSWORD_FILE"),
		CAConfigFile: os.Getenv("AMTOPS_TEST_STEPCA_CAJSON"),
	}
	if p.URL == "" || p.RootFile == "" || p.Provisioner == "" || p.PasswordFile == "" || p.CAConfigFile == "" {
		Missing(t, "step-ca", "run scripts/stepca.sh start DIR and source DIR/env")
	}
	return p
}
