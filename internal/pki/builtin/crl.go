package builtin

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/amtops/amtops/internal/domain"
)

// revocation is one revoked serial, kept as a set member
// "serial:reason:unixnano" so the CRL is built from one set read.
type revocation struct {
	Serial string
	Reason domain.RevocationReason
	At     time.Time
}

func (r revocation) member() string {
	return fmt.Sprintf("%s:%d:%d", r.Serial, int(r.Reason), r.At.UnixNano())
}

func parseMember(m string) (revocation, error) {
	parts := strings.Split(m, ":")
	if len(parts) != 3 {
		return revocation{}, fmt.Errorf("bad revocation record %q", m)
	}
	reason, err1 := strconv.Atoi(parts[1])
	at, err2 := strconv.ParseInt(parts[2], 10, 64)
	if err1 != nil || err2 != nil {
		return revocation{}, fmt.Errorf("bad revocation record %q", m)
	}
	return revocation{Serial: parts[0], Reason: domain.RevocationReason(reason), At: time.Unix(0, at).UTC()}, nil
}

// Handler publishes the CA over HTTP: GET /crl (DER,
// application/pkix-crl) and GET /ca.pem (issuing CA and root). Mount it
// under a prefix with http.StripPrefix.
func (c *CA) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /crl", func(w http.ResponseWriter, r *http.Request) {
		der, err := c.CRL(r.Context())
		if err != nil {
			c.log.Error().Err(err).Msg("serve crl")
			http.Error(w, "CRL unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/pkix-crl")
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = w.Write(der)
	})
	mux.HandleFunc("GET /ca.pem", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(c.CertificatesPEM())
	})
	return mux
}
