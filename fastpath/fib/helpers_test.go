package fib

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/fibmesh/fibmesh/internal/checksum"
	"github.com/fibmesh/fibmesh/internal/netns"
	"github.com/fibmesh/fibmesh/internal/netnstest"
	"github.com/fibmesh/fibmesh/internal/testenv"
)

// openTestFIB loads an unpinned FIB that is closed when the test ends.
func openTestFIB(t testing.TB) *FIB {
	t.Helper()
	testenv.NeedRoot(t)
	f, err := Open(Options{MaxFlows: 4096})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// xdpMD mirrors struct xdp_md (include/uapi/linux/bpf.h), the context of
// BPF_PROG_TEST_RUN for XDP programs. Data must be 0 and DataEnd the frame
// length; EgressIfindex must be 0.
type xdpMD struct {
	Data, DataEnd, DataMeta      uint32
	IngressIfindex, RxQueueIndex uint32
	EgressIfindex                uint32
}

// loIfindex is the loopback device's ifindex in every network namespace.
// The tests use it as the ingress device: test runs only accept an
// existing device there (and an rx queue below its queue count).
const loIfindex = 1

// runXDP runs the FIB over one frame as if it arrived on ingress queue
// rxq. It returns the XDP action and the frame as the program left it.
func runXDP(prog *ebpf.Program, pkt []byte, ingress, rxq uint32) (uint32, []byte, error) {
	opts := ebpf.RunOptions{
		Data:    pkt,
		DataOut: make([]byte, len(pkt)+512),
		Context: xdpMD{DataEnd: uint32(len(pkt)), IngressIfindex: ingress, RxQueueIndex: rxq},
	}
	ret, err := prog.Run(&opts)
	if err != nil {
		return 0, nil, err
	}
	return ret, opts.DataOut, nil
}

// XDP actions (enum xdp_action).
const (
	xdpAborted  = 0
	xdpDrop     = 1
	xdpPass     = 2
	xdpTX       = 3
	xdpRedirect = 4
)

var actionName = map[uint32]string{xdpAborted: "XDP_ABORTED", xdpDrop: "XDP_DROP", xdpPass: "XDP_PASS", xdpTX: "XDP_TX", xdpRedirect: "XDP_REDIRECT"}

// --- Packet building: just enough to write exact frames by hand. ---

var (
	macClient = mustMAC("02:00:00:00:00:01") // source of the test frames
	macNode   = mustMAC("02:00:00:00:00:02") // destination of the test frames
)

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

const (
	etherTypeIPv4 = 0x0800
	etherTypeARP  = 0x0806
	etherTypeVLAN = 0x8100
	etherTypeIPv6 = 0x86dd
)

// ether returns an Ethernet frame from macClient to macNode.
func ether(etherType uint16, payload []byte) []byte {
	b := make([]byte, 14, 14+len(payload))
	copy(b[0:6], macNode)
	copy(b[6:12], macClient)
	binary.BigEndian.PutUint16(b[12:14], etherType)
	return append(b, payload...)
}

// ip4 describes an IPv4 header. Zero TTL means 64; use ttl0 for 0.
type ip4 struct {
	Src, Dst string
	TTL      uint8
	ttl0     bool
	Proto    Proto
	Options  []byte // a multiple of 4 bytes
	Frag     uint16 // flags and fragment offset, host order (IP_MF = 0x2000)
	ID       uint16
}

// packet returns the IPv4 datagram with a correct header checksum.
func (h ip4) packet(payload []byte) []byte {
	ihl := 20 + len(h.Options)
	if len(h.Options)%4 != 0 {
		panic("IPv4 options must be a multiple of 4 bytes")
	}
	b := make([]byte, ihl, ihl+len(payload))
	b[0] = 0x40 | byte(ihl/4)
	binary.BigEndian.PutUint16(b[2:4], uint16(ihl+len(payload)))
	binary.BigEndian.PutUint16(b[4:6], h.ID)
	binary.BigEndian.PutUint16(b[6:8], h.Frag)
	b[8] = h.TTL
	if h.TTL == 0 && !h.ttl0 {
		b[8] = 64
	}
	b[9] = byte(h.Proto)
	src, dst := netip.MustParseAddr(h.Src).As4(), netip.MustParseAddr(h.Dst).As4()
	copy(b[12:16], src[:])
	copy(b[16:20], dst[:])
	copy(b[20:], h.Options)
	setIPv4Checksum(b[:ihl])
	return append(b, payload...)
}

// frame returns the IPv4 datagram in an Ethernet frame.
func (h ip4) frame(payload []byte) []byte { return ether(etherTypeIPv4, h.packet(payload)) }

// setIPv4Checksum fills in hdr's header checksum, computed from scratch
// (checksum.IPv4Header), independently of the BPF program's incremental
// update.
func setIPv4Checksum(hdr []byte) {
	binary.BigEndian.PutUint16(hdr[10:12], checksum.IPv4Header(hdr))
}

func tcpHdr(sport, dport uint16) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], 1000) // seq
	b[12] = 5 << 4                          // data offset
	b[13] = 0x02                            // SYN
	binary.BigEndian.PutUint16(b[14:], 65535)
	return b
}

func udpHdr(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	return append(b, payload...)
}

func icmpEcho(typ uint8, id, seq uint16) []byte {
	b := make([]byte, 8)
	b[0] = typ
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	return b
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// forwarded returns the frame the FIB should emit for in: MACs rewritten,
// TTL - 1 and the header checksum recomputed from scratch. Everything
// after the IPv4 header (payload, Ethernet padding) is unchanged.
func forwarded(in []byte, src, dst net.HardwareAddr) []byte {
	out := append([]byte(nil), in...)
	copy(out[0:6], dst)
	copy(out[6:12], src)
	ip := out[14:]
	ip[8]--
	ihl := int(ip[0]&0x0f) * 4
	setIPv4Checksum(ip[:ihl])
	return out
}

// --- Counters ---

// statsDelta returns after - before, per reason.
func statsDelta(before, after []Counter) []Counter {
	d := make([]Counter, len(after))
	for i := range after {
		d[i] = Counter{Packets: after[i].Packets - before[i].Packets, Bytes: after[i].Bytes - before[i].Bytes}
	}
	return d
}

// wantDelta is the delta of one packet of n bytes counted under RX and
// the given reasons.
func wantDelta(n int, reasons ...Reason) []Counter {
	d := make([]Counter, NumReasons)
	for _, r := range append([]Reason{ReasonRX}, reasons...) {
		d[r].Packets++
		d[r].Bytes += uint64(n)
	}
	return d
}

// deltaDiff is cmp.Diff of counter deltas with reason names, so a failure
// reads "drop_flow: +1 packet" rather than an index.
func deltaDiff(want, got []Counter) string {
	named := func(cs []Counter) map[string]Counter {
		m := map[string]Counter{}
		for i, c := range cs {
			if c != (Counter{}) {
				m[Reason(i).String()] = c
			}
		}
		return m
	}
	return cmp.Diff(named(want), named(got))
}

// --- A network namespace with veth devices to redirect to ---

// testNetns is a network namespace of the test with veth devices. The
// tx_ports devmap takes references to devices, so they must exist; a
// namespace keeps them off the host. It is deleted on cleanup, and with
// it the devices (the kernel then drops them from every devmap).
type testNetns struct {
	ns      *os.File
	ifindex map[string]int
}

// newTestNetns creates a namespace with the named veth devices (peers
// NAMEp), each with numQueues rx queues.
func newTestNetns(t testing.TB, numQueues int, names ...string) *testNetns {
	t.Helper()
	testenv.NeedRoot(t)
	ns, err := netns.New()
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	tn := &testNetns{ns: ns, ifindex: map[string]int{}}
	tn.do(t, func() {
		for _, n := range names {
			la := netlink.NewLinkAttrs()
			la.Name = n
			la.NumRxQueues = numQueues
			la.NumTxQueues = numQueues
			// Veth, not dummy: test kernels may lack CONFIG_DUMMY.
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: n + "p"}); err != nil {
				t.Fatalf("add veth %s: %v", n, err)
			}
			l, err := netlink.LinkByName(n)
			if err != nil {
				t.Fatalf("veth %s: %v", n, err)
			}
			if err := netlink.LinkSetUp(l); err != nil {
				t.Fatalf("set %s up: %v", n, err)
			}
			tn.ifindex[n] = l.Attrs().Index
		}
	})
	return tn
}

// do runs fn on a thread inside the namespace (netnstest.Do: t.Fatal
// inside fn stops the test). Device lookups by ifindex (devmap updates,
// a test run's ingress device) happen in the caller's namespace.
func (tn *testNetns) do(t testing.TB, fn func()) {
	t.Helper()
	netnstest.Do(t, tn.ns, fn)
}

// isErrno reports whether err is the errno e.
func isErrno(err error, e unix.Errno) bool { return errors.Is(err, e) }
