package fib

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	xfib "github.com/fibmesh/fibmesh/xdp/fib"
)

// Proto is an IP protocol number.
type Proto uint8

// The protocols the FIB parses.
const (
	ProtoICMP Proto = 1
	ProtoTCP  Proto = 6
	ProtoUDP  Proto = 17
)

func (p Proto) String() string {
	switch p {
	case ProtoICMP:
		return "icmp"
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	}
	return fmt.Sprintf("proto-%d", uint8(p))
}

// ParseProto parses "tcp", "udp" or "icmp" (any case).
func ParseProto(s string) (Proto, error) {
	switch strings.ToLower(s) {
	case "tcp":
		return ProtoTCP, nil
	case "udp":
		return ProtoUDP, nil
	case "icmp":
		return ProtoICMP, nil
	}
	return 0, fmt.Errorf("unknown protocol %q: want tcp, udp or icmp", s)
}

// NextHop says where a route sends packets: out of Ifindex, with the
// Ethernet source and destination rewritten to SrcMAC and DstMAC.
type NextHop struct {
	Ifindex int
	SrcMAC  net.HardwareAddr
	DstMAC  net.HardwareAddr
	// PuntNew sends the first packet of every flow without a flow entry
	// to the agent for a decision (see package punt).
	PuntNew bool
}

// Route is one FIB entry: packets to Prefix go to NextHop.
type Route struct {
	Prefix  netip.Prefix
	NextHop NextHop
}

func (r Route) String() string {
	flags := ""
	if r.NextHop.PuntNew {
		flags = " punt-new"
	}
	return fmt.Sprintf("%s -> if%d %s>%s%s", r.Prefix, r.NextHop.Ifindex, r.NextHop.SrcMAC, r.NextHop.DstMAC, flags)
}

// Action is what the data path does with a flow's packets. It mirrors
// enum flow_action in xdp/headers/consts.h.
type Action uint32

// Flow actions.
const (
	ActionForward = Action(xfib.FibFlowActionFLOW_FORWARD)
	ActionPass    = Action(xfib.FibFlowActionFLOW_PASS)
	ActionDrop    = Action(xfib.FibFlowActionFLOW_DROP)
	ActionPunt    = Action(xfib.FibFlowActionFLOW_PUNT)
)

var actionNames = [...]string{
	ActionForward: "forward",
	ActionPass:    "pass",
	ActionDrop:    "drop",
	ActionPunt:    "punt",
}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("action-%d", uint32(a))
}

// ParseAction parses an action name as printed by Action.String.
func ParseAction(s string) (Action, error) {
	for i, n := range actionNames {
		if strings.EqualFold(s, n) {
			return Action(i), nil
		}
	}
	return 0, fmt.Errorf("unknown flow action %q: want one of %s", s, strings.Join(actionNames[:], ", "))
}

// FlowKey is an IPv4 5-tuple. For ICMP echo, SrcPort holds the echo
// identifier and DstPort is zero.
type FlowKey struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Proto            Proto
}

func (k FlowKey) String() string {
	return fmt.Sprintf("%s %s:%d -> %s:%d", k.Proto, k.Src, k.SrcPort, k.Dst, k.DstPort)
}

// Reverse returns the key of the flow's other direction.
func (k FlowKey) Reverse() FlowKey {
	return FlowKey{Src: k.Dst, Dst: k.Src, SrcPort: k.DstPort, DstPort: k.SrcPort, Proto: k.Proto}
}

// Flow is a flow entry: the decision for a 5-tuple plus the data path's
// counters for it.
type Flow struct {
	Action Action
	// SrcID and DstID are identity ids assigned by the controller.
	SrcID, DstID uint32
	// NATKind says whether the flow's packets are translated: NATDst
	// rewrites the destination to NAT (a service flow's way out, VIP ->
	// backend), NATSrc the source (its way back, backend -> VIP).
	NATKind NATKind
	NAT     netip.AddrPort
	// Packets, Bytes and LastSeenNs are kept by the data path;
	// LastSeenNs is CLOCK_MONOTONIC (bpf_ktime_get_ns). They are ignored
	// by Flows.Put.
	Packets, Bytes uint64
	LastSeenNs     uint64
}

// NATKind is a flow entry's address translation. It mirrors enum
// flow_nat in xdp/headers/consts.h.
type NATKind uint8

// Translations.
const (
	NATNone = NATKind(xfib.FibFlowNatNAT_NONE)
	NATDst  = NATKind(xfib.FibFlowNatNAT_DST)
	NATSrc  = NATKind(xfib.FibFlowNatNAT_SRC)
)

var natNames = [...]string{NATNone: "none", NATDst: "dnat", NATSrc: "snat"}

func (n NATKind) String() string {
	if int(n) < len(natNames) {
		return natNames[n]
	}
	return fmt.Sprintf("nat-%d", uint8(n))
}

// Mode is the mTLS mode of a {pod IP, port, protocol}. It mirrors enum
// mtls_mode in xdp/headers/consts.h.
type Mode uint32

// mTLS modes.
const (
	ModeUnset      = Mode(xfib.FibMtlsModeMTLS_UNSET)
	ModePermissive = Mode(xfib.FibMtlsModeMTLS_PERMISSIVE)
	ModeStrict     = Mode(xfib.FibMtlsModeMTLS_STRICT)
	ModeDisable    = Mode(xfib.FibMtlsModeMTLS_DISABLE)
)

var modeNames = [...]string{
	ModeUnset:      "UNSET",
	ModePermissive: "PERMISSIVE",
	ModeStrict:     "STRICT",
	ModeDisable:    "DISABLE",
}

func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("MODE-%d", uint32(m))
}

// ParseMode parses UNSET, PERMISSIVE, STRICT or DISABLE (any case).
func ParseMode(s string) (Mode, error) {
	for i, n := range modeNames {
		if strings.EqualFold(s, n) {
			return Mode(i), nil
		}
	}
	return 0, fmt.Errorf("unknown mTLS mode %q: want one of %s", s, strings.Join(modeNames[:], ", "))
}

// PolicyKey names a pod port.
type PolicyKey struct {
	Addr  netip.Addr
	Port  uint16
	Proto Proto
}

func (k PolicyKey) String() string { return fmt.Sprintf("%s %s:%d", k.Proto, k.Addr, k.Port) }

// Reason is why a packet took the path it took: the index of a counter in
// the stats map. It mirrors enum stat_reason in xdp/headers/consts.h.
type Reason uint32

// Counter reasons.
const (
	ReasonRX               = Reason(xfib.FibStatReasonSTAT_RX)
	ReasonPassNonIPv4      = Reason(xfib.FibStatReasonSTAT_PASS_NON_IPV4)
	ReasonPassIPv6         = Reason(xfib.FibStatReasonSTAT_PASS_IPV6)
	ReasonPassMalformed    = Reason(xfib.FibStatReasonSTAT_PASS_MALFORMED)
	ReasonPassFragment     = Reason(xfib.FibStatReasonSTAT_PASS_FRAGMENT)
	ReasonPassRouteMiss    = Reason(xfib.FibStatReasonSTAT_PASS_ROUTE_MISS)
	ReasonPassTTL          = Reason(xfib.FibStatReasonSTAT_PASS_TTL)
	ReasonPassFlow         = Reason(xfib.FibStatReasonSTAT_PASS_FLOW)
	ReasonRedirect         = Reason(xfib.FibStatReasonSTAT_REDIRECT)
	ReasonTX               = Reason(xfib.FibStatReasonSTAT_TX)
	ReasonDropStrict       = Reason(xfib.FibStatReasonSTAT_DROP_STRICT)
	ReasonDropFlow         = Reason(xfib.FibStatReasonSTAT_DROP_FLOW)
	ReasonPunt             = Reason(xfib.FibStatReasonSTAT_PUNT)
	ReasonDropPuntNoSocket = Reason(xfib.FibStatReasonSTAT_DROP_PUNT_NO_SOCKET)
	ReasonPassNoTxPort     = Reason(xfib.FibStatReasonSTAT_PASS_NO_TX_PORT)
	ReasonDropTinyFragment = Reason(xfib.FibStatReasonSTAT_DROP_TINY_FRAGMENT)
	ReasonPassFrameTooBig  = Reason(xfib.FibStatReasonSTAT_PASS_FRAME_TOO_BIG)
	// Service VIPs (services.go): a new flow given its backend by the
	// VIP's Maglev table, packets rewritten to the backend and back to
	// the VIP, new flows to a VIP without a ready backend answered (ICMP
	// port unreachable, TCP RST) or, when no answer could be built,
	// dropped.
	ReasonServiceNewFlow       = Reason(xfib.FibStatReasonSTAT_SVC_NEW_FLOW)
	ReasonServiceDNAT          = Reason(xfib.FibStatReasonSTAT_SVC_DNAT)
	ReasonServiceSNAT          = Reason(xfib.FibStatReasonSTAT_SVC_SNAT)
	ReasonServiceNoBackend     = Reason(xfib.FibStatReasonSTAT_SVC_NO_BACKEND)
	ReasonDropServiceNoBackend = Reason(xfib.FibStatReasonSTAT_DROP_SVC_NO_BACKEND)
	NumReasons                 = int(xfib.FibStatReasonSTAT_REASON_LEN)
)

// reasonNames must have exactly NumReasons entries (TestReasonNames).
var reasonNames = [...]string{
	ReasonRX:                   "rx",
	ReasonPassNonIPv4:          "pass_non_ipv4",
	ReasonPassIPv6:             "pass_ipv6",
	ReasonPassMalformed:        "pass_malformed",
	ReasonPassFragment:         "pass_fragment",
	ReasonPassRouteMiss:        "pass_route_miss",
	ReasonPassTTL:              "pass_ttl_exceeded",
	ReasonPassFlow:             "pass_flow",
	ReasonRedirect:             "redirect",
	ReasonTX:                   "tx",
	ReasonDropStrict:           "drop_strict_plaintext",
	ReasonDropFlow:             "drop_flow",
	ReasonPunt:                 "punt",
	ReasonDropPuntNoSocket:     "drop_punt_no_socket",
	ReasonPassNoTxPort:         "pass_no_tx_port",
	ReasonDropTinyFragment:     "drop_tiny_fragment",
	ReasonPassFrameTooBig:      "pass_frame_too_big",
	ReasonServiceNewFlow:       "service_new_flow",
	ReasonServiceDNAT:          "service_dnat",
	ReasonServiceSNAT:          "service_snat",
	ReasonServiceNoBackend:     "service_no_backend",
	ReasonDropServiceNoBackend: "drop_service_no_backend",
}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason-%d", uint32(r))
}

// Reasons returns every reason in counter order.
func Reasons() []Reason {
	out := make([]Reason, NumReasons)
	for i := range out {
		out[i] = Reason(i)
	}
	return out
}

// Counter is a packet and byte count.
type Counter struct {
	Packets, Bytes uint64
}
