package config

import (
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// Server is the site server's configuration. See configs/server.example.yaml.
type Server struct {
	Log         Log       `yaml:"log"`
	Redis       Redis     `yaml:"redis"`
	SiteKeyFile string    `yaml:"site_key_file"`
	DataDir     string    `yaml:"data_dir"`
	GRPC        GRPC      `yaml:"grpc"`
	HTTP        HTTP      `yaml:"http"`
	Phase1      Phase1    `yaml:"phase1"`
	Phase2      Phase2    `yaml:"phase2"`
	AMT         AMT       `yaml:"amt"`
	CA          CA        `yaml:"ca"`
	Directory   Directory `yaml:"directory"`
	Networks    Networks  `yaml:"networks"`
	Sweep       Sweep     `yaml:"sweep"`
	Admin       Admin     `yaml:"admin"`
	Console     Console   `yaml:"console"`
}

// Log selects the log level and format.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"` // json or console
}

// Redis is where the site's state and queues live. No address selects
// an embedded, non-persistent in-process Redis for trying amtops out.
type Redis struct {
	Addr string `yaml:"addr"`
	// Addrs are Redis Cluster seed addresses (instead of Addr).
	Addrs []string `yaml:"addrs"`
	// Cluster forces cluster mode with a single address (a cluster's
	// configuration endpoint); several Addrs always mean a cluster.
	Cluster      bool     `yaml:"cluster"`
	Username     string   `yaml:"username"`
	PasswordFile string   `yaml:"password_file"`
	DB           int      `yaml:"db"`
	KeyPrefix    string   `yaml:"key_prefix"`
	TLS          RedisTLS `yaml:"tls"`
}

// RedisTLS is TLS to Redis (Redis 6+ tls-port, managed Redis services).
type RedisTLS struct {
	Enabled bool `yaml:"enabled"`
	// CAFile verifies the Redis server; empty: the system roots.
	CAFile string `yaml:"ca_file"`
	// ServerName is checked in Redis's certificate; empty: the address's host.
	ServerName string `yaml:"server_name"`
	// CertFile and KeyFile are a client certificate (tls-auth-clients yes).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Addresses are the configured Redis addresses; none means embedded.
func (r Redis) Addresses() []string {
	if r.Addr != "" {
		return []string{r.Addr}
	}
	return r.Addrs
}

// GRPC is the agents' and administrators' endpoint.
type GRPC struct {
	Listen string `yaml:"listen"`
	// Names the server certificate carries, besides the listen host.
	Names []string `yaml:"names"`
}

// HTTP serves the CRL, the CA certificates, metrics and health.
type HTTP struct {
	Listen string `yaml:"listen"`
	// Pprof adds Go's profiles under /debug/pprof/ (for the fleet bench's
	// profiles); off by default, as they show the code's internals.
	Pprof bool `yaml:"pprof"`
}

// Console is the HTTPS endpoint of the REST API (/api/v1/) and the web
// console, with the gRPC listener's certificate and client CA. Disabled
// turns both off.
type Console struct {
	Listen   string `yaml:"listen"`
	Disabled bool   `yaml:"disabled"`
}

// Phase1 tunes the asynq workers that do CA and directory work (S1–S6).
type Phase1 struct {
	Concurrency int           `yaml:"concurrency"`
	MaxRetry    int           `yaml:"max_retry"`
	Timeout     time.Duration `yaml:"timeout"`
}

// Phase2 tunes the per-subnet lease queue the agents pull from.
type Phase2 struct {
	LeaseTTL    time.Duration `yaml:"lease_ttl"`
	MaxAttempts int           `yaml:"max_attempts"`
	LongPoll    time.Duration `yaml:"long_poll"`
	JobDeadline time.Duration `yaml:"job_deadline"`
	ReapEvery   time.Duration `yaml:"reap_every"`
	// RetryDelay is how long a job that failed on the device waits
	// before an agent gets it again.
	RetryDelay time.Duration `yaml:"retry_delay"`
	// UnservedDeadline is how long a job may wait on a subnet no live
	// agent serves before it fails with that reason; 0 waits forever.
	UnservedDeadline time.Duration `yaml:"unserved_deadline"`
}

// AMT is what the controllers get: the provisioning account the agents
// connect with and the settings of S9, S10.
type AMT struct {
	ProvisioningUser string `yaml:"provisioning_user"`
	// The provisioning password is read from this file, or from
	// $AMTOPS_PROVISIONING_PASSWORD when empty.
	ProvisioningPasswordFile string      `yaml:"provisioning_password_file"`
	KeyOnDevice              bool        `yaml:"key_on_device"`
	MutualTLS                bool        `yaml:"mutual_tls"`
	Settings                 AMTSettings `yaml:"settings"`
	Kerberos                 Kerberos    `yaml:"kerberos"`
	// RemoteConfig activates factory devices (state 0) in admin control
	// mode after their Hello (C5, S7–S10).
	RemoteConfig RemoteConfig `yaml:"remote_config"`
}

// RemoteConfig is zero-touch activation: the provisioning certificate the
// server presents (through the agent) to a device that sent a Hello, and
// what the device is expected to trust.
type RemoteConfig struct {
	// The provisioning certificate: PEM chain (leaf first, root last) and
	// PEM key, or one PKCS#12 file with its password. Loaded once and
	// sealed; the key never leaves the server.
	ChainFile      string `yaml:"chain_file"`
	KeyFile        string `yaml:"key_file"`
	PKCS12File     string `yaml:"pkcs12_file"`
	PKCS12Password string `yaml:"pkcs12_password_file"`
	// MEBxPasswordFile holds the devices' current MEBx password (the
	// factory default is "admin"); $AMTOPS_MEBX_PASSWORD when empty.
	MEBxPasswordFile string `yaml:"mebx_password_file"`
	// TrustedDomain is the DNS suffix devices trust for provisioning
	// (DHCP option 15 of their network, or the PKI DNS suffix set in the
	// MEBx); Subnets overrides it per subnet.
	TrustedDomain string            `yaml:"trusted_domain"`
	Subnets       []RemoteConfigNet `yaml:"subnets"`
}

// RemoteConfigNet is one subnet's trusted domain suffix.
type RemoteConfigNet struct {
	CIDR          string `yaml:"cidr"`
	TrustedDomain string `yaml:"trusted_domain"`
}

// Enabled reports whether a provisioning certificate is configured.
func (r RemoteConfig) Enabled() bool { return r.ChainFile != "" || r.PKCS12File != "" }

// AMTSettings are the site's AMT settings (S9).
type AMTSettings struct {
	IDERedirection bool   `yaml:"ide_redirection"`
	SerialOverLAN  bool   `yaml:"serial_over_lan"`
	KVM            bool   `yaml:"kvm"`
	PingResponse   bool   `yaml:"ping_response"`
	WebUI          bool   `yaml:"web_ui"`
	PowerScheme    string `yaml:"power_scheme"`
}

// Kerberos controls S10's Kerberos step; it needs a directory.
type Kerberos struct {
	Enabled bool `yaml:"enabled"`
	// Minutes of clock skew AMT accepts (at most 5).
	MaxClockTolerance int `yaml:"max_clock_tolerance"`
	// Windows SIDs of the users and groups that may use AMT with Kerberos.
	AdminSIDs []string `yaml:"admin_sids"`
}

// CA selects the certificate authority backend.
type CA struct {
	Backend       string        `yaml:"backend"` // builtin or step-ca
	ServerProfile string        `yaml:"server_profile"`
	ClientProfile string        `yaml:"client_profile"`
	Validity      time.Duration `yaml:"validity"`
	// CRLURL is the public URL of the built-in CA's CRL, written into every
	// certificate it issues. Empty: this server's own http.listen address,
	// which must then be one devices can reach (not 0.0.0.0).
	CRLURL string `yaml:"crl_url"`
	StepCA StepCA `yaml:"step_ca"`
}

// StepCA is an external smallstep step-ca with a JWK provisioner.
type StepCA struct {
	URL          string `yaml:"url"`
	RootFile     string `yaml:"root_file"`
	Provisioner  string `yaml:"provisioner"`
	CAConfigFile string `yaml:"ca_config_file"` // ca.json, for the encrypted provisioner key
	PasswordFile string `yaml:"password_file"`  // the provisioner password
}

// Directory is Active Directory; an empty URL means no directory: S4–S6
// are skipped and Kerberos stays off.
type Directory struct {
	URL           string        `yaml:"url"`
	StartTLS      bool          `yaml:"start_tls"`
	CAFile        string        `yaml:"ca_file"`
	BindDN        string        `yaml:"bind_dn"`
	PasswordFile  string        `yaml:"password_file"`
	BaseDN        string        `yaml:"base_dn"`
	AccountOU     string        `yaml:"account_ou"`
	AccountSuffix string        `yaml:"account_suffix"`
	Realm         string        `yaml:"realm"`
	AddToGroups   bool          `yaml:"add_to_groups"` // S6, off by default
	Groups8021X   []string      `yaml:"groups_8021x"`
	GroupsWiFi    []string      `yaml:"groups_wireless"`
	Timeout       time.Duration `yaml:"timeout"`
	PoolSize      int           `yaml:"pool_size"`
}

// Networks are the SP2 802.1X and wireless profiles (S3, S7).
type Networks struct {
	Wired8021X bool       `yaml:"wired_8021x"`
	Wireless   []WiFiSpec `yaml:"wireless"`
}

// WiFiSpec is one wireless profile.
type WiFiSpec struct {
	Name     string `yaml:"name"`
	SSID     string `yaml:"ssid"`
	Priority int    `yaml:"priority"`
}

// Sweep is the periodic auto-provisioning sweep (S22).
type Sweep struct {
	Interval time.Duration `yaml:"interval"`
}

// Admin lists the credentials AdminService accepts.
type Admin struct {
	Tokens []AdminToken `yaml:"tokens"`
}

// AdminToken is a bearer token with a role; the token itself is in a file.
type AdminToken struct {
	Name      string `yaml:"name"`
	Role      string `yaml:"role"` // read or operate
	TokenFile string `yaml:"token_file"`
}

// DefaultServer is the configuration with every default filled in.
func DefaultServer() Server {
	return Server{
		Log:     Log{Level: "info", Format: "json"},
		Redis:   Redis{KeyPrefix: "amtops"},
		DataDir: "./var/server",
		GRPC:    GRPC{Listen: "127.0.0.1:7443"},
		HTTP:    HTTP{Listen: "127.0.0.1:7080"},
		Console: Console{Listen: "127.0.0.1:7444"},
		Phase1:  Phase1{Concurrency: 16, MaxRetry: 8, Timeout: 2 * time.Minute},
		Phase2: Phase2{LeaseTTL: 2 * time.Minute, MaxAttempts: 5, LongPoll: 25 * time.Second,
			JobDeadline: 10 * time.Minute, ReapEvery: 5 * time.Second, RetryDelay: 30 * time.Second,
			UnservedDeadline: 30 * time.Minute},
		AMT: AMT{ProvisioningUser: "admin",
			Settings: AMTSettings{IDERedirection: true, SerialOverLAN: true, KVM: true, PingResponse: true,
				WebUI: false, PowerScheme: "ON in S0"},
			Kerberos: Kerberos{Enabled: true, MaxClockTolerance: 5}},
		CA:        CA{Backend: "builtin", ServerProfile: "server-auth", ClientProfile: "client-auth", Validity: 365 * 24 * time.Hour},
		Directory: Directory{AccountSuffix: "-amt", Timeout: 10 * time.Second, PoolSize: 4},
		Sweep:     Sweep{Interval: 15 * time.Minute},
	}
}

// LoadServer reads path (may be empty for defaults only), applies
// AMTOPS_* environment overrides and validates.
func LoadServer(path string) (Server, error) {
	c := DefaultServer()
	// AMTOPS_AGENT_* are the agent's; LoadAgent checks them.
	err := load(path, "AMTOPS", []string{"AMTOPS_AGENT_"}, &c, func() error { return c.Validate() })
	return c, err
}

// Validate checks every field and returns every error, joined.
func (c Server) Validate() error {
	var k checker
	for _, section := range []func(*checker){c.validateBasics, c.validatePhases, c.validateAMT, c.validateRemoteConfig, c.validateCA,
		c.validateDirectory, c.validateRest} {
		section(&k)
	}
	return k.err()
}

// validateBasics: logging, Redis, data and listeners.
func (c Server) validateBasics(k *checker) {
	k.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	k.oneOf("log.format", c.Log.Format, "json", "console")
	c.validateRedis(k)
	if c.DataDir == "" {
		k.fail("data_dir", c.DataDir, "required")
	}
	k.hostPort("grpc.listen", c.GRPC.Listen, true)
	k.hostPort("http.listen", c.HTTP.Listen, true)
	k.hostPort("console.listen", c.Console.Listen, !c.Console.Disabled)
}

// validateRedis: addresses, cluster mode and TLS.
func (c Server) validateRedis(k *checker) {
	r := c.Redis
	k.hostPort("redis.addr", r.Addr, false)
	for i, a := range r.Addrs {
		k.hostPort("redis.addrs["+itoa(i)+"]", a, true)
	}
	switch {
	case r.Addr != "" && len(r.Addrs) > 0:
		k.fail("redis.addrs", strings.Join(r.Addrs, ","), "give redis.addr (one Redis) or redis.addrs (cluster seeds), not both")
	case len(r.Addrs) > 1 && !r.Cluster:
		k.fail("redis.cluster", false, "must be true with several redis.addrs (they are Redis Cluster seeds)")
	case r.Cluster && len(r.Addresses()) == 0:
		k.fail("redis.cluster", true, "needs redis.addr or redis.addrs: the embedded Redis is not a cluster")
	}
	k.between("redis.db", r.DB, 0, 15)
	if r.Cluster && r.DB != 0 {
		k.fail("redis.db", r.DB, "must be 0 with redis.cluster: Redis Cluster has only database 0")
	}
	if r.KeyPrefix == "" || strings.ContainsAny(r.KeyPrefix, "{} ") {
		k.fail("redis.key_prefix", r.KeyPrefix, "must be non-empty without braces or spaces")
	}
	k.fileExists("redis.password_file", r.PasswordFile)
	t := r.TLS
	for f, v := range map[string]string{"ca_file": t.CAFile, "server_name": t.ServerName, "cert_file": t.CertFile, "key_file": t.KeyFile} {
		if v != "" && !t.Enabled {
			k.fail("redis.tls."+f, v, "set redis.tls.enabled: true to use it")
		}
	}
	k.fileExists("redis.tls.ca_file", t.CAFile)
	k.fileExists("redis.tls.cert_file", t.CertFile)
	k.fileExists("redis.tls.key_file", t.KeyFile)
	if (t.CertFile == "") != (t.KeyFile == "") {
		k.fail("redis.tls.key_file", t.KeyFile, "give both redis.tls.cert_file and redis.tls.key_file, or neither")
	}
}

// validatePhases: the phase-1 workers and the phase-2 lease queue.
func (c Server) validatePhases(k *checker) {
	k.between("phase1.concurrency", c.Phase1.Concurrency, 1, 4096)
	k.between("phase1.max_retry", c.Phase1.MaxRetry, 0, 100)
	k.positive("phase1.timeout", c.Phase1.Timeout)
	k.positive("phase2.lease_ttl", c.Phase2.LeaseTTL)
	k.between("phase2.max_attempts", c.Phase2.MaxAttempts, 1, 100)
	k.positive("phase2.long_poll", c.Phase2.LongPoll)
	k.positive("phase2.job_deadline", c.Phase2.JobDeadline)
	k.positive("phase2.reap_every", c.Phase2.ReapEvery)
	k.positive("phase2.retry_delay", c.Phase2.RetryDelay)
	if c.Phase2.UnservedDeadline < 0 {
		k.fail("phase2.unserved_deadline", c.Phase2.UnservedDeadline, "must not be negative (0 waits forever)")
	} else if d := c.Phase2.UnservedDeadline; d > 0 && d < c.Phase2.LeaseTTL {
		k.fail("phase2.unserved_deadline", d, "must be at least phase2.lease_ttl: an agent counts as gone only after that long")
	}
	if c.Phase2.LeaseTTL > 0 && c.Phase2.LeaseTTL < 10*time.Second {
		k.fail("phase2.lease_ttl", c.Phase2.LeaseTTL, "must be at least 10s: agents heartbeat at a third of it")
	}
}

// validateAMT: the provisioning account and Kerberos.
func (c Server) validateAMT(k *checker) {
	if u := c.AMT.ProvisioningUser; u == "" || len(u) > 16 || strings.HasPrefix(u, "$$") {
		k.fail("amt.provisioning_user", u, "must be 1 to 16 characters, not starting with $$")
	}
	k.fileExists("amt.provisioning_password_file", c.AMT.ProvisioningPasswordFile)
	k.between("amt.kerberos.max_clock_tolerance", c.AMT.Kerberos.MaxClockTolerance, 1, 5)
	for i, sid := range c.AMT.Kerberos.AdminSIDs {
		if !strings.HasPrefix(sid, "S-1-") {
			k.fail("amt.kerberos.admin_sids["+itoa(i)+"]", sid, "must be a Windows SID (S-1-…)")
		}
	}
}

// validateRemoteConfig: the provisioning certificate and trusted domains.
func (c Server) validateRemoteConfig(k *checker) {
	r := c.AMT.RemoteConfig
	const f = "amt.remote_config."
	switch {
	case r.ChainFile != "" && r.PKCS12File != "":
		k.fail(f+"pkcs12_file", r.PKCS12File, "give either chain_file and key_file or pkcs12_file, not both")
	case r.ChainFile != "" && r.KeyFile == "":
		k.fail(f+"key_file", "", "required with chain_file")
	case r.KeyFile != "" && r.ChainFile == "":
		k.fail(f+"chain_file", "", "required with key_file")
	}
	for field, v := range map[string]string{"chain_file": r.ChainFile, "key_file": r.KeyFile, "pkcs12_file": r.PKCS12File,
		"pkcs12_password_file": r.PKCS12Password, "mebx_password_file": r.MEBxPasswordFile} {
		k.fileExists(f+field, v)
	}
	if r.TrustedDomain != "" && !validDomain(r.TrustedDomain) {
		k.fail(f+"trusted_domain", r.TrustedDomain, "must be a DNS suffix such as corp.example.test")
	}
	for i, n := range r.Subnets {
		field := f + "subnets[" + itoa(i) + "]"
		if p, err := netip.ParsePrefix(n.CIDR); err != nil || p != p.Masked() {
			k.fail(field+".cidr", n.CIDR, "must be a network prefix such as 10.1.2.0/24")
		}
		if !validDomain(n.TrustedDomain) {
			k.fail(field+".trusted_domain", n.TrustedDomain, "must be a DNS suffix such as corp.example.test")
		}
	}
}

// validDomain is a loose check of a DNS suffix: labels of letters, digits
// and hyphens, at most 191 characters (AMT's DomainName limit).
func validDomain(d string) bool {
	if d == "" || len(d) > 191 {
		return false
	}
	for _, l := range strings.Split(strings.TrimSuffix(d, "."), ".") {
		if l == "" || len(l) > 63 || strings.HasPrefix(l, "-") || strings.HasSuffix(l, "-") {
			return false
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// validateCA: the certificate authority and the CRL it names.
func (c Server) validateCA(k *checker) {
	k.oneOf("ca.backend", c.CA.Backend, "builtin", "step-ca")
	k.positive("ca.validity", c.CA.Validity)
	if c.CA.CRLURL != "" {
		if u, err := url.Parse(c.CA.CRLURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
			k.fail("ca.crl_url", c.CA.CRLURL, "must be an http:// or https:// URL devices can reach")
		}
	} else if c.CA.Backend == "builtin" {
		if h, _, err := net.SplitHostPort(c.HTTP.Listen); err == nil {
			if ip, perr := netip.ParseAddr(h); h == "" || perr == nil && ip.IsUnspecified() {
				k.fail("ca.crl_url", "", "required when http.listen ("+c.HTTP.Listen+") is not an address devices can reach: "+
					"every certificate names the CRL's URL")
			}
		}
	}
	if c.CA.Backend == "step-ca" {
		if u, err := url.Parse(c.CA.StepCA.URL); err != nil || u.Scheme != "https" || u.Host == "" {
			k.fail("ca.step_ca.url", c.CA.StepCA.URL, "must be an https:// URL")
		}
		if c.CA.StepCA.Provisioner == "" {
			k.fail("ca.step_ca.provisioner", "", "required with ca.backend step-ca")
		}
		for f, v := range map[string]string{"ca.step_ca.root_file": c.CA.StepCA.RootFile,
			"ca.step_ca.ca_config_file": c.CA.StepCA.CAConfigFile, "ca.step_ca.password_file": c.CA.StepCA.PasswordFile} {
			if v == "" {
				k.fail(f, "", "required with ca.backend step-ca")
			}
			k.fileExists(f, v)
		}
	}
}

// validateDirectory: Active Directory, when configured.
func (c Server) validateDirectory(k *checker) {
	if d := c.Directory; d.URL != "" {
		u, err := url.Parse(d.URL)
		switch {
		case err != nil || u.Host == "":
			k.fail("directory.url", d.URL, "must be ldaps://host[:port] or ldap://host[:port] with start_tls")
		case u.Scheme == "ldap" && !d.StartTLS:
			k.fail("directory.url", d.URL, "plain LDAP is refused: use ldaps:// or set directory.start_tls: true")
		case u.Scheme != "ldap" && u.Scheme != "ldaps":
			k.fail("directory.url", d.URL, "scheme must be ldaps or ldap")
		}
		for f, v := range map[string]string{"directory.bind_dn": d.BindDN, "directory.base_dn": d.BaseDN,
			"directory.account_ou": d.AccountOU, "directory.realm": d.Realm} {
			if v == "" {
				k.fail(f, "", "required when directory.url is set")
			}
		}
		k.fileExists("directory.ca_file", d.CAFile)
		k.fileExists("directory.password_file", d.PasswordFile)
		k.positive("directory.timeout", d.Timeout)
		k.between("directory.pool_size", d.PoolSize, 1, 64)
	}
}

// validateRest: networks, sweeps and admin tokens.
func (c Server) validateRest(k *checker) {
	for i, w := range c.Networks.Wireless {
		if w.SSID == "" || len(w.SSID) > 32 {
			k.fail("networks.wireless["+itoa(i)+"].ssid", w.SSID, "must be 1 to 32 characters")
		}
	}
	k.positive("sweep.interval", c.Sweep.Interval)
	for i, t := range c.Admin.Tokens {
		k.oneOf("admin.tokens["+itoa(i)+"].role", t.Role, "read", "operate")
		if t.TokenFile == "" {
			k.fail("admin.tokens["+itoa(i)+"].token_file", "", "required")
		}
	}
}
