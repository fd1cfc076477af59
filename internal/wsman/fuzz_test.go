package wsman

import (
	"net/http"
	"testing"

	"github.com/amtops/amtops/internal/wsman/wsmantest"
)

func addFixtureSeeds(f *testing.F) {
	f.Helper()
	for _, b := range wsmantest.Fixtures(f) {
		f.Add(b)
	}
}

// FuzzDecode feeds arbitrary bytes through everything a reply touches:
// decoding, fault extraction, EPR parsing and re-serialising instances.
func FuzzDecode(f *testing.F) {
	addFixtureSeeds(f)
	f.Add([]byte(`<a:Envelope xmlns:a="http://www.w3.org/2003/05/soap-envelope"><a:Body><a:Fault/></a:Body></a:Envelope>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, status := range []int{200, 400} {
			env, err := interpret(status, data)
			if err != nil {
				continue
			}
			p := env.Payload()
			_ = env.Action()
			_, _, _ = ReturnValue(p)
			_ = checkReturnValue("M", p)
			in := InstanceFromNode("http://x/y", p)
			_ = in.Body()
			for _, c := range p.Elements() {
				_ = ParseEPR(c)
				_ = c.Map()
			}
			_ = ParseEPR(env.Body.Child("ResourceCreated"))
		}
	})
}

// FuzzDigestChallenge fuzzes our use of icholy/digest: whatever a device puts
// in WWW-Authenticate, finding the challenge and answering it must not panic.
func FuzzDigestChallenge(f *testing.F) {
	for _, s := range []string{
		`Digest realm="Digest:F3EB554784E729164447A89F60B641C5", nonce="abc", stale="false", qop="auth"`,
		`Digest realm="Digest:F3EB554784E729164447A89F60B641C5", nonce="abc", stale="true", qop="auth"`,
		`Digest realm="x", nonce="n", qop="auth,auth-int", algorithm=MD5`,
		`Digest realm="x", nonce="n", algorithm=SHA-256`,
		`Digest realm="x", nonce="n", qop="auth-int"`,
		`Digest realm="x", nonce="n", userhash=true, opaque="o"`,
		`Digest realm=`,
		`Basic realm="x"`,
		`Digest`,
		`Digest realm="unterminated`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		h := http.Header{}
		h.Add("WWW-Authenticate", header)
		chal, err := findChallenge(h)
		if err != nil {
			return
		}
		_, _ = authorization(chal, "admin", "P@ssw0rd", "/wsman", 1)
	})
}
