package nicprofiles

import (
	"fmt"
	"slices"
	"strings"
)

// Facts is what the kernel reports about one interface. Detect reads
// them; Choose turns them into a Detection.
type Facts struct {
	Interface string `json:"interface"`
	Ifindex   int    `json:"ifindex"`
	MTU       int    `json:"mtu"`
	// Driver is the kernel driver (ETHTOOL_GDRVINFO), "" when the
	// interface reports none (loopback, some virtual devices); then
	// DriverError says why.
	Driver      string `json:"driver"`
	DriverError string `json:"driverError,omitempty"`
	// Features holds the state of each of the package's Features, nil
	// when the ethtool genetlink family could not be read.
	Features map[string]Feature `json:"features,omitempty"`
	// XDP is nil when the kernel has no netdev genetlink family (before
	// Linux 6.3).
	XDP *XDPFacts `json:"xdp,omitempty"`
	// Missing says, for each source that could not be read, what is
	// missing and why; the profile stands in for it.
	Missing []string `json:"missing,omitempty"`
}

// Feature is the state of a netdev feature, as `ethtool -k` shows it.
type Feature struct {
	On bool `json:"on"`
	// Fixed: the feature cannot be changed ("[fixed]"): the driver does
	// not offer it (when off) or cannot turn it off (when on).
	Fixed bool `json:"fixed"`
}

func (f Feature) String() string {
	s := map[bool]string{true: "on", false: "off"}[f.On]
	if f.Fixed {
		s += " [fixed]"
	}
	return s
}

// XDPFacts is the netdev genetlink family's view of a device's XDP
// support (NETDEV_CMD_DEV_GET).
type XDPFacts struct {
	// Features is NETDEV_A_DEV_XDP_FEATURES.
	Features XDPFeatures `json:"features"`
	// ZCMaxSegs is NETDEV_A_DEV_XDP_ZC_MAX_SEGS, 0 where the kernel does
	// not report it (before Linux 6.6).
	ZCMaxSegs int `json:"zcMaxSegs"`
}

// Detection is the profile chosen for an interface, why, and what the
// data path may use there.
type Detection struct {
	Interface string   `json:"interface"`
	Profile   *Profile `json:"-"`
	// Reason says how the profile was chosen and every place where the
	// measured facts overrode it: "driver veth matched
	// nic-profiles/veth.yaml", "driver foo has no profile: generic
	// fallback (nic-profiles/generic.yaml)".
	Reason string `json:"reason"`
	Facts  Facts  `json:"facts"`
	// Capabilities is the profile corrected by the facts: what the loader
	// and the agent use.
	Capabilities Capabilities `json:"capabilities"`
}

// Capabilities is what fibmesh can use on one interface.
type Capabilities struct {
	// XDPMode is "native" or "generic": the mode the FIB is expected to
	// attach in (the loader still falls back to generic if native fails).
	XDPMode       string      `json:"xdpMode"`
	XDPFeatures   XDPFeatures `json:"xdpFeatures"`
	AFXDPZeroCopy bool        `json:"afXDPZeroCopy"`
	ZCMaxSegs     int         `json:"zcMaxSegs"`
	// MaxMTU is the profile's single-buffer XDP MTU limit (0: none).
	MaxMTU int `json:"maxMTU"`
	// MultiBuffer: the interface's MTU needs frames larger than one
	// buffer and the driver takes multi-buffer XDP: the loader must load
	// the program frags-aware (BPF_F_XDP_HAS_FRAGS) for native mode.
	MultiBuffer bool         `json:"multiBuffer"`
	KTLSTX      bool         `json:"ktlsTX"`
	KTLSRX      bool         `json:"ktlsRX"`
	TLSVersions []TLSVersion `json:"tlsVersions"`
	Ciphers     []Cipher     `json:"ciphers"`
	// Quirks are the profile's quirks, each marked active where its
	// feature is on, plus any the facts reveal.
	Quirks []QuirkState `json:"quirks"`
}

// QuirkState is a quirk and whether it bites on this interface now.
type QuirkState struct {
	Quirk
	Active bool `json:"active"`
}

// XDP frame overhead beyond the MTU: the Ethernet header and one VLAN
// tag, as the kernel counts it for a redirect target (xdp_ok_fwd_dev in
// include/linux/filter.h: mtu + hard_header_len + VLAN_HLEN).
const frameOverhead = 14 + 4

// FrameLen returns the largest frame an interface with this MTU receives
// or may be sent: MTU plus Ethernet header and one VLAN tag.
func FrameLen(mtu int) int { return mtu + frameOverhead }

// Choose picks the profile for the facts and reconciles the two: the
// facts win, and Reason says where they overrode the profile. It fails
// only if the embedded profiles do not load.
func Choose(f Facts) (*Detection, error) {
	gen, err := Generic()
	if err != nil {
		return nil, err
	}
	d := &Detection{Interface: f.Interface, Facts: f}
	var reason []string
	p, ok := Lookup(f.Driver)
	switch {
	case ok:
		reason = append(reason, fmt.Sprintf("driver %s matched %s", f.Driver, p.File))
	case f.Driver == "":
		p = gen
		why := ""
		if f.DriverError != "" {
			why = " (" + f.DriverError + ")"
		}
		reason = append(reason, fmt.Sprintf("driver unknown%s: generic fallback (%s)", why, p.File))
	default:
		p = gen
		reason = append(reason, fmt.Sprintf("driver %s has no profile: generic fallback (%s)", f.Driver, p.File))
	}
	d.Profile = p

	c := Capabilities{
		XDPFeatures:   p.XDP.Features,
		AFXDPZeroCopy: p.AFXDP.ZeroCopy,
		ZCMaxSegs:     p.AFXDP.ZCMaxSegs,
		MaxMTU:        p.XDP.MaxMTU,
		KTLSTX:        p.KTLS.TXOffload,
		KTLSRX:        p.KTLS.RXOffload,
		TLSVersions:   slices.Clone(p.KTLS.Versions),
		Ciphers:       slices.Clone(p.KTLS.Ciphers),
	}
	native := p.XDP.Native

	if x := f.XDP; x != nil {
		if x.Features != p.XDP.Features {
			reason = append(reason, fmt.Sprintf("netdev xdp-features are [%s] where the profile says [%s]: using the measured set", x.Features, p.XDP.Features))
		}
		c.XDPFeatures = x.Features
		native = x.Features.Has(XDPBasic)
		c.AFXDPZeroCopy = x.Features.Has(XDPXSKZeroCopy)
		c.ZCMaxSegs = 0
		if c.AFXDPZeroCopy {
			c.ZCMaxSegs = max(x.ZCMaxSegs, 1)
		}
	}

	if f.Features != nil {
		c.KTLSTX = reconcileTLS(&reason, "TX", FeatureTLSTX, p.KTLS.TXOffload, f)
		c.KTLSRX = reconcileTLS(&reason, "RX", FeatureTLSRX, p.KTLS.RXOffload, f)
		if (c.KTLSTX || c.KTLSRX) && len(c.TLSVersions) == 0 {
			// The profile has no offload but the NIC offers it (a driver
			// without a profile: nfp, cxgb4, funeth). Mainline device
			// offload is TLS 1.2 only (net/tls/tls_device.c), and
			// AES-128-GCM is the one cipher every such driver takes.
			c.TLSVersions = []TLSVersion{TLS12}
			c.Ciphers = []Cipher{CipherAES128GCM}
		}
	}
	if !c.KTLSTX && !c.KTLSRX {
		c.TLSVersions, c.Ciphers = []TLSVersion{}, []Cipher{}
	}

	if native && c.MaxMTU > 0 && f.MTU > c.MaxMTU {
		if c.XDPFeatures.Has(XDPRxSG) {
			c.MultiBuffer = true
			reason = append(reason, fmt.Sprintf("MTU %d is above the driver's single-buffer XDP limit of %d: multi-buffer (frags-aware) XDP", f.MTU, c.MaxMTU))
		} else {
			native = false
			reason = append(reason, fmt.Sprintf("MTU %d is above the driver's XDP limit of %d and it has no multi-buffer XDP: native attach will fail, expect generic mode (or lower the MTU)", f.MTU, c.MaxMTU))
		}
	}
	c.XDPMode = "generic"
	if native {
		c.XDPMode = "native"
	}

	for _, q := range p.Quirks {
		qs := QuirkState{Quirk: q}
		featureOn := q.Feature == "" || f.Features[q.Feature].On
		inMode := q.Mode == "" || q.Mode == c.XDPMode
		qs.Active = (q.Feature != "" || q.Mode != "") && featureOn && inMode
		c.Quirks = append(c.Quirks, qs)
	}
	if f.Features[FeatureLRO].On && !slices.ContainsFunc(p.Quirks, func(q Quirk) bool { return q.Feature == FeatureLRO }) {
		c.Quirks = append(c.Quirks, QuirkState{Quirk: Quirk{
			ID:      "lro-on",
			Summary: "LRO is on: native XDP sees aggregated frames larger than the MTU, and most drivers refuse XDP while it is on",
			Fix:     fmt.Sprintf("ethtool -K %s lro off", f.Interface),
			Feature: FeatureLRO,
		}, Active: true})
	}
	if c.Quirks == nil {
		c.Quirks = []QuirkState{}
	}
	for _, m := range f.Missing {
		reason = append(reason, m+": the profile stands in")
	}
	d.Reason = strings.Join(reason, "; ")
	d.Capabilities = c
	return d, nil
}

// reconcileTLS returns whether kTLS offload in one direction is usable,
// adding to reason where the feature and the profile disagree.
func reconcileTLS(reason *[]string, dir, feature string, profile bool, f Facts) bool {
	st, known := f.Features[feature]
	switch {
	case profile && !st.On && st.Fixed:
		*reason = append(*reason, fmt.Sprintf("profile has kTLS %s offload but %s is off [fixed] (no crypto-enabled NIC, or the firmware lacks it): no offload", dir, feature))
		return false
	case profile && !st.On:
		*reason = append(*reason, fmt.Sprintf("profile has kTLS %s offload but %s is off: no offload until `ethtool -K %s %s on`", dir, feature, f.Interface, feature))
		return false
	case !profile && st.On && known:
		*reason = append(*reason, fmt.Sprintf("%s is on although the profile has no kTLS %s offload: using it", feature, dir))
		return true
	}
	return profile && st.On
}
