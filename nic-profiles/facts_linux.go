//go:build linux

package nicprofiles

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The netdev genetlink family (include/uapi/linux/netdev.h, generated
// from Documentation/netlink/specs/netdev.yaml). golang.org/x/sys/unix
// does not have these yet.
const (
	netdevFamily           = "netdev"
	netdevVersion          = 1
	netdevCmdDevGet        = 1 // NETDEV_CMD_DEV_GET
	netdevADevIfindex      = 1 // NETDEV_A_DEV_IFINDEX, u32
	netdevADevXDPFeatures  = 3 // NETDEV_A_DEV_XDP_FEATURES, u64 (enum netdev_xdp_act)
	netdevADevXDPZCMaxSegs = 4 // NETDEV_A_DEV_XDP_ZC_MAX_SEGS, u32 (Linux 6.6)
)

// Detect reads the facts of interface ifname in the calling thread's
// network namespace and chooses its profile (see Choose). It fails only
// when the interface does not exist; a source the kernel lacks (the
// netdev genetlink family before Linux 6.3, ethtool netlink before 5.6)
// is recorded in Facts.Missing and named in the reason. No privilege is
// needed.
func Detect(ifname string) (*Detection, error) {
	f, err := ReadFacts(ifname)
	if err != nil {
		return nil, err
	}
	return Choose(f)
}

// DetectAll runs Detect on every interface of the calling thread's
// network namespace except loopback, in ifindex order, with one interface
// listing and one generic netlink socket for all of them.
func DetectAll() ([]*Detection, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	c, dialErr := genetlink.Dial(nil)
	if dialErr == nil {
		defer c.Close()
	}
	var out []*Detection
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagLoopback != 0 {
			continue
		}
		d, err := Choose(readFacts(c, dialErr, ifi))
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b *Detection) int { return a.Facts.Ifindex - b.Facts.Ifindex })
	return out, nil
}

var errNoInterface = errors.New("no such interface")

// ReadFacts reads what the kernel reports about interface ifname in the
// calling thread's network namespace: its index and MTU, its driver
// (ETHTOOL_GDRVINFO), the package's Features (ethtool genetlink
// ETHTOOL_MSG_FEATURES_GET) and its XDP feature bits (netdev genetlink
// NETDEV_CMD_DEV_GET). It fails only when the interface does not exist.
func ReadFacts(ifname string) (Facts, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return Facts{}, fmt.Errorf("interface %s: %w (%w)", ifname, errNoInterface, err)
	}
	c, dialErr := genetlink.Dial(nil)
	if dialErr == nil {
		defer c.Close()
	}
	return readFacts(c, dialErr, *ifi), nil
}

// readFacts is ReadFacts for a listed interface over a generic netlink
// socket c (nil, with dialErr, when none could be opened).
func readFacts(c *genetlink.Conn, dialErr error, ifi net.Interface) Facts {
	f := Facts{Interface: ifi.Name, Ifindex: ifi.Index, MTU: ifi.MTU}
	if drv, err := driverName(ifi.Name); err != nil {
		f.DriverError = fmt.Sprintf("ETHTOOL_GDRVINFO: %v", err)
	} else {
		f.Driver = drv
	}
	if dialErr != nil {
		f.Missing = append(f.Missing, fmt.Sprintf("generic netlink socket: %v: features and XDP features not measured", dialErr))
		return f
	}
	if feats, err := ethtoolFeatures(c, ifi.Index); err != nil {
		f.Missing = append(f.Missing, fmt.Sprintf("netdev features not measured (%v)", err))
	} else {
		f.Features = feats
	}
	if x, err := netdevXDP(c, ifi.Index); err != nil {
		f.Missing = append(f.Missing, fmt.Sprintf("XDP features not measured (%v)", err))
	} else {
		f.XDP = x
	}
	return f
}

// driverName asks ETHTOOL_GDRVINFO (the ioctl behind `ethtool -i`).
func driverName(ifname string) (string, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	info, err := unix.IoctlGetEthtoolDrvinfo(fd, ifname)
	if err != nil {
		return "", err
	}
	drv := unix.ByteSliceToString(info.Driver[:])
	if drv == "" {
		return "", errors.New("the driver reports no name")
	}
	return drv, nil
}

// family resolves a genetlink family, saying plainly when the kernel has
// none by that name.
func family(c *genetlink.Conn, name, since string) (genetlink.Family, error) {
	fam, err := c.GetFamily(name)
	if errors.Is(err, os.ErrNotExist) {
		return fam, fmt.Errorf("the kernel has no %s genetlink family (it arrived in Linux %s)", name, since)
	}
	if err != nil {
		return fam, fmt.Errorf("resolve %s genetlink family: %w", name, err)
	}
	return fam, nil
}

// ethtoolFeatures reads the device's features in verbose bitsets (bit
// names, not positions, so the kernel's numbering does not matter) and
// returns the state of each of Features.
func ethtoolFeatures(c *genetlink.Conn, ifindex int) (map[string]Feature, error) {
	fam, err := family(c, unix.ETHTOOL_GENL_NAME, "5.6")
	if err != nil {
		return nil, err
	}
	ae := netlink.NewAttributeEncoder()
	ae.Nested(unix.ETHTOOL_A_FEATURES_HEADER, func(nae *netlink.AttributeEncoder) error {
		nae.Uint32(unix.ETHTOOL_A_HEADER_DEV_INDEX, uint32(ifindex))
		return nil
	})
	req, err := ae.Encode()
	if err != nil {
		return nil, fmt.Errorf("encode ETHTOOL_MSG_FEATURES_GET: %w", err)
	}
	msgs, err := c.Execute(genetlink.Message{
		Header: genetlink.Header{Command: unix.ETHTOOL_MSG_FEATURES_GET, Version: unix.ETHTOOL_GENL_VERSION},
		Data:   req,
	}, fam.ID, netlink.Request)
	if err != nil {
		return nil, fmt.Errorf("ETHTOOL_MSG_FEATURES_GET: %w", err)
	}
	if len(msgs) != 1 {
		return nil, fmt.Errorf("ETHTOOL_MSG_FEATURES_GET: %d replies, want 1", len(msgs))
	}
	sets, err := decodeFeatures(msgs[0].Data)
	if err != nil {
		return nil, fmt.Errorf("ETHTOOL_MSG_FEATURES_GET reply: %w", err)
	}
	return featureStates(sets), nil
}

// netdevXDP reads the device's XDP feature bits.
func netdevXDP(c *genetlink.Conn, ifindex int) (*XDPFacts, error) {
	fam, err := family(c, netdevFamily, "6.3")
	if err != nil {
		return nil, err
	}
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(netdevADevIfindex, uint32(ifindex))
	req, err := ae.Encode()
	if err != nil {
		return nil, fmt.Errorf("encode NETDEV_CMD_DEV_GET: %w", err)
	}
	msgs, err := c.Execute(genetlink.Message{
		Header: genetlink.Header{Command: netdevCmdDevGet, Version: netdevVersion},
		Data:   req,
	}, fam.ID, netlink.Request)
	if err != nil {
		return nil, fmt.Errorf("NETDEV_CMD_DEV_GET: %w", err)
	}
	if len(msgs) != 1 {
		return nil, fmt.Errorf("NETDEV_CMD_DEV_GET: %d replies, want 1", len(msgs))
	}
	return decodeNetdevDev(msgs[0].Data)
}
