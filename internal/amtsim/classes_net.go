package amtsim

import "fmt"

// --- AMT_EthernetPortSettings ---

// ethernetPorts serves the two network interfaces firmware reports, with
// the fixture's properties (DHCP, so no IPAddress): instance 0 the wired
// port, instance 1 (PhysicalConnectionType 3) the wireless one. The port
// the device's Link override names is the one whose link is up, so a
// client tells how the controller is attached (S15) as on real firmware.
// Read-only here: the product never changes IP settings.
func (s *Sim) ethernetPorts() *class {
	c := &class{name: "AMT_EthernetPortSettings", uri: amtPrefix + "AMT_EthernetPortSettings"}
	c.list = func(c *call, _ *nvram) []instance {
		wireless := c.d.link() == LinkWireless
		m := c.d.ident("mac")
		wlanMAC := "00-00-00-00-00-00"
		if wireless {
			wlanMAC = fmt.Sprintf("00-%02x-%02x-%02x-%02x-%02x", m[5], m[6], m[7], m[8], m[9])
		}
		wired := instance{pb("DHCPEnabled", true), ps("DefaultGateway", "127.0.0.1"),
			ps("ElementName", "Intel(r) AMT Ethernet Port Settings"), ps("InstanceID", "Intel(r) AMT Ethernet Port Settings 0"),
			pb("IpSyncEnabled", true), pb("LinkIsUp", !wireless), pints("LinkPolicy", []int{1, 14}),
			ps("MACAddress", fmt.Sprintf("00-%02x-%02x-%02x-%02x-%02x", m[0], m[1], m[2], m[3], m[4])),
			pi("PhysicalConnectionType", 0), ps("PrimaryDNS", "127.0.0.1"), pb("SharedDynamicIP", true),
			pb("SharedMAC", true), pb("SharedStaticIp", false), ps("SubnetMask", "255.0.0.0")}
		wlan := instance{pi("ConsoleTcpMaxRetransmissions", 5), pb("DHCPEnabled", true),
			ps("ElementName", "Intel(r) AMT Ethernet Port Settings"), ps("InstanceID", "Intel(r) AMT Ethernet Port Settings 1"),
			pi("LinkControl", 2), pb("LinkIsUp", wireless), pi("LinkPreference", 2), ps("MACAddress", wlanMAC),
			pi("PhysicalConnectionType", 3), pb("SharedMAC", true), pi("WLANLinkProtectionLevel", 1)}
		return []instance{wired, wlan}
	}
	return c
}
