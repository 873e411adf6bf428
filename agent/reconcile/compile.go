package reconcile

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	xdsapi "github.com/fibmesh/fibmesh/api/xds"
	"github.com/fibmesh/fibmesh/fastpath/fib"
)

// Intent is a route before it is resolved against the kernel.
type Intent struct {
	Prefix netip.Prefix
	// Pod is the local pod ("namespace/name") this /32 delivers to; empty
	// for a route to another node.
	Pod string
	// Via is the next hop of a remote route: the InternalIP of Node.
	Via  netip.Addr
	Node string
}

// Local reports whether the route delivers to a pod on this node.
func (i Intent) Local() bool { return i.Pod != "" }

// Pod is a pod of this node's flow table.
type Pod struct {
	Namespace, Name string
	IP              netip.Addr
	IdentityID      uint32
	// Identity is the SPIFFE ID of IdentityID ("" when the mesh table does
	// not name it).
	Identity string
	// Workload is the pod's workload as the controller names it
	// (LocalPod.workload); "" when it could not tell.
	Workload string
	// Labels are the pod's labels that Istio's metrics read
	// (LocalPod.labels, fibv1.WorkloadLabels); nil when it has none.
	// Shared with the Desired it belongs to: read only.
	Labels map[string]string
}

// Key is the pod's "namespace/name".
func (p Pod) Key() string { return p.Namespace + "/" + p.Name }

// Desired is what a node's FIB must hold, computed from its flow tables.
type Desired struct {
	Routes   map[netip.Prefix]Intent
	Policies map[fib.PolicyKey]fib.Mode
	// Pods are the node's local pods, by "namespace/name".
	Pods map[string]Pod
	// Identities maps the tables' identity ids to SPIFFE IDs.
	Identities map[uint32]string
	// MeshPods maps the IP of every pod in the mesh, on any node, to its
	// SPIFFE ID (from the mesh table's host routes): the slow path reaches
	// a pod called by its IP over mTLS and verifies it.
	MeshPods map[netip.Addr]string
	// Versions are the tables' version fields, by table name.
	Versions map[string]string
	// Services are the L4 service VIPs the FIB load-balances (services.go).
	Services map[fib.ServiceKey]Service
	// Punt are the local pods' UDP ports covered by L4 policy (punt.go),
	// with the policies that decide the flows XDP punts to them.
	Punt map[fib.PolicyKey][]L4Policy
}

// Compile checks node's flow tables (by xDS resource name: api/xds
// MeshTable, its shards and the node's own) and computes the FIB they describe. An
// error names the table, the field and the value, and says what is wanted:
// it is the NACK's reason, and nothing of the tables is used.
//
// Routes of the mesh table whose node is this node are skipped (its own
// pods are reached through their veths), as are IPv6 routes (the FIB
// routes IPv4; the kernel keeps IPv6). Overlapping prefixes (a node's pod
// CIDR and /32 routes to its pods) are separate LPM entries. Where the
// same prefix is listed twice, a local pod's /32 wins over a mesh route,
// and among mesh routes the first in the table's order wins.
func Compile(node string, tables map[string]*fibv1.FlowTable) (*Desired, error) {
	d := &Desired{
		Routes:     map[netip.Prefix]Intent{},
		Policies:   map[fib.PolicyKey]fib.Mode{},
		Pods:       map[string]Pod{},
		Identities: map[uint32]string{},
		MeshPods:   map[netip.Addr]string{},
		Versions:   map[string]string{},
		Services:   map[fib.ServiceKey]Service{},
		Punt:       map[fib.PolicyKey][]L4Policy{},
	}
	names := make([]string, 0, len(tables))
	for n := range tables {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		t := tables[name]
		if !xdsapi.IsMeshTable(name) && name != node {
			return nil, fmt.Errorf("flow table %q: not a table of node %s (want %q, its shards %q... or %q)", name, node, xdsapi.MeshTable, xdsapi.MeshShard(0), node)
		}
		d.Versions[name] = t.GetVersion()
		for i, id := range t.GetIdentities() {
			if id.GetId() == 0 {
				return nil, fmt.Errorf("flow table %q: identities[%d].id: 0 is reserved for \"no identity\"", name, i)
			}
			d.Identities[id.GetId()] = id.GetSpiffeId()
		}
		if err := compileServices(d, name, t); err != nil {
			return nil, err
		}
	}
	// The shared table and its shards (api/xds MeshShards), in name
	// order: together they are the shared table.
	for _, name := range names {
		if !xdsapi.IsMeshTable(name) {
			continue
		}
		mesh := tables[name]
		for i, r := range mesh.GetRoutes() {
			where := fmt.Sprintf("flow table %q: routes[%d]", name, i)
			p, err := netip.ParsePrefix(r.GetPrefix())
			if err != nil {
				return nil, fmt.Errorf("%s.prefix %q: want a CIDR like 10.200.2.0/24: %w", where, r.GetPrefix(), err)
			}
			if p != p.Masked() {
				return nil, fmt.Errorf("%s.prefix %q: host bits set: want %s", where, r.GetPrefix(), p.Masked())
			}
			via, err := netip.ParseAddr(r.GetNextHop())
			if err != nil {
				return nil, fmt.Errorf("%s.next_hop %q: want the node's InternalIP: %w", where, r.GetNextHop(), err)
			}
			if id := r.GetIdentityId(); id != 0 {
				spiffeID, ok := d.Identities[id]
				switch {
				case !p.IsSingleIP():
					return nil, fmt.Errorf("%s.identity_id %d: only a pod's host route (/32, /128) has an identity, not %s", where, id, p)
				case !ok:
					return nil, fmt.Errorf("%s.identity_id %d: not in the tables' identities", where, id)
				}
				d.MeshPods[p.Addr()] = spiffeID
			}
			if !p.Addr().Is4() {
				continue // the FIB routes IPv4
			}
			if !via.Is4() {
				return nil, fmt.Errorf("%s.next_hop %q: an IPv4 prefix needs an IPv4 next hop", where, r.GetNextHop())
			}
			if r.GetNode() == node {
				continue
			}
			if _, dup := d.Routes[p]; dup {
				continue
			}
			d.Routes[p] = Intent{Prefix: p, Via: via, Node: r.GetNode()}
		}
	}
	if own := tables[node]; own != nil {
		for i, lp := range own.GetLocalPods() {
			where := fmt.Sprintf("flow table %q: local_pods[%d] (%s/%s)", node, i, lp.GetNamespace(), lp.GetName())
			if lp.GetNamespace() == "" || lp.GetName() == "" {
				return nil, fmt.Errorf("%s: namespace and name are required", where)
			}
			ip, err := netip.ParseAddr(lp.GetIp())
			if err != nil {
				return nil, fmt.Errorf("%s.ip %q: want the pod's IPv4 address: %w", where, lp.GetIp(), err)
			}
			if !ip.Is4() {
				return nil, fmt.Errorf("%s.ip %q: the FIB routes IPv4 only", where, lp.GetIp())
			}
			if w := lp.GetWorkload(); w != "" && !isWorkloadName(w) {
				return nil, fmt.Errorf("%s.workload %q: want a workload name (at most 253 lowercase letters, digits, '-' and '.') or none", where, w)
			}
			labels, err := workloadLabels(lp.GetLabels())
			if err != nil {
				return nil, fmt.Errorf("%s.%w", where, err)
			}
			pod := Pod{Namespace: lp.GetNamespace(), Name: lp.GetName(), IP: ip, IdentityID: lp.GetIdentityId(), Identity: d.Identities[lp.GetIdentityId()],
				Workload: lp.GetWorkload(), Labels: labels}
			if prev, dup := d.Pods[pod.Key()]; dup {
				return nil, fmt.Errorf("%s: listed twice (also with ip %s)", where, prev.IP)
			}
			d.Pods[pod.Key()] = pod
			p := netip.PrefixFrom(ip, 32)
			if prev, dup := d.Routes[p]; dup && prev.Local() {
				return nil, fmt.Errorf("%s.ip %s: also the ip of local pod %s", where, ip, prev.Pod)
			}
			d.Routes[p] = Intent{Prefix: p, Pod: pod.Key(), Via: ip, Node: node}
		}
		for i, pp := range own.GetPortPolicies() {
			where := fmt.Sprintf("flow table %q: port_policies[%d]", node, i)
			k, m, err := policy(pp)
			if err != nil {
				return nil, fmt.Errorf("%s.%w", where, err)
			}
			d.Policies[k] = m
			ps, err := l4Policies(pp)
			if err != nil {
				return nil, fmt.Errorf("%s.%w", where, err)
			}
			if coversPort(ps) {
				d.Punt[k] = ps
			}
		}
	}
	return d, nil
}

// workloadLabels are the labels of a LocalPod the agent reads
// (fibv1.WorkloadLabels), checked: their values become metric labels and
// travel to peers in the tunnel's metadata header. A key it does not
// read is left out, not refused: a newer controller may send more.
func workloadLabels(in map[string]string) (map[string]string, error) {
	var out map[string]string
	for _, k := range fibv1.WorkloadLabels {
		v, ok := in[k]
		if !ok {
			continue
		}
		if !isLabelValue(v) {
			return nil, fmt.Errorf("labels[%q] %q: want a Kubernetes label value (at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit)", k, v)
		}
		if out == nil {
			out = make(map[string]string, len(fibv1.WorkloadLabels))
		}
		out[k] = v
	}
	return out, nil
}

// isLabelValue reports whether v is a valid Kubernetes label value
// (empty included).
func isLabelValue(v string) bool {
	if len(v) > 63 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && ((c != '-' && c != '_' && c != '.') || i == 0 || i == len(v)-1) {
			return false
		}
	}
	return true
}

// isWorkloadName reports whether w can be a Kubernetes object's name
// (a DNS-1123 subdomain's characters and length).
func isWorkloadName(w string) bool {
	if len(w) > 253 {
		return false
	}
	for i := 0; i < len(w); i++ {
		c := w[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// protoOf maps a flow table's protocol to the FIB's.
func protoOf(p fibv1.Protocol) (fib.Proto, error) {
	switch p {
	case fibv1.Protocol_TCP:
		return fib.ProtoTCP, nil
	case fibv1.Protocol_UDP:
		return fib.ProtoUDP, nil
	}
	return 0, fmt.Errorf("protocol %s: want TCP or UDP", p)
}

func policy(pp *fibv1.PortPolicy) (fib.PolicyKey, fib.Mode, error) {
	ip, err := netip.ParseAddr(pp.GetIp())
	if err != nil || !ip.Is4() {
		return fib.PolicyKey{}, 0, fmt.Errorf("ip %q: want a local pod's IPv4 address", pp.GetIp())
	}
	if pp.GetPort() == 0 || pp.GetPort() > 65535 {
		return fib.PolicyKey{}, 0, fmt.Errorf("port %d: want 1-65535", pp.GetPort())
	}
	proto, err := protoOf(pp.GetProtocol())
	if err != nil {
		return fib.PolicyKey{}, 0, err
	}
	var mode fib.Mode
	switch pp.GetMode() {
	case fibv1.MTLSMode_PERMISSIVE:
		mode = fib.ModePermissive
	case fibv1.MTLSMode_STRICT:
		mode = fib.ModeStrict
	case fibv1.MTLSMode_DISABLE:
		mode = fib.ModeDisable
	default:
		return fib.PolicyKey{}, 0, fmt.Errorf("mode %s: want PERMISSIVE, STRICT or DISABLE", pp.GetMode())
	}
	return fib.PolicyKey{Addr: ip, Port: uint16(pp.GetPort()), Proto: proto}, mode, nil
}

// sortedPrefixes returns m's prefixes in address, then length, order.
func sortedPrefixes[V any](m map[netip.Prefix]V) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	return out
}
