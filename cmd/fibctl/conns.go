package main

import (
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"time"

	"github.com/fibmesh/fibmesh/agent/admin"
	"github.com/fibmesh/fibmesh/internal/output"
)

const connsUsage = `fibctl conns: the connections a node's agent proxies, read from its admin
API (/connections).

Usage:
  fibctl conns [--node NETNS] [--admin ADDR] [--pod NS/NAME] [--state STATE] [-o table|json|yaml]

One line per connection: direction (outbound: the pod called out;
inbound: a peer called the pod), the pod, source and destination as the
app saw them, where the agent connected (the peer agent's tunnel port
15008, a plaintext endpoint, or the app), the cluster, both SPIFFE IDs
(verified in the mTLS handshake), the TLS version and cipher, the state,
where its bytes go, bytes each way and age. Closed connections stay
listed for a while, with why they ended.

States: handshake; l7 (an HTTP connection: routed request by request in
userspace); established (an L4 stream relayed in userspace); offloaded
(kTLS does its record crypto and the kernel moves its bytes); revoked (a
config change no longer allows it: both sides are reset); closed.

OFFLOAD says how an L4 tunnel's bytes move: splice or sockmap (in the
kernel; with XDP flow entries, their packets are shown after it), or
userspace with the reason (the kernel has no kTLS, --offload=off, the
kernel refused this suite). OUT and IN of an offloaded connection are
the kernel byte path's counters.

The mode after the upstream says how: tunnel (one TCP stream over mTLS),
plaintext, passthrough, http (an app's HTTP connection on an L7 port:
its requests are routed one by one; the cluster is its latest
request's), tunnel-h2 (the pod's pooled HTTP/2 tunnel to one endpoint,
carrying all its requests there).

Flags:
`

// connsCommand is fibctl conns: it returns the exit status.
func connsCommand(args []string, stdout, stderr io.Writer) int {
	var pod, state string
	args, pod = takeFlag(args, "pod")
	args, state = takeFlag(args, "state")
	f, code, ok := parseAdminFlags("fibctl conns", connsUsage, args, 0, stderr)
	if !ok {
		return code
	}
	q := url.Values{}
	if pod != "" {
		q.Set("pod", pod)
	}
	if state != "" {
		q.Set("state", state)
	}
	var conns []admin.Connection
	if err := adminGet(f, "/connections", q, &conns); err != nil {
		fmt.Fprintf(stderr, "fibctl conns: %v\n", err)
		return 1
	}
	if conns == nil {
		conns = []admin.Connection{}
	}
	now := time.Now()
	err := output.Write(stdout, f.format, conns, func(w io.Writer) {
		fmt.Fprintln(w, "ID\tDIR\tPOD\tSOURCE\tDESTINATION\tUPSTREAM\tCLUSTER\tLOCAL ID\tPEER ID\tTLS\tSTATE\tOFFLOAD\tOUT\tIN\tAGE")
		for _, c := range conns {
			end := now
			if !c.End.IsZero() {
				end = c.End
			}
			st := c.State
			if c.Reason != "" {
				st += " (" + c.Reason + ")"
			}
			tlsDesc := c.TLSVersion
			if c.TLSCipher != "" {
				tlsDesc += " " + c.TLSCipher
			}
			if c.TLSResumed {
				tlsDesc += " (resumed)"
			}
			up := addr(c.Upstream)
			if c.Mode != "" {
				up += " (" + c.Mode + ")"
			}
			off := c.Offload
			switch {
			case c.OffloadReason != "":
				off += " (" + c.OffloadReason + ")"
			case c.XDPPackets > 0:
				off += fmt.Sprintf(" (xdp %d pkts %s)", c.XDPPackets, humanBytes(c.XDPBytes))
			}
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.ID, c.Direction, c.Pod,
				addr(c.Source), addr(c.Destination), up, dash(c.Cluster), dash(c.LocalIdentity), dash(c.PeerIdentity),
				dash(tlsDesc), st, dash(off), humanBytes(c.BytesOut), humanBytes(c.BytesIn), end.Sub(c.Start).Round(time.Millisecond))
		}
	})
	if err != nil {
		fmt.Fprintf(stderr, "fibctl conns: %v\n", err)
		return 1
	}
	return 0
}

// takeFlag removes --name VALUE (or --name=VALUE, one dash or two) from
// args and returns the rest and the value.
func takeFlag(args []string, name string) ([]string, string) {
	var rest []string
	var val string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--"+name || a == "-"+name:
			if i+1 < len(args) {
				val = args[i+1]
				i++
				continue
			}
		case len(a) > len(name)+3 && a[:len(name)+3] == "--"+name+"=":
			val = a[len(name)+3:]
			continue
		case len(a) > len(name)+2 && a[:len(name)+2] == "-"+name+"=":
			val = a[len(name)+2:]
			continue
		}
		rest = append(rest, a)
	}
	return rest, val
}

// humanBytes prints n in B, KiB, MiB or GiB.
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 2; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMG"[exp])
}

// addr prints an address, "-" when unset.
func addr(a netip.AddrPort) string {
	if !a.IsValid() {
		return "-"
	}
	return a.String()
}
