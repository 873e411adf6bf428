package fibbench

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/fastpath/maglev"
	"github.com/fibmesh/fibmesh/internal/quantile"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/perf/xdpgen"
)

// The VIP measurement's shape.
const (
	maxServices = 50_000
	svcPort     = 53 // the ClusterIP's port; backends listen on sinkPort
	// The generator's source ports: every packet takes the next one, so
	// a port comes back after srcPorts packets. With conntrack's UDP
	// timeout at conntrackUDPTimeout in node1, that is a new conntrack
	// entry per packet as long as the rate stays below srcPorts per
	// timeout (with a tenth to spare).
	srcPortFirst        = 1024
	srcPorts            = 65536 - srcPortFirst
	conntrackUDPTimeout = time.Second
	maxServiceRate      = srcPorts * 9 / 10
)

// clusterCIDR is the lab's pod range, kube-proxy's --cluster-cidr.
var clusterCIDR = netip.MustParsePrefix("10.200.0.0/16")

// firstVIP is the first service's ClusterIP; service i has firstVIP+i.
var firstVIP = netip.MustParseAddr("10.96.0.10")

// ServiceReport is the VIP measurement for one service count.
type ServiceReport struct {
	Services int          `json:"services"`
	VIP      string       `json:"vip"` // the measured one: the last in KUBE-SERVICES
	Rate     float64      `json:"ratePps"`
	Cost     []CostSample `json:"costSamples"`
	// Medians over the rounds, each net of its round's baseline: by
	// Clock, and by each clock.
	Clock             string  `json:"clock"`
	XDPNs             float64 `json:"xdpNsPerPkt"`
	IPTablesNs        float64 `json:"iptablesNsPerPkt"`
	CostRatio         float64 `json:"costRatio"`        // IPTablesNs / XDPNs
	BaselineNs        float64 `json:"baselineNsPerPkt"` // gross, of the baseline path (machine)
	MachineXDPNs      float64 `json:"machineXdpNsPerPkt"`
	MachineIPTablesNs float64 `json:"machineIptablesNsPerPkt"`
	AttribXDPNs       float64 `json:"attributedXdpNsPerPkt"`
	AttribIPTablesNs  float64 `json:"attributedIptablesNsPerPkt"`
	OtherCPU          float64 `json:"otherCpu"` // as in Report
	// With Options.Established: the same for one flow's later packets
	// (a fixed 5-tuple: a flow-table hit in the FIB, a conntrack hit in
	// iptables, no nat rule), by Clock.
	EstablishedXDPNs      float64 `json:"establishedXdpNsPerPkt,omitempty"`
	EstablishedIPTablesNs float64 `json:"establishedIptablesNsPerPkt,omitempty"`
	// FIBProgNs is node1's FIB program's own ns per run (BPF stats):
	// the VIP lookup, the Maglev pick, the two flow entries, the DNAT.
	FIBProgNs float64 `json:"fibNode1ProgNsPerRun"`
	// Set-up times: iptables-restore of kube-proxy's rules, and loading
	// the FIBs with node1's Services.Put of every service.
	IPTablesLoadSeconds float64 `json:"iptablesRestoreSeconds"`
	FIBPutSeconds       float64 `json:"fibPutSeconds"`
}

// Line is the VIP summary line, named name.
func (s ServiceReport) Line(name string) string {
	return fmt.Sprintf("%s: services=%d xdp_ns_per_pkt=%.0f iptables_ns_per_pkt=%.0f cost_ratio=%.2f", name, s.Services, s.XDPNs, s.IPTablesNs, s.CostRatio)
}

// benchServices returns n UDP services, each a ClusterIP on port
// svcPort with the same two backends.
func benchServices(n int, backends []*lab.Pod) []kpService {
	svcs := make([]kpService, n)
	vip := firstVIP
	for i := range svcs {
		svcs[i] = kpService{Namespace: "bench", Name: fmt.Sprintf("svc-%05d", i+1), PortName: "dns", VIP: vip, Port: svcPort, Proto: "udp"}
		for _, p := range backends {
			svcs[i].Endpoints = append(svcs[i].Endpoints, netip.AddrPortFrom(p.IP, sinkPort))
		}
		vip = vip.Next()
	}
	return svcs
}

// maglevTable returns the lookup table of a service with eps.
func maglevTable(eps []netip.AddrPort) ([]fib.Backend, error) {
	m, err := maglev.Size(len(eps))
	if err != nil {
		return nil, err
	}
	bs := make([]maglev.Backend, len(eps))
	for i, ep := range eps {
		bs[i] = maglev.Backend{Name: ep.String(), Weight: 1}
	}
	slots, err := maglev.Build(bs, m)
	if err != nil {
		return nil, err
	}
	table := make([]fib.Backend, len(slots))
	for i, j := range slots {
		table[i] = fib.Backend{Addr: eps[j].Addr(), Port: eps[j].Port()}
	}
	return table, nil
}

// putServices installs svcs in f's service map, as the agent does.
func putServices(f *fib.FIB, svcs []kpService) error {
	var table []fib.Backend
	for i, s := range svcs {
		if i == 0 {
			t, err := maglevTable(s.Endpoints)
			if err != nil {
				return fmt.Errorf("maglev table of %s: %w", s.portName(), err)
			}
			table = t // every service has the same backends
		}
		if err := f.Services.Put(fib.ServiceKey{VIP: s.VIP, Port: s.Port, Proto: fib.ProtoUDP}, table); err != nil {
			return fmt.Errorf("service %s (%s:%d): %w", s.portName(), s.VIP, s.Port, err)
		}
	}
	return nil
}

// iptablesRestore loads rules into netns with Debian's iptables-restore
// (whatever backend /usr/sbin/iptables-restore is: nft on Debian 12).
func iptablesRestore(netns, rules string) error {
	cmd := exec.Command("nsenter", "--net="+lab.NetnsPath(netns), "iptables-restore", "-w")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		if _, lerr := exec.LookPath("iptables-restore"); lerr != nil {
			return fmt.Errorf("iptables-restore not found: apt-get install iptables: %w", lerr)
		}
		return fmt.Errorf("iptables-restore in %s: %w: %s", netns, err, bytes.TrimSpace(out))
	}
	return nil
}

// emptyTables resets what kubeProxyRules loaded.
const emptyTables = "*filter\nCOMMIT\n*nat\nCOMMIT\n"

// setConntrackUDPTimeout sets conntrack's UDP timeout in netns (a
// per-namespace sysctl), so that an unanswered flow's entry is gone
// before its source port comes round again.
func setConntrackUDPTimeout(netns string, d time.Duration) error {
	return lab.InNetns(netns, func() error {
		v := strconv.Itoa(int(d / time.Second))
		if err := os.WriteFile("/proc/sys/net/netfilter/nf_conntrack_udp_timeout", []byte(v), 0o644); err != nil {
			return fmt.Errorf("conntrack UDP timeout in %s: %w", netns, err)
		}
		return nil
	})
}

// svcChainNewFlows returns how many packets node's KUBE-SVC chain sent
// on to its KUBE-SEP chains: nat rules see only a connection's first
// packet, so that is how many connections to the service conntrack
// opened.
func svcChainNewFlows(netns, chain string) (uint64, error) {
	out, err := exec.Command("nsenter", "--net="+lab.NetnsPath(netns), "iptables", "-w", "-t", "nat", "-L", chain, "-v", "-x", "-n").Output()
	if err != nil {
		return 0, fmt.Errorf("iptables -L %s in %s: %w", chain, netns, err)
	}
	return parseSEPPackets(string(out))
}

// parseSEPPackets sums the packet counts of the rules of an iptables -L
// -v -x -n listing whose target is a KUBE-SEP chain.
func parseSEPPackets(listing string) (uint64, error) {
	var n uint64
	for _, l := range strings.Split(listing, "\n") {
		f := strings.Fields(l)
		if len(f) < 3 || !strings.HasPrefix(f[2], "KUBE-SEP-") {
			continue
		}
		v, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("iptables listing %q: packets: %w", clip(l, 120), err)
		}
		n += v
	}
	return n, nil
}

// serviceCost measures the VIP path with n services: per round a
// baseline (the sink on node1-pod1's host veth, counting the VIP's
// packets), an xdp window (the FIB on both nodes, node1's service map
// holding the n services) and an iptables window (no FIB; node1 holds
// kube-proxy's rules for the n services), each net of the round's
// baseline. The generator sends to the last service's VIP, a new flow
// per packet.
func (b *bench) serviceCost(ctx context.Context, n int) (ServiceReport, error) {
	defer enableStats()()
	svcs := benchServices(n, b.dst)
	vip := svcs[n-1]
	sr := ServiceReport{Services: n, Rate: b.o.ServiceRate, VIP: netip.AddrPortFrom(vip.VIP, vip.Port).String()}
	node1 := b.nodes[0].Netns

	if b.gen != nil {
		b.gen.Close()
		b.gen = nil
	}
	frame := udpFrame(b.o.FrameSize, b.src.HostMAC, b.src.MAC, b.src.IP, vip.VIP, srcPortFirst, svcPort)
	g, err := newGen(b.src, frame)
	if err != nil {
		return sr, err
	}
	b.gen = g

	t := time.Now()
	if err := iptablesRestore(node1, kubeProxyRules(svcs, clusterCIDR)); err != nil {
		return sr, err
	}
	sr.IPTablesLoadSeconds = time.Since(t).Seconds()
	defer iptablesRestore(node1, emptyTables)
	if err := setConntrackUDPTimeout(node1, conntrackUDPTimeout); err != nil {
		return sr, err
	}
	fmt.Fprintf(b.o.Out, "services=%d: VIP %s (last of KUBE-SERVICES), iptables-restore of kube-proxy's rules took %.2fs\n", n, sr.VIP, sr.IPTablesLoadSeconds)

	run := xdpgen.RunOptions{Rate: b.o.ServiceRate, SrcPortFirst: srcPortFirst, SrcPorts: srcPorts}
	backends := func() (uint64, error) {
		var t uint64
		for _, s := range b.sinks {
			c, err := s.count()
			if err != nil {
				return 0, err
			}
			t += c
		}
		return t, nil
	}
	// The FIBs and their n services are loaded once (Services.Put of
	// 10,000 tables takes seconds) and attached only for the xdp
	// windows, each with an empty flow table.
	t = time.Now()
	fs, err := b.startFIB()
	if err != nil {
		return sr, err
	}
	defer fs.close()
	if err := putServices(fs.fibs[0], svcs); err != nil {
		return sr, err
	}
	sr.FIBPutSeconds = time.Since(t).Seconds()
	if err := fs.detach(); err != nil {
		return sr, err
	}
	fmt.Fprintf(b.o.Out, "services=%d: the FIBs loaded and node1's Services.Put of %d services took %.2fs\n", n, n, sr.FIBPutSeconds)
	modes := []string{"baseline", "xdp", "iptables"}
	if b.o.Established {
		modes = append(modes, "xdp-established", "iptables-established")
	}
	var base, other, prog []float64
	machine, attrib := map[string][]float64{}, map[string][]float64{}
	for r := 1; r <= b.o.CostRounds; r++ {
		got := map[string]CostSample{}
		for _, mode := range rotate(modes, r-1) {
			what := fmt.Sprintf("services=%d cost round %d %s", n, r, mode)
			s, err := b.sample(ctx, what, func() (window, func() error, error) {
				w := window{run: run, count: backends}
				if strings.HasSuffix(mode, "-established") {
					w.run.SrcPorts = 0 // one flow: its first packet in the warm-up
				}
				switch strings.TrimSuffix(mode, "-established") {
				case "baseline":
					s, err := sinkIn(node1, b.src.HostVeth, svcPort)
					if err != nil {
						return w, nil, err
					}
					w.count = s.count
					return w, s.Close, nil
				case "xdp":
					if err := fs.attach(); err != nil {
						return w, nil, err
					}
					w.fibs = fs
					w.newFlows = func() (uint64, error) {
						cs, err := fs.fibs[0].Stats.Read()
						if err != nil {
							return 0, err
						}
						return cs[fib.ReasonServiceNewFlow].Packets, nil
					}
					return w, fs.detach, nil
				default: // iptables
					chain := kpSvcChain(vip)
					w.newFlows = func() (uint64, error) { return svcChainNewFlows(node1, chain) }
					return w, func() error { return nil }, nil
				}
			})
			if err != nil {
				return sr, fmt.Errorf("%s: %w", what, err)
			}
			s.Round, s.Mode, s.Services = r, mode, n
			got[mode] = s
		}
		for _, mode := range modes {
			s := got[mode]
			if mode == "baseline" {
				base = append(base, s.NsPerPkt)
				other = append(other, s.otherCPU())
			} else {
				s.NetNsPerPkt = s.NsPerPkt - got["baseline"].NsPerPkt
				s.AttribNetNsPerPkt = s.AttribNsPerPkt - got["baseline"].AttribNsPerPkt
				machine[mode] = append(machine[mode], s.NetNsPerPkt)
				attrib[mode] = append(attrib[mode], s.AttribNetNsPerPkt)
			}
			if mode == "xdp" && len(s.FIBNsPerRun) > 0 {
				prog = append(prog, s.FIBNsPerRun[0])
			}
			sr.Cost = append(sr.Cost, s)
			fmt.Fprintf(b.o.Out, "services=%d cost round %d %s\n", n, r, costNote(s))
		}
	}
	med := func(mode string) float64 {
		if b.o.Clock == ClockAttributed {
			return quantile.Median(attrib[mode])
		}
		return quantile.Median(machine[mode])
	}
	sr.Clock = b.o.Clock
	sr.BaselineNs = quantile.Median(base)
	sr.MachineXDPNs, sr.MachineIPTablesNs = quantile.Median(machine["xdp"]), quantile.Median(machine["iptables"])
	sr.AttribXDPNs, sr.AttribIPTablesNs = quantile.Median(attrib["xdp"]), quantile.Median(attrib["iptables"])
	sr.OtherCPU = quantile.Median(other)
	sr.XDPNs, sr.IPTablesNs = med("xdp"), med("iptables")
	sr.CostRatio = ratio(sr.IPTablesNs, sr.XDPNs)
	if b.o.Established {
		sr.EstablishedXDPNs, sr.EstablishedIPTablesNs = med("xdp-established"), med("iptables-established")
	}
	sr.FIBProgNs = quantile.Median(prog)
	return sr, nil
}
