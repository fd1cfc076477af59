package main

import (
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/amtops/amtops/internal/provcert"
)

type provCertView struct {
	Domain     string `json:"domain"`
	LeafCN     string `json:"leaf_cn"`
	Chain      string `json:"chain"`
	Key        string `json:"key"`
	Root       string `json:"root"`
	RootSHA256 string `json:"root_sha256"`
}

// devCmd holds tooling for tests and the demo; nothing in it talks to a
// server. ("dev" is already an alias of "devices".)
func (a *app) devCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "devtools", Short: "Test and demo tooling (no server needed)"}
	var domain, out string
	prov := &cobra.Command{
		Use:   "provisioning-cert --domain D --out DIR",
		Short: "Make a test AMT provisioning root and leaf for domain D in DIR",
		Long: `provisioning-cert makes a provisioning root and a leaf "prov.D" carrying the
Intel AMT provisioning EKU and OU, and writes DIR/provisioning-chain.pem
(leaf, then root), DIR/provisioning-key.pem (mode 0600) and
DIR/provisioning-root.pem. Simulated devices must trust the printed root
SHA-256 (amtsim --trust-hash) and have D as their trusted domain. For tests
and demos only: the key is written in the clear.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usage("--out: must name a directory")
			}
			p, err := provcert.NewTestPair(domain)
			if err != nil {
				return usage("--domain %q: %v", domain, err)
			}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return usage("--out %s: %v", out, err)
			}
			v := provCertView{Domain: p.Domain, LeafCN: p.LeafCN, RootSHA256: p.RootSHA256,
				Chain: filepath.Join(out, "provisioning-chain.pem"), Key: filepath.Join(out, "provisioning-key.pem"),
				Root: filepath.Join(out, "provisioning-root.pem")}
			for _, f := range []struct {
				path string
				data []byte
				perm os.FileMode
			}{{v.Key, p.KeyPEM, 0o600}, {v.Chain, p.ChainPEM, 0o644}, {v.Root, p.RootPEM, 0o644}} {
				if err := writeFileAtomic(f.path, f.data, f.perm); err != nil {
					return failed("write %s: %v", f.path, err)
				}
			}
			if a.structured() {
				return a.printData(v)
			}
			return a.keyValues("domain", v.Domain, "leaf cn", v.LeafCN, "chain", v.Chain, "key", v.Key,
				"root", v.Root, "root sha256", v.RootSHA256)
		},
	}
	prov.Flags().StringVar(&domain, "domain", "", "trusted domain suffix of the devices (DHCP option 15), e.g. amt.test")
	prov.Flags().StringVar(&out, "out", "", "directory for the files (made 0700 when missing)")
	_ = prov.MarkFlagRequired("domain")
	_ = prov.MarkFlagRequired("out")
	cmd.AddCommand(prov)
	return cmd
}
