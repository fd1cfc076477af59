package amtsim

import (
	"crypto/tls"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Profile names (--profile and ParseProfile).
var profileNames = map[Kind]string{
	KindFactory:  "factory",
	KindMEBx:     "mebx",
	KindCCM:      "ccm",
	KindExternal: "external",
	KindNotAMT:   "not-amt",
}

// ParseProfile maps a --profile name to its Kind.
func ParseProfile(name string) (Kind, error) {
	for k, n := range profileNames {
		if n == strings.TrimSpace(name) {
			return k, nil
		}
	}
	var all []string
	for _, n := range profileNames {
		all = append(all, n)
	}
	sort.Strings(all)
	return 0, fmt.Errorf("amtsim: profile %q unknown (want one of %s)", name, strings.Join(all, ", "))
}

// Profile is the --profile name of a Kind.
func (k Kind) Profile() string {
	if n, ok := profileNames[k]; ok {
		return n
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// fwVersion is a parsed major.minor.patch.
type fwVersion struct{ major, minor, patch int }

func parseVersion(v string) (fwVersion, error) {
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return fwVersion{}, fmt.Errorf("version %q is not major.minor.patch", v)
	}
	var n [3]int
	for i, p := range parts {
		x, err := strconv.Atoi(p)
		if err != nil || x < 0 {
			return fwVersion{}, fmt.Errorf("version %q is not major.minor.patch", v)
		}
		n[i] = x
	}
	return fwVersion{n[0], n[1], n[2]}, nil
}

func (v fwVersion) atLeast(major, minor int) bool {
	return v.major > major || (v.major == major && v.minor >= minor)
}

// RSA key exchange suites: all AMT 11 and 12 offer (AMT-WSMAN.md "TLS, by
// firmware generation"). Go clients must list them explicitly.
var rsaKexSuites = []uint16{
	tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_RSA_WITH_AES_128_CBC_SHA,
	tls.TLS_RSA_WITH_AES_256_CBC_SHA,
}

// ecdheSuites are what AMT 13–18 add to the RSA ones. The exact list of a
// given firmware is not documented; these are the RSA-certificate ECDHE
// suites every TLS 1.2 stack offers.
var ecdheSuites = []uint16{
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
}

// tlsVersions sets the protocol versions and suites a firmware generation
// speaks: TLS 1.2 only below AMT 19, RSA key exchange only on 11 and 12.
func tlsVersions(cfg *tls.Config, v fwVersion) {
	cfg.MinVersion = tls.VersionTLS12
	switch {
	case v.major <= 12:
		cfg.MaxVersion = tls.VersionTLS12
		cfg.CipherSuites = rsaKexSuites
	case v.major <= 18:
		cfg.MaxVersion = tls.VersionTLS12
		cfg.CipherSuites = append(append([]uint16{}, ecdheSuites...), rsaKexSuites...)
	default:
		cfg.MaxVersion = tls.VersionTLS13
	}
}

// tlsOnly: CSME 16.1 and later close 16992 and serve TLS from activation on.
func (v fwVersion) tlsOnly() bool { return v.atLeast(16, 1) }

// closePerCall: AMT 19+ with TLS answers each call on its own connection.
func (v fwVersion) closePerCall() bool { return v.major >= 19 }
