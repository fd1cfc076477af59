package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/amtops/amtops/agent"
	"github.com/amtops/amtops/agent/phase2"
	"github.com/amtops/amtops/internal/amtsim"
	"github.com/amtops/amtops/internal/config"
	"github.com/amtops/amtops/internal/fleet"
	"github.com/amtops/amtops/internal/provcert"
	"github.com/amtops/amtops/internal/secrets"
	"github.com/amtops/amtops/internal/testpeers"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server"
	"github.com/amtops/amtops/server/store"
)

// logSink keeps every log line of every component.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *logSink) bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.buf.Bytes())
}

type bearerToken string

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearerToken) RequireTransportSecurity() bool { return true }

// A whole site in one process at debug level — server (asynq worker,
// built-in CA, remote configuration), an agent, a simulator with MEBx
// and factory devices, a private Redis — provisions every device; then
// no log line of any component and no Redis value holds a password, a
// private key, a token or any other sealed secret, in clear, base64 or
// hex. Issue 14 item 4.
func TestNoSecretInLogsOrRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("full site run")
	}
	t.Run("without directory", func(t *testing.T) { secretsRun(t, nil, "127.23.1.1") })
	// With Samba AD: the AD accounts' passwords and the Kerberos keys
	// (S4–S6) are in the jobs too.
	t.Run("with directory", func(t *testing.T) {
		peer := testpeers.Samba(t)
		secretsRun(t, &peer, "127.23.2.1")
	})
}

func secretsRun(t *testing.T, ad *testpeers.SambaPeer, baseIP string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sink := &logSink{}
	logger := func(part string) zerolog.Logger {
		return zerolog.New(sink).Level(zerolog.DebugLevel).With().Timestamp().Str("part", part).Logger()
	}
	dir := t.TempDir()
	redisAddr := testpeers.Redis(t)

	// The provisioning certificate the factory device trusts.
	pair, err := provcert.NewTestPair("amt.test")
	if err != nil {
		t.Fatal(err)
	}
	trust, err := hex.DecodeString(pair.RootSHA256)
	if err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	helloAddr := hl.Addr().String()
	_ = hl.Close()

	// Two devices set up by hand in the MEBx, a factory one, and a
	// stranger whose password the site does not know: its failures are
	// logged too.
	const provPassword, mebxPassword, strangerPassword = "Pr0v-Secret!x9", "Mebx-Factory!7", "Hand-Set-Pa55!"
	base := netip.MustParseAddr(baseIP)
	factory, stranger := base.Next().Next(), base.Next().Next().Next()
	sc := amtsim.Config{Devices: 4, BaseIP: base, Kind: amtsim.KindMEBx, Password: provPassword, CommitDelay: 30 * time.Millisecond,
		Overrides: map[netip.Addr]amtsim.Override{
			factory:  {Kind: amtsim.KindFactory, MEBxPassword: mebxPassword, TrustedDomain: "amt.test"},
			stranger: {Password: strangerPassword}},
		Log: logger("amtsim")}
	sc.TrustHashes, sc.HelloAddr, sc.HelloInterval = [][]byte{trust}, helloAddr, time.Second
	sim, err := amtsim.New(sc)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(1)
	go func() { defer wg.Done(); _ = sim.Run(ctx) }()
	select {
	case <-sim.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("simulator did not start")
	}

	cfg := config.DefaultServer()
	cfg.Redis.Addr = redisAddr
	cfg.DataDir = filepath.Join(dir, "server")
	cfg.GRPC.Listen, cfg.HTTP.Listen, cfg.Console.Listen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	// The stranger's attempts come quickly and end.
	cfg.Phase2.RetryDelay, cfg.Phase2.ReapEvery, cfg.Phase2.MaxAttempts = 200*time.Millisecond, 200*time.Millisecond, 3
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(name, v string) string {
		p := filepath.Join(cfg.DataDir, name)
		if err := os.WriteFile(p, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg.AMT.ProvisioningPasswordFile = write("provisioning.password", provPassword)
	rc := &cfg.AMT.RemoteConfig
	rc.ChainFile, rc.KeyFile, rc.TrustedDomain = write("prov.pem", string(pair.ChainPEM)), write("prov.key", string(pair.KeyPEM)), "amt.test"
	rc.MEBxPasswordFile = write("mebx.password", mebxPassword)
	// Computer names unique in the domain (AD's sAMAccountName is).
	var rb [3]byte
	if _, err := rand.Read(rb[:]); err != nil {
		t.Fatal(err)
	}
	prefix := "s" + hex.EncodeToString(rb[:])
	var hosts []string
	for i := range sim.Devices() {
		hosts = append(hosts, fmt.Sprintf("%s-%d", prefix, i))
	}
	if ad != nil {
		ou := ad.OU(t)
		cfg.Directory = config.Directory{URL: ad.URL, CAFile: ad.CAFile, BindDN: ad.BindDN, BaseDN: ad.BaseDN,
			AccountOU: ou, Realm: ad.Realm, Timeout: 10 * time.Second, PoolSize: 4,
			PasswordFile: write("directory.password", ad.Password)}
		cfg.AMT.Kerberos.Enabled = true
		joinComputers(t, ad, ou, hosts)
	}
	srv, err := server.New(ctx, cfg, logger("server"))
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); defer srv.Close(); _ = srv.Run(ctx) }()

	token := waitFile(t, filepath.Join(cfg.DataDir, "admin.token"))
	// Sealed secrets come and go (a job's TLS key lives until the job
	// ends): every one is read while the run goes on.
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	sealer, err := secrets.LoadKey(filepath.Join(cfg.DataDir, "site.key"))
	if err != nil {
		t.Fatal(err)
	}
	seen := &sealedSeen{st: store.New(rdb, sealer, store.Options{}), rdb: rdb, m: map[string][]byte{},
		values: map[string][]byte{}, seen: map[string]bool{}}
	stopWatch := seen.watch(t)
	defer stopWatch()
	caPEM := waitFile(t, filepath.Join(cfg.DataDir, "grpc-ca.pem"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(caPEM))
	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})),
		grpc.WithPerRPCCredentials(bearerToken(strings.TrimSpace(token))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	admin := pb.NewAdminServiceClient(conn)

	csvs := map[string]*strings.Builder{"mebx": {}, "factory": {}, "strangers": {}}
	for i, d := range sim.Devices() {
		w := csvs["mebx"]
		switch d.Addr {
		case factory:
			w = csvs["factory"]
		case stranger:
			w = csvs["strangers"]
		}
		if w.Len() == 0 {
			w.WriteString("host_name,domain,ip,uuid,subnet\n")
		}
		fmt.Fprintf(w, "%s,amt.test,%s,%s,%s\n", hosts[i], d.Addr, d.UUID, netip.PrefixFrom(base, 24).Masked())
	}
	for name, csv := range csvs {
		if _, err := admin.CreateCollection(ctx, &pb.CreateCollectionRequest{Name: name, AutoProvision: name == "factory"}); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.ImportDevices(ctx, &pb.ImportDevicesRequest{Collection: name, Csv: []byte(csv.String())}); err != nil {
			t.Fatalf("import %s: %v", name, err)
		}
	}
	subnet := netip.PrefixFrom(base, 24).Masked().String()
	enr, err := admin.CreateEnrollmentToken(ctx, &pb.CreateEnrollmentTokenRequest{Subnets: []string{subnet}, TtlSeconds: 600})
	if err != nil {
		t.Fatal(err)
	}
	acfg := config.DefaultAgent()
	acfg.Name, acfg.Server, acfg.ServerCAFile = "agent-s", srv.GRPCAddr(), filepath.Join(cfg.DataDir, "grpc-ca.pem")
	acfg.StateDir = filepath.Join(dir, "agent")
	acfg.AMT.HTTPPort, acfg.AMT.TLSPort = sim.HTTPPort(), sim.TLSPort()
	acfg.AMT.CommitWait, acfg.AMT.CommitDeadline = 100*time.Millisecond, 30*time.Second
	acfg.Discovery.Interval, acfg.Hello.Listen = 0, helloAddr
	tap := &jobTap{}
	ag, err := agent.New(acfg, logger("agent"), agent.WithExecutor(tap), agent.WithBootstrapToken(enr.GetToken()),
		agent.WithBackoff(50*time.Millisecond, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	// The agent's own executor, as agent.New builds it, behind the tap.
	tap.inner = phase2.NewExecutor(phase2.Config{HTTPPort: acfg.AMT.HTTPPort, TLSPort: acfg.AMT.TLSPort,
		CallTimeout: acfg.AMT.CallTimeout, CommitWait: acfg.AMT.CommitWait, CommitDeadline: acfg.AMT.CommitDeadline,
		ProvisioningSigner: ag, Log: logger("agent")})
	wg.Add(1)
	go func() { defer wg.Done(); _ = ag.Run(ctx) }()
	waitAgents(ctx, t, admin, 1)
	for _, coll := range []string{"mebx", "strangers"} {
		if _, err := admin.StartBatch(ctx, &pb.StartBatchRequest{Kind: pb.JobKind_JOB_KIND_PROVISION, Collection: coll}); err != nil {
			t.Fatal(err)
		}
	}
	waitProvisioned(ctx, t, admin, len(sim.Devices())-1)
	waitBatchesDone(ctx, t, admin, 1) // the stranger's
	// A day-2 update too: it rotates the admin password.
	if _, err := admin.StartBatch(ctx, &pb.StartBatchRequest{Kind: pb.JobKind_JOB_KIND_UPDATE, Collection: "mebx"}); err != nil {
		t.Fatal(err)
	}
	waitBatchesDone(ctx, t, admin, 1)

	// Every secret there is: each sealed in Redis (admin passwords, device
	// keys, CA keys, the new MEBx password…), opened with the site key,
	// and those given to the site or its agent as files.
	stopWatch()
	values, err := seen.allValues()
	if err != nil {
		t.Fatalf("reading redis during the run: %v", err)
	}
	find := secretSet{fleet.NewNeedles()}
	for name, plain := range seen.all() {
		if fleet.SealedMarker(name) {
			continue
		}
		find.AddSealed("sealed "+name, plain)
	}
	sealed := len(seen.all())
	if sealed < 9 {
		t.Fatalf("only %d sealed secrets seen in Redis; the run did not provision", sealed)
	}
	jobs := tap.all()
	if len(jobs) < len(sim.Devices())+2 {
		t.Fatalf("the agent ran %d jobs, want at least %d", len(jobs), len(sim.Devices())+2)
	}
	for i, j := range jobs {
		find.addJob(fmt.Sprintf("job %d", i), j.ProtoReflect())
	}
	if ad != nil {
		find.AddText("directory bind password", ad.Password)
	}
	find.AddText("provisioning password", provPassword)
	find.AddText("stranger's password", strangerPassword)
	find.AddText("MEBx password", mebxPassword)
	find.AddText("admin token", strings.TrimSpace(token))
	find.AddText("enrollment token", enr.GetToken())
	siteKey, _ := os.ReadFile(filepath.Join(cfg.DataDir, "site.key"))
	find.AddSealed("site key", bytes.TrimSpace(siteKey))
	find.AddSealed("provisioning key", pair.KeyPEM)
	agentKey, err := os.ReadFile(filepath.Join(acfg.StateDir, "agent.key"))
	if err != nil {
		t.Fatal(err)
	}
	find.AddSealed("agent key", agentKey)

	cancel()
	wg.Wait()
	logs := sink.bytes()
	if n := bytes.Count(logs, []byte(`"level":"debug"`)); n < 50 {
		t.Fatalf("%d debug lines: the run did not log at debug level", n)
	}
	needles := find.All()
	hits := 0
	report := func(where string, data []byte) {
		if bytes.Contains(data, []byte("PRIVATE KEY")) {
			hits++
			t.Errorf("%s: a PEM private key", where)
		}
		for name, s := range needles {
			if bytes.Contains(data, s) {
				hits++
				t.Errorf("%s: %s", where, name)
			}
		}
	}
	for i, line := range bytes.Split(logs, []byte("\n")) {
		var l struct{ Part, Message string }
		_ = json.Unmarshal(line, &l)
		// Named, not quoted: a failure must not print the secret.
		report(fmt.Sprintf("log line %d (%s: %q)", i+1, l.Part, l.Message), line)
	}
	asynqKeys := 0
	for k := range values {
		if strings.HasPrefix(k, "asynq:") {
			asynqKeys++
		}
	}
	if asynqKeys == 0 {
		t.Error("no asynq key in Redis: phase 1 did not run through asynq")
	}
	for k, v := range values {
		if strings.Contains(k, ":secret:") {
			continue // sealed: proven unreadable without the key by opening them above
		}
		report("redis "+k, v)
	}
	t.Logf("%d log lines, %d redis keys seen (%d of asynq), %d sealed secrets seen, %d secret forms searched: %d hits",
		bytes.Count(logs, []byte("\n")), len(values), asynqKeys, sealed, len(needles), hits)
}

// joinComputers adds the Windows computer objects the AMT accounts link
// to, as joining the domain would.
func joinComputers(t *testing.T, ad *testpeers.SambaPeer, ou string, hosts []string) {
	t.Helper()
	conn := ad.Conn(t)
	for _, h := range hosts {
		add := ldap.NewAddRequest("CN="+h+","+ou, nil)
		add.Attribute("objectClass", []string{"top", "person", "organizationalPerson", "user", "computer"})
		add.Attribute("sAMAccountName", []string{strings.ToUpper(h) + "$"})
		add.Attribute("userAccountControl", []string{"4096"}) // workstation trust account
		add.Attribute("dNSHostName", []string{h + ".amt.test"})
		if err := conn.Add(add); err != nil {
			t.Fatalf("join %s: %v", h, err)
		}
	}
}

func waitFile(t *testing.T, path string) string {
	t.Helper()
	for range 200 {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return string(b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never written", path)
	return ""
}

func waitAgents(ctx context.Context, t *testing.T, admin pb.AdminServiceClient, n int) {
	t.Helper()
	for range 400 {
		if r, err := admin.ListAgents(ctx, &pb.ListAgentsRequest{}); err == nil && len(r.GetAgents()) >= n {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("fewer than %d agents enrolled", n)
}

func waitProvisioned(ctx context.Context, t *testing.T, admin pb.AdminServiceClient, n int) {
	t.Helper()
	var last []*pb.Device
	for range 1200 {
		r, err := admin.ListDevices(ctx, &pb.ListDevicesRequest{})
		if err == nil {
			last = r.GetDevices()
			done := 0
			for _, d := range last {
				if d.GetStatus() == pb.DeviceStatus_DEVICE_STATUS_PROVISIONED {
					done++
				}
			}
			if done == n {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, d := range last {
		t.Logf("%s %s %s: %s", d.GetHostName(), d.GetStatus(), d.GetLastErrorStep(), d.GetLastError())
	}
	t.Fatalf("not all %d devices provisioned", n)
}

// waitBatchesDone waits for every batch to end with failed jobs in all.
func waitBatchesDone(ctx context.Context, t *testing.T, admin pb.AdminServiceClient, failed int32) {
	t.Helper()
	for range 1200 {
		r, err := admin.ListBatches(ctx, &pb.ListBatchesRequest{})
		if err == nil {
			open := 0
			for _, b := range r.GetBatches() {
				if !b.GetDone() {
					open++
				}
			}
			if open == 0 {
				// A job refused because another batch already works the
				// device (the factory device's own Hello may start one
				// first) is not a failure of the device.
				var n int32
				var why []string
				for _, b := range r.GetBatches() {
					jobs, _ := admin.ListBatchJobs(ctx, &pb.ListBatchJobsRequest{BatchId: b.GetId(), State: "failed"})
					for _, j := range jobs.GetJobs() {
						if j.GetErrorStep() == "refused" && strings.Contains(j.GetLastError(), "busy with job") {
							continue
						}
						n++
						why = append(why, j.GetDeviceId()+" at "+j.GetErrorStep()+": "+j.GetLastError())
					}
				}
				if n != failed {
					t.Fatalf("%d jobs failed, want %d: %v", n, failed, why)
				}
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("batches never finished")
}
