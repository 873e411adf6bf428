// Package netnstest holds test helpers for real traffic between two
// network namespaces, in pure Go (netlink, setns, AF_PACKET), so they work
// where there is no iproute2 or tcpdump: on a development machine as root,
// and inside make vmtest's VM.
//
// NewPair builds two fresh namespaces joined by a veth pair; Peer.Do,
// Listen and Dial open sockets in them. Peer.Capture records the TCP
// traffic on a peer's veth and reassembles each direction's payload.
// ParseTLSRecords, TLSRecordChecker and PlaintextScanner then prove what
// the wire carried: TLS records only, and none of a known plaintext.
package netnstest
