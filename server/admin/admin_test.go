package admin_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/amtops/amtops/internal/domain"
	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/admin"
	"github.com/amtops/amtops/server/admin/admintest"
)

func wantCode(t *testing.T, err error, code codes.Code, contains ...string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("err = %v, want code %s", err, code)
	}
	for _, c := range contains {
		if !strings.Contains(status.Convert(err).Message(), c) {
			t.Fatalf("message %q does not mention %q", status.Convert(err).Message(), c)
		}
	}
}

// Every AdminService method is reachable with the operate role; a read
// token reaches only the reading ones; anything else is refused before
// the handler runs.
func TestAuthentication(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	s.Device(t, "d1", "pc1", "10.0.0.1", domain.StatusNotProvisioned)
	ctx := context.Background()
	read := s.Dial(t, s.Read)
	operate := s.Dial(t, s.Operate)

	for _, c := range []struct {
		name string
		call func(pb.AdminServiceClient) error
		read codes.Code // what the read role gets
	}{
		{"ListDevices", func(c pb.AdminServiceClient) error {
			_, err := c.ListDevices(ctx, &pb.ListDevicesRequest{})
			return err
		}, codes.OK},
		{"GetDevice", func(c pb.AdminServiceClient) error {
			_, err := c.GetDevice(ctx, &pb.GetDeviceRequest{Id: "d1"})
			return err
		}, codes.OK},
		{"GetDeviceLog", func(c pb.AdminServiceClient) error {
			_, err := c.GetDeviceLog(ctx, &pb.GetDeviceLogRequest{Id: "d1"})
			return err
		}, codes.OK},
		{"ListCollections", func(c pb.AdminServiceClient) error {
			_, err := c.ListCollections(ctx, &pb.ListCollectionsRequest{})
			return err
		}, codes.OK},
		{"ListBatches", func(c pb.AdminServiceClient) error {
			_, err := c.ListBatches(ctx, &pb.ListBatchesRequest{})
			return err
		}, codes.OK},
		{"WhoAmI", func(c pb.AdminServiceClient) error {
			_, err := c.WhoAmI(ctx, &pb.WhoAmIRequest{})
			return err
		}, codes.OK},
		{"FleetSummary", func(c pb.AdminServiceClient) error {
			_, err := c.FleetSummary(ctx, &pb.FleetSummaryRequest{})
			return err
		}, codes.OK},
		{"ListAgents", func(c pb.AdminServiceClient) error { _, err := c.ListAgents(ctx, &pb.ListAgentsRequest{}); return err }, codes.OK},
		{"StartBatch", func(c pb.AdminServiceClient) error {
			_, err := c.StartBatch(ctx, &pb.StartBatchRequest{Kind: pb.JobKind_JOB_KIND_PROVISION, DeviceIds: []string{"d1"}})
			return err
		}, codes.PermissionDenied},
		{"CreateCollection", func(c pb.AdminServiceClient) error {
			_, err := c.CreateCollection(ctx, &pb.CreateCollectionRequest{Name: "c-" + strings.ToLower(c2s(c))})
			return err
		}, codes.PermissionDenied},
		{"SetAutoProvisionSuppressed", func(c pb.AdminServiceClient) error {
			_, err := c.SetAutoProvisionSuppressed(ctx, &pb.SetAutoProvisionSuppressedRequest{DeviceIds: []string{"d1"}, Suppressed: true})
			return err
		}, codes.PermissionDenied},
		{"CreateAdminToken", func(c pb.AdminServiceClient) error {
			_, err := c.CreateAdminToken(ctx, &pb.CreateAdminTokenRequest{Name: "n-" + c2s(c), Role: "read"})
			return err
		}, codes.PermissionDenied},
		{"ListAdminTokens", func(c pb.AdminServiceClient) error {
			_, err := c.ListAdminTokens(ctx, &pb.ListAdminTokensRequest{})
			return err
		}, codes.PermissionDenied},
		{"CreateEnrollmentToken", func(c pb.AdminServiceClient) error {
			_, err := c.CreateEnrollmentToken(ctx, &pb.CreateEnrollmentTokenRequest{Subnets: []string{"10.0.0.0/24"}})
			return err
		}, codes.PermissionDenied},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := c.call(read); status.Code(err) != c.read {
				t.Fatalf("read role: %v, want %s", err, c.read)
			}
			if err := c.call(operate); err != nil {
				t.Fatalf("operate role: %v", err)
			}
		})
	}

	for _, c := range []struct{ name, token, want string }{
		{"no token", "", "missing credentials"},
		{"unknown token", "amtadm_" + strings.Repeat("A", 43), "unknown or revoked"},
		{"not an admin token", "hello", "unknown or revoked"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := s.Dial(t, c.token).ListDevices(ctx, &pb.ListDevicesRequest{})
			wantCode(t, err, codes.Unauthenticated, c.want)
		})
	}
	t.Run("wrong scheme", func(t *testing.T) {
		octx := metadata.AppendToOutgoingContext(ctx, "authorization", "Basic "+s.Operate)
		_, err := s.Dial(t, "").ListDevices(octx, &pb.ListDevicesRequest{})
		wantCode(t, err, codes.Unauthenticated, "Bearer")
	})
	t.Run("stream without token", func(t *testing.T) {
		st, err := s.Dial(t, "").WatchBatch(ctx, &pb.GetBatchRequest{Id: "x"})
		if err == nil {
			_, err = st.Recv()
		}
		wantCode(t, err, codes.Unauthenticated)
	})
	t.Run("revoked token", func(t *testing.T) {
		tok, _, err := s.Store.CreateAdminToken(ctx, "temp", domain.RoleOperate)
		if err != nil {
			t.Fatal(err)
		}
		c := s.Dial(t, tok)
		if _, err := c.ListDevices(ctx, &pb.ListDevicesRequest{}); err != nil {
			t.Fatal(err)
		}
		if _, err := operate.RevokeAdminToken(ctx, &pb.RevokeAdminTokenRequest{Name: "temp"}); err != nil {
			t.Fatal(err)
		}
		_, err = c.ListDevices(ctx, &pb.ListDevicesRequest{})
		wantCode(t, err, codes.Unauthenticated)
	})
	t.Run("created token works with its role", func(t *testing.T) {
		resp, err := operate.CreateAdminToken(ctx, &pb.CreateAdminTokenRequest{Name: "auditor", Role: "read"})
		if err != nil {
			t.Fatal(err)
		}
		c := s.Dial(t, resp.GetToken())
		if _, err := c.ListDevices(ctx, &pb.ListDevicesRequest{}); err != nil {
			t.Fatal(err)
		}
		_, err = c.BeginRename(ctx, &pb.BeginRenameRequest{DeviceIds: []string{"d1"}})
		wantCode(t, err, codes.PermissionDenied, "operate role", "auditor")
	})
}

var callN int

// c2s makes names unique across the read and operate calls of a case.
func c2s(pb.AdminServiceClient) string {
	callN++
	return string(rune('a'+callN%26)) + strings.Repeat("x", callN/26)
}

// Tokens never cross the network in clear text: without TLS the
// interceptor refuses even a valid token.
func TestAdminNeedsTLS(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.ChainUnaryInterceptor(s.Svc.UnaryInterceptor()))
	admin.Register(gs, s.Svc)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+s.Operate)
	_, err = pb.NewAdminServiceClient(conn).ListDevices(ctx, &pb.ListDevicesRequest{})
	wantCode(t, err, codes.Unauthenticated, "TLS")
}

func TestErrorCodes(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	s.Device(t, "d1", "pc1", "10.0.0.1", domain.StatusProvisioned)
	ctx := context.Background()
	c := s.Dial(t, s.Operate)
	for _, tc := range []struct {
		name     string
		call     func() error
		code     codes.Code
		contains []string
	}{
		{"unknown device", func() error { _, err := c.GetDevice(ctx, &pb.GetDeviceRequest{Id: "nope"}); return err },
			codes.NotFound, []string{`"nope"`}},
		{"unknown device in a batch", func() error {
			_, err := c.StartBatch(ctx, &pb.StartBatchRequest{Kind: pb.JobKind_JOB_KIND_UPDATE, DeviceIds: []string{"d1", "ghost.amt.test"}})
			return err
		}, codes.NotFound, []string{`"ghost.amt.test"`}},
		{"no kind", func() error {
			_, err := c.StartBatch(ctx, &pb.StartBatchRequest{DeviceIds: []string{"d1"}})
			return err
		}, codes.InvalidArgument, []string{"kind"}},
		{"nothing selected", func() error {
			_, err := c.StartBatch(ctx, &pb.StartBatchRequest{Kind: pb.JobKind_JOB_KIND_PROVISION})
			return err
		}, codes.InvalidArgument, []string{"devices"}},
		{"suppress on provision", func() error {
			_, err := c.StartBatch(ctx, &pb.StartBatchRequest{Kind: pb.JobKind_JOB_KIND_PROVISION, DeviceIds: []string{"d1"}, SuppressAutoProvision: true})
			return err
		}, codes.InvalidArgument, []string{"suppress_auto_provision"}},
		{"unknown collection", func() error {
			_, err := c.StartBatch(ctx, &pb.StartBatchRequest{Kind: pb.JobKind_JOB_KIND_PROVISION, Collection: "nope"})
			return err
		}, codes.NotFound, []string{`collection "nope"`}},
		{"unknown batch", func() error { _, err := c.GetBatch(ctx, &pb.GetBatchRequest{Id: "b-x"}); return err },
			codes.NotFound, []string{`"b-x"`}},
		{"rename not pending", func() error {
			_, err := c.CompleteRename(ctx, &pb.CompleteRenameRequest{DeviceId: "d1", NewFqdn: "pc9.amt.test"})
			return err
		}, codes.FailedPrecondition, []string{"no rename pending"}},
		{"bad new name", func() error {
			_, err := c.CompleteRename(ctx, &pb.CompleteRenameRequest{DeviceId: "d1", NewFqdn: "pc_9.amt.test"})
			return err
		}, codes.InvalidArgument, []string{"new_fqdn"}},
		{"bad collection name", func() error {
			_, err := c.CreateCollection(ctx, &pb.CreateCollectionRequest{Name: "a b"})
			return err
		}, codes.InvalidArgument, []string{"collection.name"}},
		{"bad rule", func() error {
			if _, err := c.CreateCollection(ctx, &pb.CreateCollectionRequest{Name: "r"}); err != nil {
				return err
			}
			_, err := c.AddCollectionMembers(ctx, &pb.CollectionMembersRequest{Collection: "r", Rule: &pb.MemberRule{Subnet: "10.0.0.0/33"}})
			return err
		}, codes.InvalidArgument, []string{"rule.subnet"}},
		{"bad status filter", func() error {
			_, err := c.ListDevices(ctx, &pb.ListDevicesRequest{Status: pb.DeviceStatus(99)})
			return err
		}, codes.InvalidArgument, []string{"status"}},
		{"no sweeper", func() error { _, err := c.SweepNow(ctx, &pb.SweepNowRequest{}); return err },
			codes.Unimplemented, nil},
		{"duplicate collection", func() error {
			_, err := c.CreateCollection(ctx, &pb.CreateCollectionRequest{Name: "r"})
			return err
		}, codes.FailedPrecondition, []string{"already exists"}},
		{"subnets only for discovery", func() error {
			_, err := c.StartBatch(ctx, &pb.StartBatchRequest{Kind: pb.JobKind_JOB_KIND_PROVISION, DeviceIds: []string{"d1"}, Subnets: []string{"10.0.0.0/24"}})
			return err
		}, codes.InvalidArgument, []string{"subnets"}},
		{"no discoverer", func() error {
			_, err := c.StartBatch(ctx, &pb.StartBatchRequest{Kind: pb.JobKind_JOB_KIND_DISCOVER, Subnets: []string{"10.0.0.0/24"}})
			return err
		}, codes.Unimplemented, nil},
	} {
		t.Run(tc.name, func(t *testing.T) { wantCode(t, tc.call(), tc.code, tc.contains...) })
	}
}

// A device can be named by ID, FQDN (any case) or address.
func TestResolveDevice(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	s.Device(t, "d1", "pc1", "10.0.0.1", domain.StatusNotProvisioned)
	c := s.Dial(t, s.Read)
	for _, ref := range []string{"d1", "pc1.amt.test", "PC1.AMT.TEST", "10.0.0.1"} {
		t.Run(ref, func(t *testing.T) {
			d, err := c.GetDevice(context.Background(), &pb.GetDeviceRequest{Id: ref})
			if err != nil || d.GetId() != "d1" {
				t.Fatalf("GetDevice(%q) = %v, %v", ref, d, err)
			}
		})
	}
}

const goodCSV = `host_name,domain,ip,uuid
pc1,amt.test,10.0.0.1,
pc2,amt.test,10.0.0.2,8c2b2c4e-1f0a-4d5e-9b1c-2a3b4c5d6e7f
# a comment line
pc3,amt.test,10.0.1.3,
`

func TestImportDevices(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	ctx := context.Background()
	c := s.Dial(t, s.Operate)
	// pc1 is known (same FQDN, another ID): the import updates it.
	s.Device(t, "known-1", "pc1", "10.0.0.99", domain.StatusNotProvisioned)
	if err := s.Store.PutAgent(ctx, domain.Agent{ID: "agent-a", Subnets: mustPrefixes("10.0.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateCollection(ctx, &pb.CreateCollectionRequest{Name: "lab"}); err != nil {
		t.Fatal(err)
	}
	dry, err := c.ImportDevices(ctx, &pb.ImportDevicesRequest{Collection: "lab", Csv: []byte(goodCSV), DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Store.CountDevices(ctx); n[""] != 1 {
		t.Fatalf("dry run wrote devices: %v", n)
	}
	resp, err := c.ImportDevices(ctx, &pb.ImportDevicesRequest{Collection: "lab", Csv: []byte(goodCSV)})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(dry, resp) {
		t.Fatalf("dry run %v differs from import %v", dry, resp)
	}
	if resp.GetCreated() != 2 || resp.GetUpdated() != 1 || resp.GetAdded() != 3 {
		t.Fatalf("import = %v, want 2 created, 1 updated, 3 added", resp)
	}
	// pc3's subnet has no agent: the import warns, naming the line.
	if len(resp.GetWarnings()) != 1 || !strings.Contains(resp.GetWarnings()[0], "csv line 5") {
		t.Fatalf("warnings = %q", resp.GetWarnings())
	}
	k, err := s.Store.GetDevice(ctx, "known-1")
	if err != nil || k.IP.String() != "10.0.0.1" || k.Subnet.String() != "10.0.0.0/24" || k.Collections[0] != "lab" {
		t.Fatalf("updated device = %+v, %v", k, err)
	}
	u, err := s.Store.GetDevice(ctx, "8c2b2c4e-1f0a-4d5e-9b1c-2a3b4c5d6e7f")
	if err != nil || u.Status != domain.StatusUnknown || u.FQDN() != "pc2.amt.test" {
		t.Fatalf("device by uuid = %+v, %v", u, err)
	}
	if _, err := s.Store.GetDevice(ctx, "pc3.amt.test"); err != nil {
		t.Fatalf("device by fqdn: %v", err)
	}
	list, err := c.ListCollections(ctx, &pb.ListCollectionsRequest{})
	if err != nil || len(list.GetCollections()) != 1 || list.GetCollections()[0].GetMembers() != 3 {
		t.Fatalf("collections = %v, %v", list, err)
	}
	again, err := c.ImportDevices(ctx, &pb.ImportDevicesRequest{Collection: "lab", Csv: []byte(goodCSV)})
	if err != nil || again.GetCreated() != 0 || again.GetUpdated() != 3 || again.GetAdded() != 0 {
		t.Fatalf("re-import = %v, %v; want 3 updated, nothing added", again, err)
	}
}

// A bad file names each bad line and field, and writes nothing.
func TestImportDevicesBadInput(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	ctx := context.Background()
	c := s.Dial(t, s.Operate)
	if _, err := c.CreateCollection(ctx, &pb.CreateCollectionRequest{Name: "lab"}); err != nil {
		t.Fatal(err)
	}
	s.Device(t, "other", "taken", "10.0.0.50", domain.StatusNotProvisioned)
	if err := s.Store.PutDevice(ctx, domain.Device{ID: "pc7.amt.test", HostName: "renamed", Domain: "amt.test", Status: domain.StatusUnknown}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, csv string
		want      []string
	}{
		{"empty", "", []string{"empty file"}},
		{"no header", "pc1,amt.test,10.0.0.1\n", []string{"csv line 1", `header "pc1": unknown column`}},
		{"missing column", "host_name,domain\npc1,amt.test\n", []string{"csv line 1", `header "ip": required column missing`}},
		{"bad ip", "host_name,domain,ip\npc1,amt.test,10.0.0.1\npc2,amt.test,10.0.0.x\n", []string{`csv line 3: ip "10.0.0.x": not an IP address`}},
		{"bad host", "host_name,domain,ip\npc_1,amt.test,10.0.0.1\n", []string{`csv line 2: host_name "pc_1"`}},
		{"empty host", "host_name,domain,ip\n,amt.test,10.0.0.1\n", []string{`csv line 2: host_name: required`}},
		{"bad domain", "host_name,domain,ip\npc1,amt..test,10.0.0.1\n", []string{`csv line 2: domain "amt..test"`}},
		{"bad uuid", "host_name,domain,ip,uuid\npc1,amt.test,10.0.0.1,xyz\n", []string{`csv line 2: uuid "xyz": not a UUID`}},
		{"subnet without ip", "host_name,domain,ip,subnet\npc1,amt.test,10.0.0.1,10.9.0.0/24\n", []string{`csv line 2: subnet "10.9.0.0/24": does not contain ip`}},
		{"field count", "host_name,domain,ip\npc1,amt.test\n", []string{"csv line 2: fields \"2\": the header has 3 columns"}},
		{"duplicate name", "host_name,domain,ip\npc1,amt.test,10.0.0.1\nPC1,AMT.test,10.0.0.2\n", []string{"csv line 3: host_name", "line 2"}},
		{"duplicate ip", "host_name,domain,ip\npc1,amt.test,10.0.0.1\npc2,amt.test,10.0.0.1\n", []string{`csv line 3: ip "10.0.0.1": the same address is on line 2`}},
		{"bad quote", "host_name,domain,ip\n\"pc1,amt.test,10.0.0.1\n", []string{"csv line 2"}},
		{"several problems", "host_name,domain,ip\npc_1,amt.test,10.0.0.1\npc2,amt.test,nope\n", []string{"csv line 2: host_name", "csv line 3: ip"}},
		{"id taken by a renamed device", "host_name,domain,ip\npc7,amt.test,10.0.0.7\n", []string{"csv line 2: host_name", "renamed.amt.test"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := s.Store.CountDevices(ctx)
			_, err := c.ImportDevices(ctx, &pb.ImportDevicesRequest{Collection: "lab", Csv: []byte(tc.csv)})
			wantCode(t, err, codes.InvalidArgument, tc.want...)
			after, _ := s.Store.CountDevices(ctx)
			if before[""] != after[""] {
				t.Fatalf("a rejected import wrote devices: %d → %d", before[""], after[""])
			}
		})
	}
	t.Run("unknown collection", func(t *testing.T) {
		_, err := c.ImportDevices(ctx, &pb.ImportDevicesRequest{Collection: "nope", Csv: []byte(goodCSV)})
		wantCode(t, err, codes.NotFound, `"nope"`)
	})
}

func TestBootstrap(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	ctx := context.Background()
	dir := t.TempDir()
	// admintest already made tokens: nothing to bootstrap.
	if _, created, err := admin.Bootstrap(ctx, s.Store, dir); err != nil || created {
		t.Fatalf("with tokens: created=%v err=%v", created, err)
	}
	for _, tok := range []string{"ops", "viewer"} {
		if err := s.Store.RevokeAdminToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	path, created, err := admin.Bootstrap(ctx, s.Store, dir)
	if err != nil || !created || path != filepath.Join(dir, "admin.token") {
		t.Fatalf("bootstrap = %s, %v, %v", path, created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, %v; want mode 0600", fi, err)
	}
	raw, _ := os.ReadFile(path)
	c := s.Dial(t, strings.TrimSpace(string(raw)))
	if _, err := c.CreateCollection(ctx, &pb.CreateCollectionRequest{Name: "x"}); err != nil {
		t.Fatalf("bootstrap token cannot operate: %v", err)
	}
	if _, created, err := admin.Bootstrap(ctx, s.Store, dir); err != nil || created {
		t.Fatalf("second bootstrap: created=%v err=%v", created, err)
	}
	// A token that cannot be written is revoked, so the next start retries.
	if err := s.Store.RevokeAdminToken(ctx, admin.BootstrapName); err != nil {
		t.Fatal(err)
	}
	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := admin.Bootstrap(ctx, s.Store, filepath.Join(blocker, "sub")); err == nil {
		t.Fatal("bootstrap into an impossible directory succeeded")
	}
	if ts, _ := s.Store.ListAdminTokens(ctx); len(ts) != 0 {
		t.Fatalf("unwritten bootstrap token kept: %+v", ts)
	}
}

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// Agents and administrators share the port: an admin token opens no agent
// method, the agent interceptor leaves admin calls alone.
func TestSharedPort(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	ctx := context.Background()
	if _, err := s.Dial(t, s.Operate).ListDevices(ctx, &pb.ListDevicesRequest{}); err != nil {
		t.Fatalf("admin call through both interceptors: %v", err)
	}
	tc := &tls.Config{RootCAs: s.CA.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	conn, err := grpc.NewClient(s.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	actx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s.Operate)
	_, err = pb.NewAgentServiceClient(conn).Lease(actx, &pb.LeaseRequest{})
	if c := status.Code(err); c != codes.PermissionDenied && c != codes.Unauthenticated {
		t.Fatalf("agent call with an admin token: %v, want refused", err)
	}
}

// BenchmarkAuthenticatedCall measures one admin unary call over TLS on
// loopback, through both interceptors and a token lookup in Redis.
func BenchmarkAuthenticatedCall(b *testing.B) {
	s := admintest.Start(b, admintest.Options{})
	s.Device(b, "d1", "pc1", "10.0.0.1", domain.StatusNotProvisioned)
	c := s.Dial(b, s.Read)
	ctx := context.Background()
	for b.Loop() {
		if _, err := c.GetDevice(ctx, &pb.GetDeviceRequest{Id: "d1"}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
}

// A large inventory whose subnets no agent serves yet still gets an
// answer: the warnings are bounded, the rest counted (40,000 lines of them
// used to exceed gRPC's message limit).
func TestImportDryRunBoundsWarnings(t *testing.T) {
	s := admintest.Start(t, admintest.Options{})
	var csv strings.Builder
	csv.WriteString("host_name,domain,ip\n")
	const rows = 20000
	for i := range rows {
		fmt.Fprintf(&csv, "pc%05d,corp.example,10.%d.%d.%d\n", i, 50+i/65536, i/256%256, i%256)
	}
	c := s.Dial(t, s.Operate)
	if _, err := c.CreateCollection(context.Background(), &pb.CreateCollectionRequest{Name: "big"}); err != nil {
		t.Fatal(err)
	}
	resp, err := c.ImportDevices(context.Background(),
		&pb.ImportDevicesRequest{Collection: "big", Csv: []byte(csv.String()), DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	w := resp.GetWarnings()
	if len(w) != 101 || !strings.Contains(w[100], fmt.Sprintf("and %d more lines", rows-100)) {
		t.Fatalf("%d warnings, last %q; want 100 and a count of the rest", len(w), w[len(w)-1])
	}
}
