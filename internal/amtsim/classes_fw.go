package amtsim

import (
	"encoding/base64"
	"strconv"
)

const optInAll = 4294967295 // IPS_OptInService.OptInRequired: consent for every redirection

// --- CIM_WiFiPort ---

// wifiPortState: off (3) from the factory; RequestStateChange(32769) turns
// the port on with local profile synchronisation, 3 turns it off.
func (s *Sim) wifiPortState() *class {
	c := &class{name: "CIM_WiFiPort", uri: cimPrefix + "CIM_WiFiPort"}
	c.list = func(c *call, st *nvram) []instance {
		state := 3
		if st.wifiPortOn {
			state = 32769
		}
		m := c.d.ident("mac")
		mac := "000000000000"
		if c.d.link() == LinkWireless || st.wifiPortOn {
			mac = strconv.FormatUint(uint64(m[10])<<40|uint64(m[11])<<32|uint64(m[12])<<24|uint64(m[13])<<16|uint64(m[14])<<8|uint64(m[15]), 16)
			for len(mac) < 12 {
				mac = "0" + mac
			}
		}
		return []instance{{ps("CreationClassName", "CIM_WiFiPort"), ps("DeviceID", "WiFi Port 0"), ps("ElementName", "WiFi Port 0"),
			pi("EnabledState", state), pi("HealthState", 5), pi("LinkTechnology", 11), ps("PermanentAddress", mac),
			pi("PortType", 0), pi("RequestedState", state), ps("SystemCreationClassName", "CIM_ComputerSystem"),
			ps("SystemName", "Intel(r) AMT")}}
	}
	c.methods = map[string]method{"RequestStateChange": {write: true, fn: func(c *call) ([]prop, int, *fault) {
		v, ok := c.paramInt("RequestedState")
		if !ok || (v != 32769 && v != 3) {
			return nil, rvInvalidState, nil
		}
		c.d.st.wifiPortOn = v == 32769
		return nil, rvSuccess, nil
	}}}
	return c
}

// --- IPS_HostBasedSetupService ---

// hostBasedSetup reports the control mode. Setup and AdminSetup are
// host-based activation through the local management service (LMS) on the
// device's own OS, never over the network, so they are not served here.
func (s *Sim) hostBasedSetup() *class {
	c := &class{name: "IPS_HostBasedSetupService", uri: ipsPrefix + "IPS_HostBasedSetupService"}
	c.list = func(c *call, st *nvram) []instance {
		return []instance{{pints("AllowedControlModes", []int{2, 1}), pi("CertChainStatus", 0),
			ps("ConfigurationNonce", base64.StdEncoding.EncodeToString(c.d.ident("nonce")[:20])),
			ps("CreationClassName", "IPS_HostBasedSetupService"), pi("CurrentControlMode", st.controlMode),
			ps("ElementName", "Intel(r) AMT Host Based Setup Service"), ps("Name", "Intel(r) AMT Host Based Setup Service"),
			ps("SystemCreationClassName", "CIM_ComputerSystem"), ps("SystemName", "Intel(r) AMT")}}
	}
	return c
}

// --- IPS_OptInService ---

// optIn: user consent. In client control mode consent is forced on for
// every redirection (OptInRequired 4294967295, CanModifyOptInPolicy 0) and
// a Put that lowers it is refused; in admin control it may be 0, 1 (KVM)
// or 4294967295.
func (s *Sim) optIn() *class {
	c := &class{name: "IPS_OptInService", uri: ipsPrefix + "IPS_OptInService"}
	c.list = func(_ *call, st *nvram) []instance {
		canModify := 1
		if st.controlMode == 1 {
			canModify = 0
		}
		return []instance{{pi("CanModifyOptInPolicy", canModify), ps("CreationClassName", "IPS_OptInService"),
			ps("ElementName", "Intel(r) AMT OptIn Service"), ps("Name", "Intel(r) AMT OptIn Service"),
			pi("OptInCodeTimeout", 120), pi("OptInDisplayTimeout", 300), pi("OptInRequired", st.optInRequired),
			pi("OptInState", 0), ps("SystemCreationClassName", "CIM_ComputerSystem"), ps("SystemName", "Intel(r) AMT")}}
	}
	c.put = func(c *call, st *nvram, _ instance) *fault {
		v, err := strconv.Atoi(c.in.child(c.cls.uri, "OptInRequired").trimmed())
		if err != nil || (v != 0 && v != 1 && v != optInAll) {
			return errRepresentation("OptInRequired must be 0, 1 or 4294967295")
		}
		if st.controlMode == 1 && v != optInAll {
			return faultf(nsWSMan, "AccessDenied", "ReturnValue 16: user consent cannot be lowered in client control mode")
		}
		st.optInRequired = v
		return nil
	}
	return c
}
