//go:build linux

package nicprofiles

import (
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// featureSets are the four bitsets of an ETHTOOL_MSG_FEATURES_GET reply,
// each the set of feature names whose bit is set.
type featureSets struct {
	hw, wanted, active, nochange map[string]bool
}

// decodeFeatures decodes the attributes of an ETHTOOL_MSG_FEATURES_GET
// reply (Documentation/networking/ethtool-netlink.rst, FEATURES_GET).
func decodeFeatures(b []byte) (featureSets, error) {
	var s featureSets
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return s, err
	}
	for ad.Next() {
		var dst *map[string]bool
		switch ad.Type() {
		case unix.ETHTOOL_A_FEATURES_HW:
			dst = &s.hw
		case unix.ETHTOOL_A_FEATURES_WANTED:
			dst = &s.wanted
		case unix.ETHTOOL_A_FEATURES_ACTIVE:
			dst = &s.active
		case unix.ETHTOOL_A_FEATURES_NOCHANGE:
			dst = &s.nochange
		default:
			continue // the header; attributes of newer kernels
		}
		ad.Nested(func(nad *netlink.AttributeDecoder) error {
			set, err := decodeBitset(nad)
			*dst = set
			return err
		})
	}
	if err := ad.Err(); err != nil {
		return s, err
	}
	if s.active == nil {
		return s, errors.New("no ETHTOOL_A_FEATURES_ACTIVE bitset")
	}
	for _, m := range []*map[string]bool{&s.hw, &s.wanted, &s.nochange} {
		if *m == nil {
			*m = map[string]bool{}
		}
	}
	return s, nil
}

// decodeBitset decodes a verbose ethtool bitset (ETHTOOL_A_BITSET_*) into
// the names of its set bits. In list form (ETHTOOL_A_BITSET_NOMASK)
// every listed bit is set; otherwise a bit is set when it carries
// ETHTOOL_A_BITSET_BIT_VALUE. A compact bitset (no names) is an error:
// the request never asks for one.
func decodeBitset(ad *netlink.AttributeDecoder) (map[string]bool, error) {
	type bit struct {
		name  string
		value bool
	}
	var bits []bit
	nomask, sawBits, compact := false, false, false
	for ad.Next() {
		switch ad.Type() {
		case unix.ETHTOOL_A_BITSET_NOMASK:
			nomask = true
		case unix.ETHTOOL_A_BITSET_VALUE:
			compact = true
		case unix.ETHTOOL_A_BITSET_BITS:
			sawBits = true
			ad.Nested(func(bd *netlink.AttributeDecoder) error {
				for bd.Next() {
					if bd.Type() != unix.ETHTOOL_A_BITSET_BITS_BIT {
						continue
					}
					var b bit
					bd.Nested(func(d *netlink.AttributeDecoder) error {
						for d.Next() {
							switch d.Type() {
							case unix.ETHTOOL_A_BITSET_BIT_NAME:
								b.name = d.String()
							case unix.ETHTOOL_A_BITSET_BIT_VALUE:
								b.value = true
							}
						}
						return d.Err()
					})
					// Unused feature bits have an empty name in
					// netdev_features_strings: nothing to report.
					if b.name != "" {
						bits = append(bits, b)
					}
				}
				return bd.Err()
			})
		}
	}
	if err := ad.Err(); err != nil {
		return nil, err
	}
	if compact && !sawBits {
		return nil, errors.New("compact bitset (no bit names): not requested, cannot decode")
	}
	set := map[string]bool{}
	for _, b := range bits {
		if nomask || b.value {
			set[b.name] = true
		}
	}
	return set, nil
}

// featureStates gives each of Features its `ethtool -k` state: on when
// active; fixed when the driver cannot change it (not in hw) or the
// kernel says it may not change (nochange).
func featureStates(s featureSets) map[string]Feature {
	out := make(map[string]Feature, len(Features))
	for _, name := range Features {
		out[name] = Feature{On: s.active[name], Fixed: !s.hw[name] || s.nochange[name]}
	}
	return out
}

// decodeNetdevDev decodes a NETDEV_CMD_DEV_GET reply.
func decodeNetdevDev(b []byte) (*XDPFacts, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil, fmt.Errorf("NETDEV_CMD_DEV_GET reply: %w", err)
	}
	x := &XDPFacts{}
	sawFeatures := false
	for ad.Next() {
		switch ad.Type() {
		case netdevADevXDPFeatures:
			x.Features = XDPFeatures(ad.Uint64())
			sawFeatures = true
		case netdevADevXDPZCMaxSegs:
			x.ZCMaxSegs = int(ad.Uint32())
		}
	}
	if err := ad.Err(); err != nil {
		return nil, fmt.Errorf("NETDEV_CMD_DEV_GET reply: %w", err)
	}
	if !sawFeatures {
		return nil, errors.New("NETDEV_CMD_DEV_GET reply has no NETDEV_A_DEV_XDP_FEATURES")
	}
	return x, nil
}
