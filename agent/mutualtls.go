package agent

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/amtops/amtops/agent/phase2"
	"github.com/amtops/amtops/internal/wsman"
)

// mutualTLS is the executor's client certificate for devices with mutual
// TLS: the agent's own enrollment certificate (clientAuth, its key never
// leaves the agent, renewed in place) and the agent CA root it chains to
// (from server_ca_file), which the devices then trust. Renewal changes
// the leaf, never the root, so devices need no change when it happens.
func (a *Agent) mutualTLS() (*phase2.MutualTLS, error) {
	a.mu.Lock()
	c := a.cert
	a.mu.Unlock()
	if c == nil || c.Leaf == nil {
		return nil, errors.New("agent: mutual TLS: not enrolled")
	}
	key, ok := c.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("agent: mutual TLS: key %T cannot sign", c.PrivateKey)
	}
	chains, err := c.Leaf.Verify(x509.VerifyOptions{Roots: a.roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return nil, fmt.Errorf("agent: mutual TLS: certificate does not chain to server_ca_file: %w", err)
	}
	chain := chains[0]
	der := make([][]byte, 0, len(chain)-1)
	for _, x := range chain[:len(chain)-1] {
		der = append(der, x.Raw)
	}
	return &phase2.MutualTLS{Cert: &wsman.ClientCertificate{Chain: der, Key: key}, Root: chain[len(chain)-1].Raw}, nil
}
