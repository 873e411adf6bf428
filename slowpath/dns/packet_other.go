//go:build !linux

package dns

import "net"

// newPacketRW returns a plain packetRW: answering from the query's
// destination address is implemented on Linux only.
func newPacketRW(pc net.PacketConn) packetRW { return plainRW{pc} }
