package agent

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/version"
	"github.com/amtops/amtops/internal/wire"
	pb "github.com/amtops/amtops/proto/amtops/v1"
)

const (
	keyFile  = "agent.key"
	certFile = "agent.crt"
)

// enroll loads the key and certificate from state_dir, or enrolls with
// the bootstrap token and saves them (mode 0600).
func (a *Agent) enroll(ctx context.Context) error {
	if err := a.loadState(); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	tok := a.token
	if tok == "" && a.cfg.BootstrapTokenFile != "" {
		b, err := os.ReadFile(a.cfg.BootstrapTokenFile)
		if err != nil {
			return fmt.Errorf("agent: bootstrap_token_file: %w", err)
		}
		tok = strings.TrimSpace(string(b))
	}
	if tok == "" {
		tok = strings.TrimSpace(os.Getenv("AMTOPS_AGENT_BOOTSTRAP_TOKEN"))
	}
	if tok == "" {
		return fmt.Errorf("agent: not enrolled and no bootstrap token (bootstrap_token_file or $AMTOPS_AGENT_BOOTSTRAP_TOKEN)")
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: a.roots, ServerName: a.serverName}
	conn, err := grpc.NewClient(a.cfg.Server, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return fmt.Errorf("agent: dial %s: %w", a.cfg.Server, err)
	}
	defer conn.Close()
	client := pb.NewAgentServiceClient(conn)
	key, csr, err := newCSR()
	if err != nil {
		return err
	}
	for n := 0; ; n++ {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		resp, err := client.Enroll(cctx, &pb.EnrollRequest{BootstrapToken: tok, CsrDer: csr, AgentName: a.cfg.Name, AgentVersion: version.String()})
		cancel()
		if err == nil {
			return a.saveState(key, resp)
		}
		if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
			return fmt.Errorf("agent: enroll: %w", err)
		}
		// A certificate that does not verify will not verify next time:
		// say which option to fix instead of retrying forever.
		if fix := a.trustProblem(err); fix != "" {
			return fmt.Errorf("agent: enroll with %s: %s: %w", a.cfg.Server, fix, err)
		}
		a.log.Warn().Err(err).Msg("enroll failed, retrying")
		if !a.backoff(ctx, n) {
			return fmt.Errorf("agent: enroll: %w", ctx.Err())
		}
	}
}

// trustProblem names the configuration to fix when err is the server's
// certificate failing verification; "" for other errors.
func (a *Agent) trustProblem(err error) string {
	msg := status.Convert(err).Message()
	switch {
	case strings.Contains(msg, "certificate is valid for") || strings.Contains(msg, "certificate is not valid for any names"):
		return fmt.Sprintf("the server's certificate does not name %q: set server_name to a name it carries, "+
			"or add this name to the server's grpc.names", a.serverName)
	case strings.Contains(msg, "x509:") || strings.Contains(msg, "tls: failed to verify certificate"):
		return fmt.Sprintf("the server's certificate is not signed by the CA in server_ca_file %s: "+
			"use the site's gRPC CA (the server's <data_dir>/grpc-ca.pem, also served at http://<http.listen>/grpc-ca.pem)",
			a.cfg.ServerCAFile)
	}
	return ""
}

// newCSR makes the agent's key: RSA-2048, as its certificate is also the
// client certificate AMT verifies with mutual TLS (see agentca).
func newCSR() (*rsa.PrivateKey, []byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: generate key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "amtops-agent"}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: create CSR: %w", err)
	}
	return key, csr, nil
}

func (a *Agent) saveState(key crypto.Signer, resp *pb.EnrollResponse) error {
	if err := os.MkdirAll(a.cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("agent: state_dir: %w", err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("agent: encode key: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: resp.GetCertificateDer()})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
	// Key first: a certificate without its key would be useless.
	if err := writeFile(filepath.Join(a.cfg.StateDir, keyFile), keyPEM); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(a.cfg.StateDir, certFile), certPEM); err != nil {
		return err
	}
	if err := a.saveSubnets(resp.GetSubnets()); err != nil {
		return err
	}
	a.log.Info().Str("agent", resp.GetAgentId()).Strs("subnets", resp.GetSubnets()).
		Time("not_after", resp.GetNotAfter().AsTime()).Msg("certificate saved")
	return a.loadState()
}

// writeFile replaces path atomically with mode 0600.
func writeFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("agent: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("agent: write %s: %w", path, err)
	}
	return nil
}

func (a *Agent) loadState() error {
	c, err := tls.LoadX509KeyPair(filepath.Join(a.cfg.StateDir, certFile), filepath.Join(a.cfg.StateDir, keyFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return err
		}
		return fmt.Errorf("agent: load state: %w", err)
	}
	a.mu.Lock()
	a.cert, a.agentID = &c, c.Leaf.Subject.CommonName
	a.mu.Unlock()
	return a.loadSubnets()
}

// renewLoop renews the certificate once two thirds of its life is gone.
func (a *Agent) renewLoop(ctx context.Context) {
	for n := 0; ; {
		a.mu.Lock()
		leaf := a.cert.Leaf
		a.mu.Unlock()
		at := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) * 2 / 3)
		t := time.NewTimer(time.Until(at))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err := a.renew(ctx); err != nil {
			a.log.Warn().Err(err).Msg("certificate renewal failed")
			if !a.backoff(ctx, n+8) {
				return
			}
			n++
			continue
		}
		n = 0
	}
}

func (a *Agent) renew(ctx context.Context) error {
	key, csr, err := newCSR()
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := a.client.Renew(cctx, &pb.RenewRequest{CsrDer: csr})
	if err != nil {
		return fmt.Errorf("agent: renew: %w", err)
	}
	return a.saveState(key, resp)
}

// reporter buffers a job's step events for batched ReportProgress calls.
type reporter struct {
	deviceID, jobID string
	mu              sync.Mutex
	evs             []*pb.OperationEvent
	// sending is held across one ReportProgress call (Agent.flush).
	sending sync.Mutex
}

// Step records one event (phase2.Reporter).
func (r *reporter) Step(_ context.Context, step string, outcome domain.Outcome, detail string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, &pb.OperationEvent{DeviceId: r.deviceID, JobId: r.jobID, Phase: 2, Step: step,
		Outcome: wire.Outcome(outcome), Detail: detail, Time: timestamppb.Now()})
}

func (r *reporter) take() []*pb.OperationEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	evs := r.evs
	r.evs = nil
	return evs
}
