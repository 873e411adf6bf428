//go:build linux

package nicprofiles

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// bit is one ETHTOOL_A_BITSET_BITS_BIT entry.
type bit struct {
	name  string
	value bool
}

// bitset encodes a verbose bitset; list: ETHTOOL_A_BITSET_NOMASK.
func bitset(ae *netlink.AttributeEncoder, list bool, bits ...bit) error {
	if list {
		ae.Flag(unix.ETHTOOL_A_BITSET_NOMASK, true)
	}
	ae.Uint32(unix.ETHTOOL_A_BITSET_SIZE, 64)
	ae.Nested(unix.ETHTOOL_A_BITSET_BITS, func(nae *netlink.AttributeEncoder) error {
		for i, b := range bits {
			nae.Nested(unix.ETHTOOL_A_BITSET_BITS_BIT, func(bae *netlink.AttributeEncoder) error {
				bae.Uint32(unix.ETHTOOL_A_BITSET_BIT_INDEX, uint32(i))
				bae.String(unix.ETHTOOL_A_BITSET_BIT_NAME, b.name)
				if b.value {
					bae.Flag(unix.ETHTOOL_A_BITSET_BIT_VALUE, true)
				}
				return nil
			})
		}
		return nil
	})
	return nil
}

func encode(t *testing.T, fn func(ae *netlink.AttributeEncoder)) []byte {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	fn(ae)
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDecodeFeatures decodes ETHTOOL_MSG_FEATURES_GET replies as the
// kernel sends them (net/ethtool/features.c: four bitsets in list form)
// and in the masked form, into ethtool -k states.
func TestDecodeFeatures(t *testing.T) {
	header := func(ae *netlink.AttributeEncoder) {
		ae.Nested(unix.ETHTOOL_A_FEATURES_HEADER, func(h *netlink.AttributeEncoder) error {
			h.Uint32(unix.ETHTOOL_A_HEADER_DEV_INDEX, 3)
			h.String(unix.ETHTOOL_A_HEADER_DEV_NAME, "fm0")
			return nil
		})
	}
	set := func(typ uint16, list bool, bits ...bit) func(*netlink.AttributeEncoder) {
		return func(ae *netlink.AttributeEncoder) {
			ae.Nested(typ, func(n *netlink.AttributeEncoder) error { return bitset(n, list, bits...) })
		}
	}
	reply := func(parts ...func(*netlink.AttributeEncoder)) func(*netlink.AttributeEncoder) {
		return func(ae *netlink.AttributeEncoder) {
			for _, p := range parts {
				p(ae)
			}
		}
	}
	tests := []struct {
		name    string
		msg     func(*netlink.AttributeEncoder)
		want    map[string]Feature
		wantErr string
	}{
		{
			name: "list form, as the kernel sends it",
			msg: reply(header,
				set(unix.ETHTOOL_A_FEATURES_HW, true, bit{name: "rx-gro"}, bit{name: "rx-lro"}, bit{name: "tls-hw-rx-offload"}, bit{name: ""}),
				set(unix.ETHTOOL_A_FEATURES_WANTED, true, bit{name: "rx-gro"}),
				set(unix.ETHTOOL_A_FEATURES_ACTIVE, true, bit{name: "rx-gro"}, bit{name: "tls-hw-tx-offload"}),
				set(unix.ETHTOOL_A_FEATURES_NOCHANGE, true, bit{name: "rx-lro"}),
			),
			want: map[string]Feature{
				FeatureGRO:       {On: true},              // active, changeable
				FeatureLRO:       {Fixed: true},           // in hw but nochange
				FeatureGROHW:     {Fixed: true},           // not offered
				FeatureTLSTX:     {On: true, Fixed: true}, // on, not changeable
				FeatureTLSRX:     {},                      // offered, off
				FeatureTLSRecord: {Fixed: true},
			},
		},
		{
			name: "masked form: VALUE marks set bits",
			msg: reply(
				set(unix.ETHTOOL_A_FEATURES_HW, false, bit{name: "rx-gro-hw", value: true}, bit{name: "rx-gro", value: false}),
				set(unix.ETHTOOL_A_FEATURES_ACTIVE, false, bit{name: "rx-gro-hw", value: true}, bit{name: "rx-gro", value: false}),
			),
			want: map[string]Feature{
				FeatureGRO: {Fixed: true}, FeatureLRO: {Fixed: true}, FeatureGROHW: {On: true},
				FeatureTLSTX: {Fixed: true}, FeatureTLSRX: {Fixed: true}, FeatureTLSRecord: {Fixed: true},
			},
		},
		{
			name:    "no active bitset",
			msg:     reply(header, set(unix.ETHTOOL_A_FEATURES_HW, true, bit{name: "rx-gro"})),
			wantErr: "no ETHTOOL_A_FEATURES_ACTIVE",
		},
		{
			name: "compact bitset",
			msg: reply(func(ae *netlink.AttributeEncoder) {
				ae.Nested(unix.ETHTOOL_A_FEATURES_ACTIVE, func(n *netlink.AttributeEncoder) error {
					n.Uint32(unix.ETHTOOL_A_BITSET_SIZE, 32)
					n.Bytes(unix.ETHTOOL_A_BITSET_VALUE, []byte{1, 0, 0, 0})
					return nil
				})
			}),
			wantErr: "compact bitset",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sets, err := decodeFeatures(encode(t, tt.msg))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("decodeFeatures error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("decodeFeatures: %v", err)
			}
			if d := cmp.Diff(tt.want, featureStates(sets)); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
	if _, err := decodeFeatures([]byte{1, 2, 3}); err == nil {
		t.Error("decodeFeatures accepted 3 bytes of garbage")
	}
}

func TestDecodeNetdevDev(t *testing.T) {
	b := encode(t, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(netdevADevIfindex, 3)
		ae.Uint64(netdevADevXDPFeatures, uint64(XDPBasic|XDPRedirect|XDPRxSG))
		ae.Uint32(netdevADevXDPZCMaxSegs, 1)
		ae.Uint64(5, 0) // xdp-rx-metadata-features: not read
	})
	x, err := decodeNetdevDev(b)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(&XDPFacts{Features: XDPBasic | XDPRedirect | XDPRxSG, ZCMaxSegs: 1}, x); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	// Before Linux 6.6 there is no xdp-zc-max-segs: 0.
	b = encode(t, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(netdevADevIfindex, 3)
		ae.Uint64(netdevADevXDPFeatures, 0)
	})
	if x, err := decodeNetdevDev(b); err != nil || *x != (XDPFacts{}) {
		t.Errorf("without zc-max-segs: %+v, %v", x, err)
	}
	b = encode(t, func(ae *netlink.AttributeEncoder) { ae.Uint32(netdevADevIfindex, 3) })
	if _, err := decodeNetdevDev(b); err == nil || !strings.Contains(err.Error(), "no NETDEV_A_DEV_XDP_FEATURES") {
		t.Errorf("reply without xdp-features: %v", err)
	}
}
