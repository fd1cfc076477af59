package amt

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/wsman"
	"github.com/amtops/amtops/internal/wsman/wsmantest"
)

// readers are every typed call whose reply this package decodes, each
// named for the message; together they reach every decoder.
var readers = []struct {
	name string
	call func(ctx context.Context, c *Client) error
}{
	{"GeneralSettings", func(ctx context.Context, c *Client) error { _, err := c.GeneralSettings(ctx); return err }},
	{"SetupAndConfiguration", func(ctx context.Context, c *Client) error { _, err := c.SetupAndConfiguration(ctx); return err }},
	{"UUID", func(ctx context.Context, c *Client) error { _, err := c.UUID(ctx); return err }},
	{"FirmwareVersions", func(ctx context.Context, c *Client) error { _, err := c.FirmwareVersions(ctx); return err }},
	{"Identity", func(ctx context.Context, c *Client) error { _, err := c.Identity(ctx); return err }},
	{"ControlMode", func(ctx context.Context, c *Client) error { _, err := c.ControlMode(ctx); return err }},
	{"UserACLHandles", func(ctx context.Context, c *Client) error { _, err := c.UserACLHandles(ctx); return err }},
	{"UserACLEntry", func(ctx context.Context, c *Client) error { _, err := c.UserACLEntry(ctx, 1); return err }},
	{"KerberosSettings", func(ctx context.Context, c *Client) error { _, err := c.KerberosSettings(ctx); return err }},
	{"IEEE8021xSettings", func(ctx context.Context, c *Client) error { _, err := c.IEEE8021xSettings(ctx); return err }},
	{"WiFiProfiles", func(ctx context.Context, c *Client) error { _, err := c.WiFiProfiles(ctx); return err }},
	{"WiFiPortState", func(ctx context.Context, c *Client) error { _, err := c.WiFiPortState(ctx); return err }},
	{"Certificates", func(ctx context.Context, c *Client) error { _, err := c.Certificates(ctx); return err }},
	{"Keys", func(ctx context.Context, c *Client) error { _, err := c.Keys(ctx); return err }},
	{"LowAccuracyTime", func(ctx context.Context, c *Client) error { _, err := c.LowAccuracyTime(ctx); return err }},
	{"RedirectionService", func(ctx context.Context, c *Client) error { _, err := c.RedirectionService(ctx); return err }},
	{"PowerSchemes", func(ctx context.Context, c *Client) error { _, err := c.PowerSchemes(ctx); return err }},
	{"KVMEnabled", func(ctx context.Context, c *Client) error { _, err := c.KVMEnabled(ctx); return err }},
	{"WebUIEnabled", func(ctx context.Context, c *Client) error { _, err := c.WebUIEnabled(ctx); return err }},
	{"TLSCredentialContexts", func(ctx context.Context, c *Client) error { _, err := c.TLSCredentialContexts(ctx); return err }},
	{"TLSSettings", func(ctx context.Context, c *Client) error { _, err := c.TLSSettings(ctx); return err }},
	{"AddCertificate", func(ctx context.Context, c *Client) error { _, err := c.AddCertificate(ctx, []byte{0x30}); return err }},
	{"GenerateKeyPair", func(ctx context.Context, c *Client) error { _, err := c.GenerateKeyPair(ctx, 2048); return err }},
	{"GeneratePKCS10RequestEx", func(ctx context.Context, c *Client) error {
		_, err := c.GeneratePKCS10RequestEx(ctx, "Intel(r) AMT Key: Handle: 0", []byte{0x30}, 1)
		return err
	}},
}

// FuzzResponseDecoders serves an arbitrary body as the device's reply to
// every typed call: none may panic or hang, and every failure names the
// operation ("amt: <op>: …"). Seeds: every fixture reply, and each Pull
// reply also as an Enumerate reply, so the items reach the decoders.
func FuzzResponseDecoders(f *testing.F) {
	for _, b := range wsmantest.Fixtures(f) {
		f.Add(b)
		if bytes.Contains(b, []byte("PullResponse")) {
			f.Add(bytes.ReplaceAll(b, []byte("PullResponse"), []byte("EnumerateResponse")))
		}
	}
	var body atomic.Pointer[[]byte]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(*body.Load())
	}))
	f.Cleanup(srv.Close)
	ws, err := wsman.New(wsman.Config{Address: srv.Listener.Addr().String(), Timeout: 5 * time.Second, ReadRetries: -1})
	if err != nil {
		f.Fatal(err)
	}
	c := New(ws)
	f.Fuzz(func(t *testing.T, data []byte) {
		body.Store(&data)
		for _, r := range readers {
			err := r.call(context.Background(), c)
			if err != nil && !strings.HasPrefix(err.Error(), "amt: ") {
				t.Errorf("%s: error %q does not name the operation", r.name, err)
			}
		}
	})
}
