package main

import (
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/fibmesh/fibmesh/agent/admin"
	"github.com/fibmesh/fibmesh/internal/output"
)

const servicesUsage = `fibctl services: the service VIPs a node's XDP FIB load-balances, read from
its agent's admin API (/services).

Usage:
  fibctl services [--node NETNS] [--admin ADDR] [-o table|json|yaml] [SERVICE]

One line per backend of each VIP:port/protocol: the service's hostname,
the backend (pod IP:port) and its node, its weight, its share of the
service's Maglev table (the slots it holds / the table's size: the
fraction of new flows it gets) and the live flows this node's FIB sends
to it (its flow entries translating the VIP to that backend).

A new flow to a VIP (UDP, or TCP from a pod the mesh does not capture)
takes the backend of slot FlowHash(5-tuple) mod the table's size, and
the FIB writes a flow entry each way (DNAT out, the VIP back in), so its
later packets keep that backend whatever the table becomes. When a
backend leaves the service, the agent deletes its flows' entries: they
pick again, and only they move. A service with no ready backend has an
empty table: the FIB answers its new flows with ICMP port unreachable
(UDP) or a TCP RST (counter service_no_backend in fibctl stats).

SERVICE picks services by VIP (10.96.0.10), VIP:PORT (10.96.0.10:53) or
hostname (dns.kube-system.svc.cluster.local, or a prefix of its labels
such as dns.kube-system). -o json|yaml gives every field, the table's
size in slots included.

--node is the node's network namespace (e.g. fm-node1): fibctl connects
to the admin API from inside it. Without --node, it connects in the
current namespace.

Examples:
  fibctl services --node fm-node1
  fibctl --node fm-node1 services 10.96.0.10:53 -o json

Flags:
`

// servicesCommand is fibctl services: it returns the exit status.
func servicesCommand(args []string, stdout, stderr io.Writer) int {
	f, code, ok := parseAdminFlags("fibctl services", servicesUsage, args, 1, stderr)
	if !ok {
		return code
	}
	var svcs []admin.Service
	if err := adminGet(f, "/services", nil, &svcs); err != nil {
		fmt.Fprintf(stderr, "fibctl services: %v\n", err)
		return 1
	}
	out := []admin.Service{}
	for _, s := range svcs {
		if len(f.args) == 0 || serviceMatches(s, f.args[0]) {
			out = append(out, s)
		}
	}
	if len(f.args) == 1 && len(out) == 0 {
		fmt.Fprintf(stderr, "fibctl services: no service %q in the node's FIB (%d services; fibctl services lists them)\n", f.args[0], len(svcs))
		return 1
	}
	err := output.Write(stdout, f.format, out, func(w io.Writer) { servicesTable(w, out) })
	if err != nil {
		fmt.Fprintf(stderr, "fibctl services: %v\n", err)
		return 1
	}
	return 0
}

// serviceMatches reports whether sel names s: its VIP, VIP:port, its
// hostname or the first labels of its hostname.
func serviceMatches(s admin.Service, sel string) bool {
	if a, err := netip.ParseAddr(sel); err == nil {
		return a == s.VIP
	}
	if ap, err := netip.ParseAddrPort(sel); err == nil {
		return ap == netip.AddrPortFrom(s.VIP, s.Port)
	}
	return s.Hostname == sel || strings.HasPrefix(s.Hostname, sel+".")
}

// servicesTable writes one row per backend; a service without one gets a
// row saying what the FIB does with its flows, and what is pending is
// said below the table.
func servicesTable(w io.Writer, svcs []admin.Service) {
	fmt.Fprintln(w, "SERVICE\tVIP\tPROTO\tBACKEND\tNODE\tWEIGHT\tSHARE\tFLOWS")
	var notes []string
	for _, s := range svcs {
		vip := netip.AddrPortFrom(s.VIP, s.Port).String()
		host := dash(s.Hostname)
		if s.Pending != "" {
			notes = append(notes, fmt.Sprintf("%s %s: not in the FIB as the flow tables say: %s", s.Proto, vip, s.Pending))
		}
		if len(s.Backends) == 0 {
			what := "none: answered ICMP unreachable"
			if s.Proto == "tcp" {
				what = "none: answered TCP RST"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t-\t-\t-\t%d\n", host, vip, s.Proto, what, s.Flows)
			continue
		}
		for _, b := range s.Backends {
			weight, share := "-", "-"
			if b.Weight > 0 {
				weight = fmt.Sprint(b.Weight)
			}
			if s.Slots > 0 {
				share = fmt.Sprintf("%.1f%%", 100*b.Share)
			}
			if b.Slots == 0 && s.Pending == "" {
				share = "left" // out of the table, its flows not moved yet
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", host, vip, s.Proto, b.Addr, dash(b.Node), weight, share, b.Flows)
		}
	}
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
}
