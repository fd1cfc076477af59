// Package amtsim simulates a fleet of Intel AMT controllers as real WS-Man
// servers, so the agent and end-to-end tests talk HTTP(S) + Digest + SOAP to
// something that behaves like firmware (shapes taken from the fixtures in
// shared/fixtures/wsman-responses, rules from shared/AMT-WSMAN.md).
//
// # Contract
//
// One process serves Config.Devices devices on consecutive loopback
// addresses from Config.BaseIP (all of 127.0.0.0/8 routes to lo on Linux),
// each on Config.HTTPPort (default 16992) and, once TLS is committed, on
// Config.TLSPort (default 16993). Only POST /wsman is served.
//
//	cfg := amtsim.Config{Devices: 100, BaseIP: netip.MustParseAddr("127.20.0.1"),
//		HTTPPort: 26992, TLSPort: 26993, Password: "P@ssw0rd!", Log: log}
//	sim, err := amtsim.New(cfg)
//	go sim.Run(ctx)            // serves until ctx is done, then closes everything
//	<-sim.Ready()              // listeners are up
//	st, _ := sim.Device(sim.Addrs()[0]) // deep-copied snapshot for assertions
//
// # Profiles
//
// Config.Kind (--profile) sets every device's profile, Override.Kind one
// device's (Kind 0 in an Override inherits Config.Kind):
//
//   - factory (the zero Kind): state 0 and dark: 16992 closed (Firmware.FactoryHTTP keeps it
//     for Identify only), 16993 open only while a Hello cycle runs (bare
//     metal with Firmware.HelloAddr, or TriggerHello / POST
//     /devices/{addr}/hello). That remote-configuration session presents the
//     firmware's self-signed certificate and demands a provisioning client
//     chain checked as firmware does (root hash in the list, AMT EKU or OU,
//     CN under Firmware.TrustedDomain); then digest as "admin" with the MEBx
//     password. CommitChanges needs the admin password and the clock set
//     (2057) and ends in state 2, ACM. Unprovision makes it dark again.
//   - mebx: activated by hand in ACM, admin/Config.Password.
//   - ccm: host-based setup, client control: consent forced, no SetMEBxPassword.
//   - external: state 2, admin password unknown; not-amt: nothing listens.
//
// Every profile speaks TLS as
// their generation (Version): 11/12 TLS 1.2 with RSA key exchange only,
// 13–18 TLS 1.2, 19+ also TLS 1.3 with Connection: close on every TLS
// answer; CSME 16.1+ closes 16992, serves its self-signed certificate from
// activation and refuses a Put allowing plain connections.
//
// # Behaviour
//
//   - Identify (wsmid) is answered without authentication. Everything else
//     needs HTTP Digest (MD5, qop=auth) with realm AMT_GeneralSettings.DigestRealm;
//     401 carries an HTML body; a once-valid nonce older than NonceTTL gets
//     stale="true". The device keeps only HA1 = MD5(user:realm:password), so
//     SetAdminAclEntryEx's DigestPassword (base64 of that MD5) becomes the new
//     secret directly.
//   - Malformed requests, unknown resources, actions or selectors get HTTP 400
//     with a SOAP fault (Action …/wsman/fault, Code/Subcode/Reason).
//   - Changes are pending until AMT_SetupAndConfigurationService.CommitChanges:
//     it sets provisioning state 2, applies TLS (the bound certificate, its key
//     and its installed chain) and takes the device off the network for
//     CommitDelay, or Firmware.TLSRestart when what 16993 serves changed
//     (connections refused). With AcceptNonSecureConnections=false the HTTP
//     port stays closed afterwards. An injected reboot drops the changes
//     since the last commit, except password and user changes, which took
//     effect at once.
//   - Digest nonces go stale when the user list changes and on every
//     Firmware.NonceReset period; Firmware.LockoutThreshold wrong passwords
//     lock an account for LockoutDuration.
//   - PartialUnprovision keeps host name, domain and the admin account,
//     clears the rest and returns to state 1 with TLS off; Unprovision returns
//     to the factory state 0, dark until its next Hello, its MEBx password
//     the next login, the root hashes added to its list gone.
//   - S15: on an 8021x-wired link, turning 802.1X off drops the link; on a
//     wireless link, any Wi-Fi profile change drops it (DeviceState.LinkDown).
//     AMT_EthernetPortSettings shows the link: instance 0 (wired) or 1
//     (wireless, PhysicalConnectionType 3) has LinkIsUp, per Override.Link.
//   - Mutual TLS (MutualAuthentication committed): 16993 demands a client
//     chain to one of the trusted roots as of the commit, with clientAuth
//     (Firmware.MutualTLSAnyEKU, --mtls-any-eku, drops that) and, when
//     AMT_TLSSettingData.TrustedCN is set, a CN ending in one of its
//     suffixes (read per handshake: no commit needed). While mutual
//     authentication is set, AddTrustedRootCertificate answers 16
//     (Firmware.RootsWhileMutual, --roots-while-mutual, allows it).
//   - SKU (Config.SKU, Override.SKU, --sku amt|standard): Standard
//     Manageability reports CIM_SoftwareIdentity "Sku" 16400 (bit 0x10)
//     instead of 16392 (AMT Pro 0x08) and has no CIM_KVMRedirectionSAP
//     instance (DestinationUnreachable).
//   - Faults (Config.Faults, see ParseFaultSpec) are drawn per authenticated
//     request from (Seed, device, request number): deterministic at a seed.
//
// Firmware rules and ReturnValues are documented where they are enforced
// (rules.go and the class files). Not simulated: Kerberos (Negotiate)
// authentication of requests, account lockout, digest nonce-count replay
// checks, enumeration context expiry.
package amtsim
