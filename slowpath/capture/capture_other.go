//go:build !linux

package capture

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
)

// Install writes the capture table in a network namespace: Linux only.
func Install(netnsFD int, cfg Config) error {
	return fmt.Errorf("capture: nftables: not supported on %s", runtime.GOOS)
}

// Remove deletes the capture table: Linux only.
func Remove(netnsFD int) error {
	return fmt.Errorf("capture: nftables: not supported on %s", runtime.GOOS)
}

// Installed reports whether the capture table is installed: Linux only.
func Installed(netnsFD int) (bool, error) {
	return false, fmt.Errorf("capture: nftables: not supported on %s", runtime.GOOS)
}

// OriginalDst returns a redirected connection's original destination:
// Linux only.
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	return netip.AddrPort{}, fmt.Errorf("original destination: not supported on %s", runtime.GOOS)
}

// SetProbePods writes the node's probe table: Linux only.
func SetProbePods(netnsFD int, pods []netip.Addr) error {
	return fmt.Errorf("capture: nftables: not supported on %s", runtime.GOOS)
}
