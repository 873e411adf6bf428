// Command fibctl inspects and edits a node's XDP FIB: routes, flows,
// mTLS policy and counters. It also validates manifests (fibctl analyze),
// asks the controller what each node's agent accepted (fibctl config
// status), and shows the NIC profile of each interface (fibctl nic).
package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/internal/output"
)

const usage = `fibctl: inspect a node's fibmesh XDP FIB.

Usage:
  fibctl [--node NAME | --pin-dir DIR] [-o table|json|yaml] COMMAND [ARGS]

Commands:
  fib                       routes: prefix, next hop interface and MACs, flags
  flows                     flow entries: 5-tuple, action, packets, bytes, idle time
  flows --offload [--node NETNS] [--pod NS/NAME] [--conn ID] [-o FORMAT]
                            one line per offloaded connection: conn id, pod,
                            tunnel 5-tuple, both entries' actions, packets,
                            bytes, both identities, revocation latency
                            (admin API /offload/flows)
  stats                     data-path counters by reason (packets, bytes)
  policy                    mTLS mode per {pod IP, port, protocol}
  policy set IP PORT PROTO MODE
                            set a mode (STRICT drops plaintext in XDP)
  policy delete IP PORT PROTO
  attached                  interfaces the FIB is attached to
  nic [IFACE]               the NIC profile of IFACE (default: every interface
                            but loopback) in the current network namespace:
                            driver, profile and why, XDP mode and features,
                            AF_XDP zero-copy, kTLS TX/RX offload, quirks
                            (needs no root; takes no --node or --pin-dir;
                            see docs/nic-profiles.md)
  analyze -f PATH [-f PATH ...] [-o FORMAT]
                            validate Istio/Kubernetes manifests (files or
                            directories, analyzed together)
                            (exit 0: no errors, 1: errors, 2: unusable input;
                            see docs/analyze.md; takes no --node)
  config status [--controller URL] [-o FORMAT] [NODE]
                            what the controller pushed to each node's agent
                            and what each accepted, per xDS type
                            (exit 0: synced, 1: a node stale or NACKed,
                            2: the controller unreachable; takes no --node)
  config dump [--node NETNS] [-o FORMAT] [TYPE]
                            the xDS config (CDS EDS LDS RDS SDS FDS) a node's
                            agent accepted, and its last NACK, from the
                            agent's admin API (127.0.0.1:15000 in NETNS)
  certs [--node NETNS] [-o FORMAT]
                            the SVIDs of the pods enrolled on a node's agent:
                            identity, serial, expiry (admin API)
  conns [--node NETNS] [--pod NS/NAME] [--state STATE] [-o FORMAT]
                            the connections a node's agent proxies: pods,
                            addresses, cluster, both SPIFFE IDs, TLS, state,
                            bytes (admin API)
  services [--node NETNS] [-o FORMAT] [SERVICE]
                            the service VIPs the node's XDP FIB load-balances:
                            per VIP:port/protocol its backends with node,
                            weight, Maglev share and live flows (admin API;
                            see fibctl services --help)
  top [--node NETNS] [--interval D] [--sort rate|bytes|age] [-o FORMAT]
                            a live view of a node's connections and offloaded
                            flows by rate, with their offload state, redrawn
                            every --interval; -o json prints one snapshot and
                            exits (admin API; see fibctl top --help)

fibctl reads the maps the agent pinned under --pin-dir
(default /sys/fs/bpf/fibmesh/<node>); it needs root.

Examples:
  fibctl --node fm-node1 stats
  fibctl --node fm-node1 -o json flows
  fibctl --node fm-node1 flows --offload
  fibctl --node fm-node1 top
  fibctl --node fm-node1 services
  fibctl --node fm-node2 policy set 10.200.2.11 8080 tcp STRICT
  fibctl nic eth0
  nsenter --net=/run/netns/fm-node1 fibctl -o json nic
  fibctl config status --controller http://127.0.0.1:15014

Flags:
`

func main() {
	if code, ok := dispatch(os.Args[1:], os.Stdout, os.Stderr); ok {
		os.Exit(code)
	}
	if err := run(os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(os.Stderr, "fibctl:", err)
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "fibctl:", err)
		os.Exit(1)
	}
}

// dispatch runs the commands that read no FIB, analyze (manifests) and
// config (the controller), and returns their exit status; ok is false for
// every other command line, which run handles. These commands take none
// of the FIB flags, so they are recognised before the flags are parsed.
func dispatch(args []string, stdout, stderr io.Writer) (code int, ok bool) {
	if len(args) == 0 {
		return 0, false
	}
	args = globalFlagsLast(args)
	switch args[0] {
	case "analyze":
		return analyzeCommand(args[1:], stdout, stderr), true
	case "config":
		return configCommand(args[1:], stdout, stderr), true
	case "certs": // dump.go
		return certsCommand(args[1:], stdout, stderr), true
	case "conns": // conns.go
		return connsCommand(args[1:], stdout, stderr), true
	case "top": // top.go
		return topCommand(args[1:], stdout, stderr), true
	case "services": // services.go
		return servicesCommand(args[1:], stdout, stderr), true
	case "flows": // flows.go; without --offload, run reads the flow map
		if hasFlag(args[1:], "offload") {
			return offloadFlowsCommand(args[1:], stdout, stderr), true
		}
	}
	return 0, false
}

// globalFlagsLast rewrites "fibctl --node N [-o F] certs ...",
// "fibctl --node N [-o F] config dump ..." and "fibctl --node N [-o F]
// flows --offload ..." (the global flags' place for the FIB commands) as
// "fibctl certs --node N [-o F] ...": those commands read the agent's
// admin API and take the flags themselves. Any other
// command line is returned as it is.
func globalFlagsLast(args []string) []string {
	fs := flag.NewFlagSet("fibctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	node := fs.String("node", "", "")
	format := fs.String("o", "", "")
	if err := fs.Parse(args); err != nil || fs.NArg() == 0 || (*node == "" && *format == "") {
		return args
	}
	var flags []string
	if *node != "" {
		flags = append(flags, "--node", *node)
	}
	if *format != "" {
		flags = append(flags, "-o", *format)
	}
	rest := fs.Args()
	switch {
	case rest[0] == "certs" || rest[0] == "conns" || rest[0] == "top" || rest[0] == "services" || (rest[0] == "flows" && hasFlag(rest[1:], "offload")):
		return append(append([]string{rest[0]}, flags...), rest[1:]...)
	case rest[0] == "config" && len(rest) > 1 && rest[1] == "dump":
		return append(append([]string{"config", "dump"}, flags...), rest[2:]...)
	}
	return args
}

// configCommands lists config's subcommands for usage errors.
const configCommands = "status or dump"

// configCommand is fibctl config SUBCOMMAND: it returns the exit status.
func configCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintf(stderr, "fibctl config: missing subcommand: want %s, e.g. fibctl config status (see fibctl --help)\n", configCommands)
		return 2
	}
	switch args[0] {
	case "status":
		return configStatus(args[1:], stdout, stderr)
	case "dump": // dump.go
		return configDump(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprintf(stdout, "Usage:\n  fibctl config status [--controller URL] [-o table|json|yaml] [NODE]\n  fibctl config dump [--node NETNS] [-o table|json|yaml] [TYPE]\n\nSee fibctl config status --help, fibctl config dump --help.\n")
		return 0
	}
	fmt.Fprintf(stderr, "fibctl config: unknown subcommand %q: want %s (see fibctl --help)\n", args[0], configCommands)
	return 2
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg + " (see fibctl --help)" }

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("fibctl", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	node := fs.String("node", "", "node whose FIB to read (its pin directory is "+fib.DefaultPinRoot+"/NODE)")
	pinDir := fs.String("pin-dir", "", "the FIB's bpffs pin directory (overrides --node)")
	formatName := fs.String("o", string(output.Table), output.FlagUsage)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	format, err := output.Parse(*formatName)
	if err != nil {
		return usageError{err.Error()}
	}
	if fs.NArg() == 0 {
		return usageError{"missing command: want " + commands}
	}
	// Check the whole command line before touching the FIB, so a typo is
	// reported as such and not as "no FIB pinned".
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	var pc policyCmd
	switch cmd {
	case "fib", "routes", "flows", "stats", "attached":
	case "nic":
		// The interfaces of this namespace, not a node's FIB.
		if *node != "" || *pinDir != "" {
			return usageError{"nic reads the interfaces of the current network namespace: it takes no --node or --pin-dir (run it in the node's namespace: nsenter --net=/run/netns/NODE fibctl nic)"}
		}
		ifname, f, err := parseNIC(rest, format)
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(out, nicUsage)
			fmt.Fprintln(out, "  -o string\n    \toutput format: table, json or yaml (default \"table\")")
			return err
		}
		if err != nil {
			return err
		}
		return nicCommand(out, f, ifname)
	case "policy":
		var err error
		if pc, err = parsePolicy(rest); err != nil {
			return err
		}
	default:
		return usageError{fmt.Sprintf("unknown command %q: want %s", cmd, commands)}
	}
	dir := *pinDir
	if dir == "" {
		if *node == "" {
			return usageError{"say which node: --node NAME or --pin-dir DIR"}
		}
		dir = filepath.Join(fib.DefaultPinRoot, *node)
	}
	// Open the FIB for every command, attached too: a missing FIB (a
	// mistyped --node) must say so rather than list no interfaces.
	f, err := fib.OpenPinned(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	switch cmd {
	case "attached":
		ifs, err := fib.Attached(dir)
		if err != nil {
			return err
		}
		if ifs == nil {
			ifs = []string{} // JSON [] like the other lists, not null
		}
		return output.Write(out, format, ifs, func(w io.Writer) {
			fmt.Fprintln(w, "INTERFACE")
			for _, i := range ifs {
				fmt.Fprintln(w, i)
			}
		})
	case "fib", "routes":
		return showRoutes(out, format, f)
	case "flows":
		return showFlows(out, format, f)
	case "stats":
		return showStats(out, format, f)
	case "policy":
		return policy(out, format, f, pc)
	}
	panic("unreachable: command " + cmd + " was checked above")
}

// commands lists the commands for usage errors.
const commands = "fib, flows, stats, policy, attached or nic"

type routeOut struct {
	Prefix  string `json:"prefix"`
	Ifindex int    `json:"ifindex"`
	Ifname  string `json:"ifname,omitempty"`
	SrcMAC  string `json:"srcMAC"`
	DstMAC  string `json:"dstMAC"`
	PuntNew bool   `json:"puntNew"`
}

func showRoutes(out io.Writer, format output.Format, f *fib.FIB) error {
	rs, err := f.Routes.List()
	if err != nil {
		return err
	}
	rows := make([]routeOut, len(rs))
	for i, r := range rs {
		rows[i] = routeOut{Prefix: r.Prefix.String(), Ifindex: r.NextHop.Ifindex, SrcMAC: r.NextHop.SrcMAC.String(), DstMAC: r.NextHop.DstMAC.String(), PuntNew: r.NextHop.PuntNew}
	}
	return output.Write(out, format, rows, func(w io.Writer) {
		fmt.Fprintln(w, "PREFIX\tIFINDEX\tSRC MAC\tDST MAC\tFLAGS")
		for _, r := range rows {
			flags := "-"
			if r.PuntNew {
				flags = "punt-new"
			}
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\n", r.Prefix, r.Ifindex, r.SrcMAC, r.DstMAC, flags)
		}
	})
}

type flowOut struct {
	Proto  string `json:"proto"`
	Src    string `json:"src"`
	Dst    string `json:"dst"`
	Action string `json:"action"`
	// NAT is a service flow's translation: "dnat 10.1.0.7:53" (the way
	// out, to its backend) or "snat 10.96.0.10:53" (the way back).
	NAT     string `json:"nat,omitempty"`
	SrcID   uint32 `json:"srcID"`
	DstID   uint32 `json:"dstID"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
	IdleMs  int64  `json:"idleMs"`
}

func showFlows(out io.Writer, format output.Format, f *fib.FIB) error {
	fl, err := f.Flows.List()
	if err != nil {
		return err
	}
	now := monotonicNs()
	rows := make([]flowOut, len(fl))
	for i, e := range fl {
		idle := int64(-1)
		if e.Flow.LastSeenNs != 0 {
			idle = int64(now-e.Flow.LastSeenNs) / int64(time.Millisecond)
		}
		rows[i] = flowOut{
			Proto: e.Key.Proto.String(), Src: netip.AddrPortFrom(e.Key.Src, e.Key.SrcPort).String(),
			Dst: netip.AddrPortFrom(e.Key.Dst, e.Key.DstPort).String(), Action: e.Flow.Action.String(),
			SrcID: e.Flow.SrcID, DstID: e.Flow.DstID, Packets: e.Flow.Packets, Bytes: e.Flow.Bytes, IdleMs: idle,
		}
		if e.Flow.NATKind != fib.NATNone {
			rows[i].NAT = e.Flow.NATKind.String() + " " + e.Flow.NAT.String()
		}
	}
	return output.Write(out, format, rows, func(w io.Writer) {
		fmt.Fprintln(w, "PROTO\tSOURCE\tDESTINATION\tACTION\tNAT\tPACKETS\tBYTES\tIDLE")
		for _, r := range rows {
			idle := "never"
			if r.IdleMs >= 0 {
				idle = (time.Duration(r.IdleMs) * time.Millisecond).String()
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", r.Proto, r.Src, r.Dst, r.Action, cmp.Or(r.NAT, "-"), r.Packets, r.Bytes, idle)
		}
	})
}

func monotonicNs() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

type statOut struct {
	Reason  string `json:"reason"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

func showStats(out io.Writer, format output.Format, f *fib.FIB) error {
	cs, err := f.Stats.Read()
	if err != nil {
		return err
	}
	rows := make([]statOut, len(cs))
	for i, c := range cs {
		rows[i] = statOut{Reason: fib.Reason(i).String(), Packets: c.Packets, Bytes: c.Bytes}
	}
	return output.Write(out, format, rows, func(w io.Writer) {
		fmt.Fprintln(w, "REASON\tPACKETS\tBYTES")
		for _, r := range rows {
			fmt.Fprintf(w, "%s\t%d\t%d\n", r.Reason, r.Packets, r.Bytes)
		}
	})
}

type policyOut struct {
	Proto string `json:"proto"`
	Addr  string `json:"addr"`
	Port  uint16 `json:"port"`
	Mode  string `json:"mode"`
}

// policyCmd is a checked `policy` command line: list (verb ""), set or
// delete.
type policyCmd struct {
	verb string
	key  fib.PolicyKey
	mode fib.Mode
}

func parsePolicy(args []string) (policyCmd, error) {
	if len(args) == 0 {
		return policyCmd{}, nil
	}
	switch args[0] {
	case "set":
		if len(args) != 5 {
			return policyCmd{}, usageError{fmt.Sprintf("policy set takes IP PORT PROTO MODE, got %d arguments %q; e.g. policy set 10.200.2.11 8080 tcp STRICT", len(args)-1, args[1:])}
		}
		k, err := policyKey(args[1:4])
		if err != nil {
			return policyCmd{}, err
		}
		m, err := fib.ParseMode(args[4])
		if err != nil {
			return policyCmd{}, usageError{"MODE: " + err.Error()}
		}
		return policyCmd{verb: "set", key: k, mode: m}, nil
	case "delete":
		if len(args) != 4 {
			return policyCmd{}, usageError{fmt.Sprintf("policy delete takes IP PORT PROTO, got %d arguments %q; e.g. policy delete 10.200.2.11 8080 tcp", len(args)-1, args[1:])}
		}
		k, err := policyKey(args[1:4])
		if err != nil {
			return policyCmd{}, err
		}
		return policyCmd{verb: "delete", key: k}, nil
	}
	return policyCmd{}, usageError{fmt.Sprintf("policy: unknown subcommand %q: want set or delete", args[0])}
}

func policy(out io.Writer, format output.Format, f *fib.FIB, pc policyCmd) error {
	switch pc.verb {
	case "set":
		return f.Policy.Put(fib.PolicyEntry{Key: pc.key, Mode: pc.mode})
	case "delete":
		return f.Policy.Delete(pc.key)
	}
	ps, err := f.Policy.List()
	if err != nil {
		return err
	}
	rows := make([]policyOut, len(ps))
	for i, p := range ps {
		rows[i] = policyOut{Proto: p.Key.Proto.String(), Addr: p.Key.Addr.String(), Port: p.Key.Port, Mode: p.Mode.String()}
	}
	return output.Write(out, format, rows, func(w io.Writer) {
		fmt.Fprintln(w, "PROTO\tADDRESS\tPORT\tMODE")
		for _, r := range rows {
			fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", r.Proto, r.Addr, r.Port, r.Mode)
		}
	})
}

func policyKey(a []string) (fib.PolicyKey, error) {
	ip, err := netip.ParseAddr(a[0])
	if err != nil || !ip.Is4() {
		return fib.PolicyKey{}, usageError{fmt.Sprintf("IP %q: want an IPv4 address", a[0])}
	}
	port, err := strconv.ParseUint(a[1], 10, 16)
	if err != nil || port == 0 {
		return fib.PolicyKey{}, usageError{fmt.Sprintf("PORT %q: want 1-65535", a[1])}
	}
	proto, err := fib.ParseProto(a[2])
	if err != nil || proto == fib.ProtoICMP {
		return fib.PolicyKey{}, usageError{fmt.Sprintf("PROTO %q: want tcp or udp", strings.ToLower(a[2]))}
	}
	return fib.PolicyKey{Addr: ip, Port: uint16(port), Proto: proto}, nil
}
