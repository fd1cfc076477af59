package phase2_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amtops/amtops/agent/phase2"
	"github.com/amtops/amtops/internal/amt"
	"github.com/amtops/amtops/internal/amtsim"
	"github.com/amtops/amtops/internal/amtsim/amtsimtest"
	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/provcert/provcerttest"
	"github.com/amtops/amtops/internal/wsman"
	amtopsv1 "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/agentca"
	"github.com/amtops/amtops/server/api/apitest"
)

// memSecrets holds an agent CA in memory (agentca.Secrets).
type memSecrets struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (s *memSecrets) CreateSecret(_ context.Context, name string, b []byte) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[name]; ok {
		return false, nil
	}
	s.m[name] = bytes.Clone(b)
	return true, nil
}

func (s *memSecrets) GetSecret(_ context.Context, name string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m[name]
	if !ok {
		return nil, domain.ErrNotFound
	}
	return bytes.Clone(b), nil
}

// agentIdentity is an agent's enrollment certificate from a real site
// agent CA (ECDSA, clientAuth), as phase2.MutualTLS.
func agentIdentity(t *testing.T, name string) *phase2.MutualTLS {
	t.Helper()
	ca, err := agentca.Open(context.Background(), &memSecrets{m: map[string][]byte{}}, agentca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	key, csr := apitest.Key(t)
	leaf, err := ca.SignAgent(csr, name)
	if err != nil {
		t.Fatal(err)
	}
	return &phase2.MutualTLS{Cert: &wsman.ClientCertificate{Chain: [][]byte{leaf.Raw}, Key: key}, Root: ca.Certificate().Raw}
}

func mutualExecutor(sim *amtsim.Sim, m *phase2.MutualTLS) *phase2.Executor {
	cfg := execConfig(sim)
	if m != nil {
		cfg.MutualTLS = func() (*phase2.MutualTLS, error) { return m, nil }
	}
	return phase2.NewExecutor(cfg)
}

// login does one authenticated call over TLS as the admin, presenting cc
// (nil: no client certificate).
func login(sim *amtsim.Sim, job *amtopsv1.Phase2Job, cc *wsman.ClientCertificate) (*wsman.Client, error) {
	pool := x509.NewCertPool()
	root, _ := x509.ParseCertificate(job.Tls.ChainDer[len(job.Tls.ChainDer)-1])
	pool.AddCert(root)
	ws, err := wsman.New(wsman.Config{Address: net.JoinHostPort(job.Target.Ip, fmt.Sprint(sim.TLSPort())),
		Username: "admin", Password: newPassword, Timeout: 5 * time.Second,
		TLS: &wsman.TLSConfig{RootCAs: pool, ServerName: job.Target.HostName + "." + job.Target.Domain, ClientCertificate: cc}})
	if err != nil {
		return nil, err
	}
	if _, err := ws.Get(context.Background(), amt.URIGeneralSettings); err != nil {
		ws.Close()
		return nil, err
	}
	return ws, nil
}

// setTrustedCN puts AMT_TLSSettingData's TrustedCN (no commit: firmware
// applies it at once).
func setTrustedCN(t *testing.T, ws *wsman.Client, cns ...string) {
	t.Helper()
	sel := wsman.Selector{Name: "InstanceID", Value: amt.TLSSettingsRemote}
	n, err := ws.Get(context.Background(), amt.URITLSSettingData, sel)
	if err != nil {
		t.Fatal(err)
	}
	in := wsman.InstanceFromNode(amt.URITLSSettingData, n)
	in.SetAll("TrustedCN", cns...)
	if _, err := ws.Put(context.Background(), in, sel); err != nil {
		t.Fatalf("put TrustedCN: %v", err)
	}
}

func trustedCopies(st amtsim.DeviceState, der []byte) int {
	n := 0
	for _, c := range st.Certificates {
		if c.TrustedRoot && bytes.Equal(c.DER, der) {
			n++
		}
	}
	return n
}

// mutual_tls on: the device provisioned with it trusts the agent CA root,
// demands the agent's certificate from the commit on, and later update
// and removal jobs reach it; a client without the certificate, or with one
// from another CA, or with a CN outside TrustedCN, is refused.
func TestMutualTLS(t *testing.T) {
	sim := amtsimtest.Start(t, amtsim.Config{Devices: 2, Kind: amtsim.KindMEBx, Password: provPassword, CommitDelay: 30 * time.Millisecond,
		BaseIP: netip.MustParseAddr("127.21.2.1")}, nil)
	c := newCA(t)
	agent, stranger := agentIdentity(t, "agent-1"), agentIdentity(t, "agent-1")
	a := sim.Addrs()[0]
	prov := provisionJob(t, c, a, "mtls")
	prov.Tls.MutualAuth = true

	rec := &recorder{}
	res := mutualExecutor(sim, agent).Run(context.Background(), prov, rec)
	if res.Err != nil {
		t.Fatalf("provision: step %s: %v\n%s", res.ErrorStep, res.Err, rec.all())
	}
	st := device(t, sim, a)
	if !st.TLS.MutualAuthentication || !st.TLS.LiveMutual || st.ProvisioningState != 2 {
		t.Fatalf("mutual %t live %t state %d, want mutual TLS live on a provisioned device", st.TLS.MutualAuthentication, st.TLS.LiveMutual, st.ProvisioningState)
	}
	if n := trustedCopies(st, agent.Root); n != 1 {
		t.Fatalf("agent root installed %d times as trusted root, want once", n)
	}
	certsAfterProvision := len(st.Certificates)

	t.Run("clients without the agent's certificate are refused", func(t *testing.T) {
		before := device(t, sim, a).TLS.MutualRefusals
		for name, cc := range map[string]*wsman.ClientCertificate{"no certificate": nil, "another agent CA": stranger.Cert} {
			if ws, err := login(sim, prov, cc); err == nil {
				ws.Close()
				t.Errorf("%s: login succeeded, want the handshake refused", name)
			} else if errors.Is(err, wsman.ErrUnauthorized) {
				t.Errorf("%s: %v, want a refused handshake, not a digest refusal", name, err)
			}
		}
		if got := device(t, sim, a).TLS.MutualRefusals - before; got < 1 {
			t.Errorf("device counted %d refused client certificates, want at least 1 (the other CA's)", got)
		}
	})

	t.Run("later updates reach the device and add no root", func(t *testing.T) {
		for i := range 3 {
			up := updateJob(prov, nil, false)
			rec := &recorder{}
			if res := mutualExecutor(sim, agent).Run(context.Background(), up, rec); res.Err != nil {
				t.Fatalf("update %d: step %s: %v\n%s", i, res.ErrorStep, res.Err, rec.all())
			}
		}
		st := device(t, sim, a)
		if n := trustedCopies(st, agent.Root); n != 1 || len(st.Certificates) != certsAfterProvision {
			t.Errorf("after updates: agent root %d times, %d certificates (were %d)", n, len(st.Certificates), certsAfterProvision)
		}
	})

	t.Run("an update without the agent's certificate is refused", func(t *testing.T) {
		res := mutualExecutor(sim, nil).Run(context.Background(), updateJob(prov, nil, false), &recorder{})
		if res.Err == nil || !res.Permanent || !strings.Contains(res.Err.Error(), "MutualTLS") {
			t.Errorf("err %v permanent %t, want a permanent error naming Config.MutualTLS", res.Err, res.Permanent)
		}
	})

	t.Run("TrustedCN is honoured at once", func(t *testing.T) {
		ws, err := login(sim, prov, agent.Cert)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		setTrustedCN(t, ws, "elsewhere.example")
		if ws2, err := login(sim, prov, agent.Cert); err == nil {
			ws2.Close()
			t.Errorf("CN agent-1 accepted with TrustedCN elsewhere.example")
		}
		// The connection opened before still works (the check is per
		// handshake): it lets the agent's CN in again.
		setTrustedCN(t, ws, "agent-1")
		ws3, err := login(sim, prov, agent.Cert)
		if err != nil {
			t.Fatalf("CN agent-1 refused with TrustedCN agent-1: %v", err)
		}
		ws3.Close()
	})

	t.Run("a re-provisioning with a new certificate converges", func(t *testing.T) {
		// The site and agent roots are there already and, mutual TLS being
		// on, the firmware refuses to add them again: found, not failed.
		again := provisionJob(t, c, a, "mtls")
		again.Tls.MutualAuth = true
		again.Credentials.Password = newPassword
		rec := &recorder{}
		if res := mutualExecutor(sim, agent).Run(context.Background(), again, rec); res.Err != nil {
			t.Fatalf("re-provision: step %s: %v\n%s", res.ErrorStep, res.Err, rec.all())
		}
		if ev := rec.all(); !strings.Contains(ev, phase2.StepMutualRoot+" ok") || !strings.Contains(ev, phase2.StepInstallRoot+" ok") {
			t.Errorf("root steps did not run:\n%s", ev)
		}
		st := device(t, sim, a)
		if len(st.TLS.TrustedCN) != 0 {
			t.Errorf("TrustedCN %v after turning mutual TLS on, want it cleared (chains tell clients apart)", st.TLS.TrustedCN)
		}
		if n := trustedCopies(st, agent.Root); n != 1 || !st.TLS.LiveMutual {
			t.Errorf("agent root %d times, mutual live %t; want once, live", n, st.TLS.LiveMutual)
		}
		if len(st.TLS.ServedChain) == 0 || !bytes.Equal(st.TLS.ServedChain[0], again.Tls.CertificateDer) {
			t.Errorf("device does not serve the new leaf")
		}
		prov = again
	})

	t.Run("removal reaches the device", func(t *testing.T) {
		rm := &amtopsv1.Phase2Job{DeviceId: prov.DeviceId, Kind: amtopsv1.JobKind_JOB_KIND_REMOVE_CONFIG, Target: prov.Target,
			Tls: prov.Tls, Credentials: &amtopsv1.Credentials{Username: "admin", Password: newPassword}}
		rec := &recorder{}
		if res := mutualExecutor(sim, agent).Run(context.Background(), rm, rec); res.Err != nil {
			t.Fatalf("remove: step %s: %v\n%s", res.ErrorStep, res.Err, rec.all())
		}
	})
}

// A site with mutual TLS but an agent without a client certificate fails
// before it touches the device, instead of locking itself out at the
// commit.
func TestMutualTLSNeedsClientCertificate(t *testing.T) {
	sim := amtsimtest.Start(t, amtsim.Config{Devices: 1, Kind: amtsim.KindMEBx, Password: provPassword, CommitDelay: 30 * time.Millisecond,
		BaseIP: netip.MustParseAddr("127.21.3.1")}, nil)
	a := sim.Addrs()[0]
	prov := provisionJob(t, newCA(t), a, "nocert")
	prov.Tls.MutualAuth = true
	before := device(t, sim, a).Requests
	res := mutualExecutor(sim, nil).Run(context.Background(), prov, &recorder{})
	if res.Err == nil || !res.Permanent || !strings.Contains(res.Err.Error(), "tls.mutual_auth") {
		t.Fatalf("err %v permanent %t, want a permanent error naming tls.mutual_auth", res.Err, res.Permanent)
	}
	if st := device(t, sim, a); st.Requests != before || st.Commits != 0 {
		t.Errorf("device got %d requests, %d commits; want it untouched", st.Requests-before, st.Commits)
	}
}

// Zero-touch activation with mutual_tls on real-firmware generations (TLS
// 1.2 only; CSME 16.1 TLS-only): the remote-configuration session
// presents the provisioning certificate, the agent's own certificate takes
// over at the commit, and a later update gets in while a client without
// it does not.
func TestActivationWithMutualTLS(t *testing.T) {
	id, trusted := provcerttest.Identity(t, provDomain)
	rootHash, err := hex.DecodeString(trusted.RootSHA256)
	if err != nil {
		t.Fatal(err)
	}
	versions := []string{"11.8.50", "16.1.25"}
	ov := map[int]amtsim.Override{}
	for i, v := range versions {
		ov[i] = amtsim.Override{Version: v}
	}
	sim := amtsimtest.Start(t, amtsim.Config{Devices: len(versions), BaseIP: netip.MustParseAddr("127.21.5.1"), Kind: amtsim.KindFactory,
		CommitDelay: 30 * time.Millisecond, Firmware: amtsim.Firmware{TrustedDomain: provDomain,
			TrustHashes: [][]byte{rootHash}, TLSRestart: 300 * time.Millisecond}}, ov)
	c := newCA(t)
	agent := agentIdentity(t, "agent-7")
	for i, v := range versions {
		t.Run("AMT "+v, func(t *testing.T) {
			a := sim.Addrs()[i]
			if err := sim.TriggerHello(a); err != nil {
				t.Fatal(err)
			}
			job := activationJob(t, c, id, a, fmt.Sprintf("mact%d", i))
			job.Tls.MutualAuth = true
			job.Settings.WebUi = strings.HasPrefix(v, "11.")
			cfg := execConfig(sim)
			cfg.ProvisioningSigner = &siteSigner{id: id, job: job.Lease.JobId, token: job.Lease.Token}
			cfg.MutualTLS = func() (*phase2.MutualTLS, error) { return agent, nil }
			ex := phase2.NewExecutor(cfg)
			mustRun(t, ex, job)
			st := device(t, sim, a)
			if st.ProvisioningState != 2 || st.ControlMode != 2 || !st.TLS.LiveMutual || trustedCopies(st, agent.Root) != 1 {
				t.Fatalf("state %d mode %d mutual live %t agent root %d, want ACM with mutual TLS and the agent root once",
					st.ProvisioningState, st.ControlMode, st.TLS.LiveMutual, trustedCopies(st, agent.Root))
			}
			if ws, err := login(sim, job, nil); err == nil {
				ws.Close()
				t.Errorf("a client without a certificate logged in")
			}
			up := updateJob(job, nil, false)
			rec := &recorder{}
			if res := ex.Run(context.Background(), up, rec); res.Err != nil {
				t.Fatalf("update: step %s: %v\n%s", res.ErrorStep, res.Err, rec.all())
			}
		})
	}
}
