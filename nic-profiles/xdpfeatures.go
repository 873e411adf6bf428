package nicprofiles

import (
	"encoding/json"
	"fmt"
	"math/bits"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// XDPFeatures is a set of netdev XDP feature bits: enum netdev_xdp_act in
// include/uapi/linux/netdev.h, the netdev genetlink attribute
// xdp-features. In YAML and JSON it is a list of the kernel's names
// (Documentation/netlink/specs/netdev.yaml).
type XDPFeatures uint64

// The XDP feature bits.
const (
	XDPBasic       XDPFeatures = 1 << 0 // XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX
	XDPRedirect    XDPFeatures = 1 << 1 // XDP_REDIRECT out of this device
	XDPNdoXmit     XDPFeatures = 1 << 2 // a redirect target (ndo_xdp_xmit)
	XDPXSKZeroCopy XDPFeatures = 1 << 3 // AF_XDP zero-copy
	XDPHWOffload   XDPFeatures = 1 << 4 // the NIC runs the program
	XDPRxSG        XDPFeatures = 1 << 5 // multi-buffer (frags) frames on receive
	XDPNdoXmitSG   XDPFeatures = 1 << 6 // multi-buffer frames as a redirect target
)

// xdpFeatureNames is in bit order; the names are the kernel's.
var xdpFeatureNames = []string{"basic", "redirect", "ndo-xmit", "xsk-zerocopy", "hw-offload", "rx-sg", "ndo-xmit-sg"}

// XDPFeatureNames returns the names of every known bit, in bit order.
func XDPFeatureNames() []string { return slices.Clone(xdpFeatureNames) }

// Has reports whether every bit of want is set.
func (f XDPFeatures) Has(want XDPFeatures) bool { return f&want == want }

// names lists the set bits by name, in bit order; unknown bits (a newer
// kernel) appear as "bit-N".
func (f XDPFeatures) names() []string {
	out := []string{}
	for v := uint64(f); v != 0; v &= v - 1 {
		i := bits.TrailingZeros64(v)
		if i < len(xdpFeatureNames) {
			out = append(out, xdpFeatureNames[i])
		} else {
			out = append(out, fmt.Sprintf("bit-%d", i))
		}
	}
	return out
}

// Names lists the set bits by name, in bit order.
func (f XDPFeatures) Names() []string { return f.names() }

// String returns the set bits' names joined by ",", or "none".
func (f XDPFeatures) String() string {
	if f == 0 {
		return "none"
	}
	return strings.Join(f.names(), ",")
}

// ParseXDPFeature returns the bit of one feature name.
func ParseXDPFeature(name string) (XDPFeatures, error) {
	i := slices.Index(xdpFeatureNames, name)
	if i < 0 {
		return 0, fmt.Errorf("unknown XDP feature %q: want one of %s", name, strings.Join(xdpFeatureNames, ", "))
	}
	return 1 << i, nil
}

// UnmarshalYAML decodes a list of feature names; an unknown or repeated
// name, or anything but a list of strings, is an error with its line.
func (f *XDPFeatures) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.SequenceNode {
		return typeErr(n, "want a list of XDP feature names (%s)", strings.Join(xdpFeatureNames, ", "))
	}
	var set XDPFeatures
	for _, item := range n.Content {
		if item.Kind != yaml.ScalarNode || item.Tag != "!!str" {
			return typeErr(item, "XDP feature %q: want a name (%s)", item.Value, strings.Join(xdpFeatureNames, ", "))
		}
		b, err := ParseXDPFeature(item.Value)
		if err != nil {
			return typeErr(item, "%v", err)
		}
		if set&b != 0 {
			return typeErr(item, "XDP feature %q is listed twice", item.Value)
		}
		set |= b
	}
	*f = set
	return nil
}

// MarshalJSON encodes the set as a list of names.
func (f XDPFeatures) MarshalJSON() ([]byte, error) { return json.Marshal(f.names()) }

// UnmarshalJSON decodes a list of names (the inverse of MarshalJSON).
func (f *XDPFeatures) UnmarshalJSON(b []byte) error {
	var names []string
	if err := json.Unmarshal(b, &names); err != nil {
		return err
	}
	var set XDPFeatures
	for _, n := range names {
		v, err := ParseXDPFeature(n)
		if err != nil {
			return err
		}
		set |= v
	}
	*f = set
	return nil
}

// UnmarshalYAML accepts "1.2" or "1.3", quoted or not (unquoted, YAML
// reads them as numbers).
func (v *TLSVersion) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || !slices.Contains(tlsVersions, TLSVersion(n.Value)) {
		return typeErr(n, "TLS version %q: want \"1.2\" or \"1.3\"", n.Value)
	}
	*v = TLSVersion(n.Value)
	return nil
}

// UnmarshalYAML accepts one of the kTLS cipher names.
func (c *Cipher) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" || !slices.Contains(ciphers, Cipher(n.Value)) {
		names := make([]string, len(ciphers))
		for i, c := range ciphers {
			names[i] = string(c)
		}
		return typeErr(n, "kTLS cipher %q: want one of %s", n.Value, strings.Join(names, ", "))
	}
	*c = Cipher(n.Value)
	return nil
}

// typeErr is an error in yaml.v3's own form ("line N: ..."), so that the
// decoder collects it with the others and decode names the field.
func typeErr(n *yaml.Node, format string, args ...any) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", n.Line, fmt.Sprintf(format, args...))}}
}
