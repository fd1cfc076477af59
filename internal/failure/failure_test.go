package failure

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/amtops/amtops/internal/domain"
	"github.com/amtops/amtops/internal/wsman"
)

// closedPort is a loopback address where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.23.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestSummaryOfRealErrors(t *testing.T) {
	addr := closedPort(t)
	_, port, _ := net.SplitHostPort(addr)
	_, dialErr := net.DialTimeout("tcp", addr, time.Second)
	if dialErr == nil {
		t.Fatal("dial of a closed port succeeded")
	}
	// The agent's own chain around it, as phase 2 wraps it.
	refused := fmt.Errorf("phase2: connect: tls: amt: get setup and configuration: wsman: post https://%s/wsman: %w", addr, dialErr)

	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(srv.Close)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	_, tlsErr := tls.Dial("tcp", srv.Listener.Addr().String(), &tls.Config{ServerName: "example.com"})
	if tlsErr == nil {
		t.Fatal("TLS to an untrusted server succeeded")
	}
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	_, nameErr := tls.Dial("tcp", srv.Listener.Addr().String(), &tls.Config{ServerName: "pc1.amt.test", RootCAs: pool})
	if nameErr == nil {
		t.Fatal("TLS to a server of another name succeeded")
	}

	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"refused", refused, "unreachable: " + port + " refused"},
		{"401", fmt.Errorf("phase2: admin-password: amt: put: %w", wsman.ErrUnauthorized), "401 from device: admin password not accepted"},
		{"untrusted TLS", fmt.Errorf("phase2: verify-tls: %w", tlsErr), "TLS: the device's certificate is not trusted (signed by an unknown CA)"},
		{"wrong name", fmt.Errorf("phase2: verify-tls: %w", nameErr), "TLS: the device's certificate is for example.com, *.example.com, not pc1.amt.test"},
		{"return value", fmt.Errorf("phase2: mebx-password: %w", &wsman.ReturnValueError{Method: "SetMEBxPassword", Code: 16, Name: "NOT_PERMITTED"}),
			"device refused SetMEBxPassword: NOT_PERMITTED (16)"},
		{"fault", &wsman.FaultError{Code: "Sender", Subcode: "AccessDenied", Reason: "access denied"}, "device fault Sender/AccessDenied: access denied"},
		{"field error stays whole", domain.InvalidField("device.uuid", "", "the AMT UUID is needed for the AD account: run discovery first"),
			"device.uuid: the AMT UUID is needed for the AD account: run discovery first"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := Summary(c.err); got != c.want {
				t.Errorf("Summary = %q, want %q", got, c.want)
			}
			text := Text(c.err)
			sum, details := Split(text)
			if sum != c.want {
				t.Errorf("stored summary %q", sum)
			}
			if sum != c.err.Error() && details != c.err.Error() {
				t.Errorf("details %q, want the chain %q", details, c.err.Error())
			}
		})
	}
}

func TestOfText(t *testing.T) {
	for _, c := range []struct{ name, msg, summary string }{
		{"an older agent's chain", `phase2: connect: tls: amt: get setup and configuration: wsman: get http://10.1.0.5:16992/wsman: Post "https://10.1.0.5:16993/wsman": dial tcp 10.1.0.5:16993: connect: connection refused`,
			"unreachable: 16993 refused"},
		{"short and unknown stays", "device busy with job b1:d1", "device busy with job b1:d1"},
		{"long unknown chain: its cause", "phase1: b20260301-120000-abcdef12:dev1: publish-account: directory: create account CN=pc1,OU=AMT,DC=corp,DC=test: LDAP Result Code 50 \"Insufficient Access Rights\"",
			`LDAP Result Code 50 "Insufficient Access Rights"`},
		{"long chain ending in EOF", "phase2: connect: tls: amt: get setup and configuration: wsman: post https://10.1.0.5:16993/wsman: read tcp 10.1.0.1:5000->10.1.0.5:16993: unexpected EOF",
			"read tcp 10.1.0.1:5000->10.1.0.5:16993: unexpected EOF"},
		{"already summarised", "unreachable: 16993 refused\nphase2: …", "unreachable: 16993 refused"},
	} {
		t.Run(c.name, func(t *testing.T) {
			sum, details := Split(c.msg)
			if sum != c.summary {
				t.Errorf("summary %q, want %q", sum, c.summary)
			}
			if strings.Contains(c.msg, "\n") {
				if Of(c.msg) != c.msg {
					t.Error("a summarised reason was changed")
				}
			} else if sum != c.msg && details != c.msg {
				t.Errorf("details %q, want the message", details)
			}
		})
	}
	if Of("") != "" || Text(nil) != "" {
		t.Error("empty reasons must stay empty")
	}
}
