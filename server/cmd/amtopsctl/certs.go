package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	pb "github.com/amtops/amtops/proto/amtops/v1"
)

type certView struct {
	Name        string `json:"name"`
	Role        string `json:"role"`
	Certificate string `json:"certificate"`
	Key         string `json:"key"`
	NotAfter    string `json:"not_after"`
}

func (a *app) certsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "certs", Aliases: []string{"cert"},
		Short: "Device certificates the site issued (list), administrators' client certificates (request, operate role)"}
	var role, out string
	request := &cobra.Command{
		Use:   "request NAME --role read|operate --out DIR",
		Short: "Make a key here, have the server certify it for NAME, write DIR/NAME.key and DIR/NAME.crt",
		Long: `request makes an ECDSA P-256 key on this machine, sends only a certificate
request for it (with the current credential, which needs the operate role)
and writes the key (mode 0600) and the certificate to DIR. Use them with
--cert DIR/NAME.crt --key DIR/NAME.key. Revoking NAME ('tokens revoke NAME')
ends the certificate at once.`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if role != "read" && role != "operate" {
				return usage("--role %q: want read or operate", role)
			}
			// The server checks names too; this keeps NAME a plain file name
			// before anything is written.
			if name == "" || name == "." || name == ".." || filepath.Base(name) != name {
				return usage("NAME %q: must be a plain name (letters, digits, '-', '_', '.', '@')", name)
			}
			if out == "" {
				return usage("--out: must name a directory")
			}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return usage("--out %s: %v", out, err)
			}
			keyPath, certPath := filepath.Join(out, name+".key"), filepath.Join(out, name+".crt")
			// Prove DIR is writable before the server issues anything.
			probe, err := os.CreateTemp(out, ".amtopsctl-*")
			if err != nil {
				return usage("--out %s: %v", out, err)
			}
			probe.Close()
			os.Remove(probe.Name())

			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return failed("make key: %v", err)
			}
			csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
			if err != nil {
				return failed("make certificate request: %v", err)
			}
			resp, err := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.IssueAdminCertificateResponse, error) {
				return c.IssueAdminCertificate(ctx, &pb.IssueAdminCertificateRequest{Name: name, Role: role, CsrDer: csr})
			})
			if err != nil {
				return err
			}
			kd, err := x509.MarshalPKCS8PrivateKey(key)
			if err != nil {
				return failed("encode key: %v", err)
			}
			if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
				return failed("write key: %v", err)
			}
			if err := writeFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: resp.GetCertificateDer()}), 0o644); err != nil {
				return failed("write certificate: %v", err)
			}
			v := certView{Name: name, Role: role, Certificate: certPath, Key: keyPath, NotAfter: tsString(resp.GetNotAfter())}
			if a.structured() {
				return a.printData(v)
			}
			return a.keyValues("certificate", v.Certificate, "key", v.Key, "role", v.Role, "not after", v.NotAfter)
		},
	}
	request.Flags().StringVar(&role, "role", "read", "read (list, show, watch) or operate (everything)")
	request.Flags().StringVar(&out, "out", ".", "directory for NAME.key and NAME.crt (made 0700 when missing)")
	_ = request.RegisterFlagCompletionFunc("role", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"read", "operate"}, cobra.ShellCompDirectiveNoFileComp
	})
	cmd.AddCommand(request, a.certsListCmd())
	return cmd
}

// writeFileAtomic writes data to path with mode perm, replacing any
// older file only once the new one is complete.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".amtopsctl-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.Rename(f.Name(), path)
}
