package rest_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi2"
	"github.com/getkin/kin-openapi/openapi2conv"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/rest/resttest"
)

// route is one operation of the OpenAPI document.
type route struct{ method, path, op string }

func openAPIRoutes(t *testing.T, doc []byte) []route {
	t.Helper()
	var d struct {
		Paths map[string]map[string]struct {
			OperationID string `json:"operationId"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		t.Fatal(err)
	}
	var out []route
	for p, ops := range d.Paths {
		for m, o := range ops {
			out = append(out, route{strings.ToUpper(m), p, strings.TrimPrefix(o.OperationID, "AdminService_")})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].op < out[j].op })
	return out
}

func rpcNames() []string {
	var names []string
	for _, m := range pb.AdminService_ServiceDesc.Methods {
		names = append(names, m.MethodName)
	}
	for _, s := range pb.AdminService_ServiceDesc.Streams {
		names = append(names, s.StreamName)
	}
	sort.Strings(names)
	return names
}

func TestOpenAPIDocument(t *testing.T) {
	s := resttest.Start(t)
	code, doc := s.Call(t, s.Client, "", "GET", "/api/v1/openapi.json", "")
	if code != http.StatusOK {
		t.Fatalf("openapi.json: %d %s", code, doc)
	}
	if !bytes.Equal(doc, pb.OpenAPI) {
		t.Error("served document differs from the committed one")
	}
	var ops []string
	for _, r := range openAPIRoutes(t, doc) {
		ops = append(ops, r.op)
	}
	if got, want := strings.Join(ops, ","), strings.Join(rpcNames(), ","); got != want {
		t.Errorf("operations\n got %s\nwant %s", got, want)
	}
	var d2 openapi2.T
	if err := json.Unmarshal(doc, &d2); err != nil {
		t.Fatal(err)
	}
	d3, err := openapi2conv.ToV3(&d2)
	if err != nil {
		t.Fatalf("convert to OpenAPI 3: %v", err)
	}
	if err := d3.Validate(context.Background()); err != nil {
		t.Fatalf("document does not validate: %v", err)
	}
}

// operateGETs are reads closed to the read role: the list of tokens
// names every administrator.
var operateGETs = map[string]bool{"ListAdminTokens": true}

// TestRoles calls every operation with each role: a read token may make
// every GET but operateGETs and no other call (403), the operate token
// is refused nothing, and no token or a wrong one is 401.
func TestRoles(t *testing.T) {
	s := resttest.Start(t)
	read := s.ReadToken(t, "helpdesk")
	param := regexp.MustCompile(`\{[^}]+\}`)
	for _, r := range openAPIRoutes(t, pb.OpenAPI) {
		path := param.ReplaceAllString(r.path, "nosuch")
		body := ""
		if r.method != "GET" && r.method != "DELETE" {
			body = "{}"
		}
		t.Run(r.op, func(t *testing.T) {
			for _, c := range []struct {
				name, token string
				refused     int // 0: must not be refused
			}{
				{"no token", "", http.StatusUnauthorized},
				{"wrong token", "not-a-token", http.StatusUnauthorized},
				{"read", read, map[bool]int{true: 0, false: http.StatusForbidden}[r.method == "GET" && !operateGETs[r.op]]},
				{"operate", s.Operate, 0},
			} {
				code, out := s.Call(t, s.Client, c.token, r.method, path, body)
				switch {
				case c.refused != 0 && code != c.refused:
					t.Errorf("%s: %s %s = %d, want %d: %s", c.name, r.method, path, code, c.refused, out)
				case c.refused == 0 && (code == http.StatusUnauthorized || code == http.StatusForbidden):
					t.Errorf("%s: %s %s refused (%d): %s", c.name, r.method, path, code, out)
				}
			}
		})
	}
}

func TestReadAndOperate(t *testing.T) {
	s := resttest.Start(t)
	read := s.ReadToken(t, "viewer")

	code, out := s.Call(t, s.Client, read, "POST", "/api/v1/collections", `{"name":"lab"}`)
	if code != http.StatusForbidden || !strings.Contains(string(out), "operate role") {
		t.Fatalf("read token created a collection: %d %s", code, out)
	}
	s.MustCall(t, s.Operate, "POST", "/api/v1/collections", `{"name":"lab","description":"bench"}`, nil)
	var cols pb.ListCollectionsResponse
	s.MustCall(t, read, "GET", "/api/v1/collections", "", &jsonPB{&cols})
	if len(cols.Collections) != 1 || cols.Collections[0].GetDescription() != "bench" {
		t.Fatalf("collections = %v", cols.Collections)
	}

	var put pb.PutDevicesResponse
	s.MustCall(t, s.Operate, "POST", "/api/v1/devices",
		`{"devices":[{"id":"pc1","hostName":"pc1","domain":"corp.test","ip":"10.1.0.5","subnet":"10.1.0.0/24"},
		             {"id":"pc2","hostName":"pc2","domain":"corp.test","ip":"10.1.0.6","subnet":"10.1.0.0/24"}]}`, &jsonPB{&put})
	if put.Created != 2 {
		t.Fatalf("created %d", put.Created)
	}
	var page pb.ListDevicesResponse
	s.MustCall(t, read, "GET", "/api/v1/devices?limit=1", "", &jsonPB{&page})
	if len(page.Devices) != 1 || page.NextCursor == "" {
		t.Fatalf("first page: %v", &page)
	}
	var page2 pb.ListDevicesResponse
	s.MustCall(t, read, "GET", "/api/v1/devices?limit=1&cursor="+page.NextCursor, "", &jsonPB{&page2})
	if len(page2.Devices) != 1 || page2.Devices[0].Id == page.Devices[0].Id {
		t.Fatalf("second page: %v", &page2)
	}
	var d pb.Device
	s.MustCall(t, read, "GET", "/api/v1/devices/pc2.corp.test", "", &jsonPB{&d})
	if d.Id != "pc2" {
		t.Fatalf("device by FQDN = %v", &d)
	}
	if code, out := s.Call(t, s.Client, read, "GET", "/api/v1/devices/nosuch", ""); code != http.StatusNotFound {
		t.Fatalf("unknown device: %d %s", code, out)
	}
	if code, out := s.Call(t, s.Client, s.Operate, "GET", "/api/v1/devices?subnet=banana", ""); code != http.StatusBadRequest ||
		!strings.Contains(string(out), "subnet") {
		t.Fatalf("bad subnet: %d %s", code, out)
	}
	watchBatch(t, s, read)
}

// watchBatch starts a provisioning batch no agent will finish, watches it
// over the streaming endpoint with the read token, and cancels it with the
// operate token: the stream shows the cancellation (jobs not started are
// cancelled at once, ones in phase 1 at their next step).
func watchBatch(t *testing.T, s *resttest.Site, read string) {
	var b pb.Batch
	s.MustCall(t, s.Operate, "POST", "/api/v1/batches", `{"kind":"JOB_KIND_PROVISION","deviceIds":["pc1","pc2"]}`, &jsonPB{&b})
	if b.Total != 2 {
		t.Fatalf("batch = %v", &b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.Base+"/api/v1/batches/"+b.Id+"/watch", nil)
	req.Header.Set("Authorization", "Bearer "+read)
	resp, err := s.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("watch: %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	if !sc.Scan() {
		t.Fatalf("watch sent nothing: %v", sc.Err())
	}
	s.MustCall(t, s.Operate, "POST", "/api/v1/batches/"+b.Id+"/cancel", "", nil)
	var last pb.Batch
	for !last.CancelRequested && !last.Done && sc.Scan() {
		var chunk struct {
			Result json.RawMessage `json:"result"`
			Error  json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &chunk); err != nil || chunk.Error != nil {
			t.Fatalf("watch chunk %s: %v", sc.Text(), err)
		}
		if err := (&jsonPB{&last}).UnmarshalJSON(chunk.Result); err != nil {
			t.Fatal(err)
		}
	}
	if !last.CancelRequested || last.Done && last.Cancelled+last.Succeeded+last.Failed != 2 {
		t.Fatalf("last watched state = %v (%v)", &last, sc.Err())
	}
}

// TestClientCertificate: an admin certificate issued through the API
// authenticates without a token, with its role.
func TestClientCertificate(t *testing.T) {
	s := resttest.Start(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "alice"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{"name": "alice", "role": "read", "csrDer": csr})
	var r pb.IssueAdminCertificateResponse
	s.MustCall(t, s.Operate, "POST", "/api/v1/admin-certificates", string(body), &jsonPB{&r})
	withCert := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.Pool,
		Certificates: []tls.Certificate{{Certificate: [][]byte{r.CertificateDer}, PrivateKey: key}}}}}
	if code, out := s.Call(t, withCert, "", "GET", "/api/v1/agents", ""); code != http.StatusOK {
		t.Fatalf("certificate read: %d %s", code, out)
	}
	if code, out := s.Call(t, withCert, "", "POST", "/api/v1/sweep", "{}"); code != http.StatusForbidden {
		t.Fatalf("read certificate swept: %d %s", code, out)
	}
	// A cross-origin write from a browser carrying the certificate.
	req, _ := http.NewRequest("POST", s.Base+"/api/v1/sweep", strings.NewReader("{}"))
	req.Header.Set("Origin", "https://evil.example")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := withCert.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin write: %d", resp.StatusCode)
	}
}

// jsonPB decodes the gateway's protojson into a message.
type jsonPB struct{ m proto.Message }

func (j *jsonPB) UnmarshalJSON(b []byte) error { return protojson.Unmarshal(b, j.m) }
