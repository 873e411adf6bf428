// Package fds translates the controller's model into FDS, the flow table
// (fibmesh.fib.v1.FlowTable) that agents turn into their XDP FIB.
//
// The flow table is served as two kinds of FlowTable resource, so that
// what every node shares is sent once per change rather than copied into
// each node's table:
//
//   - "mesh" (MeshName): what is the same for every node: the route to
//     each node's pod CIDRs and a host route to each pod, via its node's
//     InternalIP, each marked with whether that node's NIC offloads kTLS
//     (Tables.WithNICTLS, from what its agent reported), the L4 service
//     VIPs with their weighted backends, and the identity ids. An agent
//     skips the routes to its own node.
//   - "<node>" (the Kubernetes node name, the xDS node.id): that node's
//     local pods and the mTLS mode of their ports; a UDP port also
//     carries the AuthorizationPolicies that apply to its pod (authz.go),
//     from which the agent decides the flows XDP punts to it. A pod
//     outside the mesh (model.Workload.OutsideMesh) is listed with no
//     identity (id 0) and its ports DISABLE, so XDP forwards plaintext
//     to it.
//
// An agent subscribes to the shared table's shards (the glob "mesh/*",
// api/xds MeshShardsGlob) and by name to its own node. Identity ids are
// stable across versions: an id is derived from the SPIFFE ID's hash, so
// adding one identity does not renumber the others (and so does not
// rewrite every table).
package fds

import (
	"cmp"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	xdsapi "github.com/fibmesh/fibmesh/api/xds"
	"github.com/fibmesh/fibmesh/controller/model"
)

// TypeURL is FDS's xDS resource type (the contract lives in api/xds).
const TypeURL = xdsapi.FlowTableType

// MeshName is the name of the FlowTable every node shares.
const MeshName = xdsapi.MeshTable

// Tables is the flow table of one model version.
type Tables struct {
	// Mesh is the shared table: routes, services, identities.
	Mesh *fibv1.FlowTable
	// Nodes are the per-node tables, by node name: local pods and port
	// policies. Every node of the model has one, even with no pods.
	Nodes map[string]*fibv1.FlowTable

	// shards caches Shards. WithServices sets it, sharing the shards its
	// change does not touch with the tables it started from.
	shardsOnce sync.Once
	shards     []*fibv1.FlowTable
}

// Build computes the flow table of m. Version fields are left empty: the
// server stamps a table with the model version in which its content last
// changed.
func Build(m *model.Model) *Tables {
	ids := identityIDs(m)
	t := &Tables{Mesh: &fibv1.FlowTable{Node: ""}, Nodes: make(map[string]*fibv1.FlowTable, len(m.Nodes))}
	t.Mesh.Routes = routes(m, ids)
	t.Mesh.Services = services(m, ids)
	t.Mesh.Identities = make([]*fibv1.Identity, 0, len(ids))
	for spiffe, id := range ids {
		t.Mesh.Identities = append(t.Mesh.Identities, &fibv1.Identity{Id: id, SpiffeId: spiffe})
	}
	slices.SortFunc(t.Mesh.Identities, func(a, b *fibv1.Identity) int { return cmp.Compare(a.Id, b.Id) })

	for _, n := range m.Nodes {
		t.Nodes[n.Name] = &fibv1.FlowTable{Node: n.Name}
	}
	ports := workloadPorts(m)
	for _, w := range m.Workloads {
		if w.Node == "" || w.IP == "" {
			continue
		}
		nt, ok := t.Nodes[w.Node]
		if !ok { // a pod on a node the model has no Node object for
			nt = &fibv1.FlowTable{Node: w.Node}
			t.Nodes[w.Node] = nt
		}
		key := w.Namespace + "/" + w.Name
		nt.LocalPods = append(nt.LocalPods, localPod(w, ids[w.Identity]))
		var udpAuthz []*fibv1.AuthzPolicy // made once per workload, shared by its UDP ports
		udpAuthzMade := false
		for _, p := range ports[key] {
			pp := &fibv1.PortPolicy{Ip: w.IP, Port: p.port, Protocol: p.proto, Mode: mode(w.MTLSMode(p.port))}
			if p.proto == fibv1.Protocol_UDP {
				if !udpAuthzMade {
					udpAuthz, udpAuthzMade = authz(m, w), true
				}
				pp.Authz = udpAuthz
			}
			nt.PortPolicies = append(nt.PortPolicies, pp)
		}
	}
	for _, nt := range t.Nodes {
		slices.SortFunc(nt.LocalPods, func(a, b *fibv1.LocalPod) int {
			return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
		})
		slices.SortFunc(nt.PortPolicies, func(a, b *fibv1.PortPolicy) int {
			return cmp.Or(strings.Compare(a.Ip, b.Ip), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol))
		})
	}
	return t
}

// routes are every node's pod CIDRs via its InternalIP, then a /32 host
// route to every pod with an IP via its node's InternalIP, inside its
// node's CIDRs or not. The host routes make the FIB know which remote
// addresses are live pods (a packet to an address no pod holds is left to
// the kernel rather than sent across the fabric), and a pod added or
// removed is visible in every node's FIB; the CIDR routes stay for
// packets to pods whose IP the controller has not seen yet. A host route
// names the pod's identity (identity_id) when the pod is in the mesh, so
// that a peer called by its IP is reached over mTLS and verified; 0 for
// a pod outside the mesh (it takes plaintext) and for CIDR routes.
func routes(m *model.Model, ids map[string]uint32) []*fibv1.Route {
	var out []*fibv1.Route
	nextHop := map[string]string{}
	for _, n := range m.Nodes {
		if n.InternalIP == "" {
			continue
		}
		nextHop[n.Name] = n.InternalIP
		for _, c := range n.PodCIDRs {
			p, err := netip.ParsePrefix(c)
			if err != nil {
				continue // validated by the model; analyze reports bad CIDRs
			}
			out = append(out, &fibv1.Route{Prefix: p.Masked().String(), NextHop: n.InternalIP, Node: n.Name})
		}
	}
	for _, w := range m.Workloads {
		hop, ok := nextHop[w.Node]
		if !ok || w.IP == "" {
			continue
		}
		a, err := netip.ParseAddr(w.IP)
		if err != nil || !a.Is4() {
			continue
		}
		out = append(out, &fibv1.Route{Prefix: netip.PrefixFrom(a, 32).String(), NextHop: hop, Node: w.Node, IdentityId: ids[w.Identity]})
	}
	slices.SortFunc(out, func(a, b *fibv1.Route) int {
		return cmp.Or(strings.Compare(a.Prefix, b.Prefix), strings.Compare(a.Node, b.Node))
	})
	return slices.CompactFunc(out, func(a, b *fibv1.Route) bool { return a.Prefix == b.Prefix && a.Node == b.Node })
}

// services are the L4 VIPs: one entry per VIP and port of every service
// that has VIPs, with its ready endpoints as equal-weight backends.
func services(m *model.Model, ids map[string]uint32) []*fibv1.ServiceVIP {
	var out []*fibv1.ServiceVIP
	for _, s := range m.Services {
		for _, vip := range s.VIPs {
			a, err := netip.ParseAddr(vip)
			if err != nil || !a.Is4() {
				continue // the FIB is IPv4
			}
			for _, p := range s.Ports {
				v := &fibv1.ServiceVIP{Hostname: s.Hostname, Vip: vip, Port: uint32(p.Port), Protocol: l4(p.Protocol)}
				for _, e := range s.Endpoints {
					if !e.Ready {
						continue
					}
					id := ids[e.Identity]
					if e.Workload == "" && m.EndpointMTLSMode(s, e, uint32(e.PortFor(p))) == model.ModeDisable {
						id = 0 // not a mesh pod, not MESH_INTERNAL: plaintext, as in CDS
					}
					v.Backends = append(v.Backends, &fibv1.Backend{
						Ip: e.Address, Port: uint32(e.PortFor(p)), Weight: 1, Node: e.Node, IdentityId: id,
					})
				}
				out = append(out, v)
			}
		}
	}
	slices.SortStableFunc(out, func(a, b *fibv1.ServiceVIP) int {
		return cmp.Or(strings.Compare(a.Vip, b.Vip), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol))
	})
	// Two ServiceEntries may declare the same address and port: the
	// first (by hostname, the model's order) wins, as in Istio.
	return slices.CompactFunc(out, func(a, b *fibv1.ServiceVIP) bool {
		return a.Vip == b.Vip && a.Port == b.Port && a.Protocol == b.Protocol
	})
}

type portProto struct {
	port  uint32
	proto fibv1.Protocol
}

// workloadPorts are the ports each workload serves ("namespace/name" →
// ports): the target ports of the services it backs, and the ports a
// PeerAuthentication names for it.
func workloadPorts(m *model.Model) map[string][]portProto {
	out := map[string][]portProto{}
	for _, s := range m.Services {
		for _, e := range s.Endpoints {
			if e.Workload == "" {
				continue
			}
			for _, p := range s.Ports {
				out[e.Workload] = append(out[e.Workload], portProto{uint32(e.PortFor(p)), l4(p.Protocol)})
			}
		}
	}
	for _, w := range m.Workloads {
		key := w.Namespace + "/" + w.Name
		for port := range w.PortModes {
			out[key] = append(out[key], portProto{port, fibv1.Protocol_TCP})
		}
	}
	for k, ps := range out {
		slices.SortFunc(ps, func(a, b portProto) int { return cmp.Or(cmp.Compare(a.port, b.port), cmp.Compare(a.proto, b.proto)) })
		out[k] = slices.Compact(ps)
	}
	return out
}

func l4(p model.Protocol) fibv1.Protocol {
	if p == model.ProtocolUDP {
		return fibv1.Protocol_UDP
	}
	return fibv1.Protocol_TCP
}

func mode(m model.Mode) fibv1.MTLSMode {
	switch m {
	case model.ModeStrict:
		return fibv1.MTLSMode_STRICT
	case model.ModeDisable:
		return fibv1.MTLSMode_DISABLE
	default:
		return fibv1.MTLSMode_PERMISSIVE
	}
}

// identityIDs numbers every SPIFFE ID of the model's workloads and
// endpoints: FNV-1a of the ID, never 0 (0 means "no identity"), and on a
// collision the next free value, taking IDs in sorted order so the result
// is deterministic.
func identityIDs(m *model.Model) map[string]uint32 {
	var all []string
	for _, w := range m.Workloads {
		if w.Identity != "" {
			all = append(all, w.Identity)
		}
	}
	for _, s := range m.Services {
		for _, e := range s.Endpoints {
			if e.Identity != "" {
				all = append(all, e.Identity)
			}
		}
	}
	slices.Sort(all)
	all = slices.Compact(all)
	ids := make(map[string]uint32, len(all))
	used := make(map[uint32]bool, len(all))
	for _, s := range all {
		id := IdentityID(s)
		for used[id] || id == 0 {
			id++
		}
		used[id] = true
		ids[s] = id
	}
	return ids
}

// IdentityID is the preferred id of a SPIFFE ID: its 32-bit FNV-1a hash
// (a collision in one model moves the later ID, in sorted order, to the
// next free value).
func IdentityID(spiffeID string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(spiffeID))
	return h.Sum32()
}

// WithNICTLS returns t with every route's nic_tls_offload set from nics
// (node name → whether its agent reported that its NIC offloads kTLS;
// a node missing is false). Routes already right are shared with t, and
// t itself is returned when none changes, so that a table whose content
// did not change keeps its hash. t is not modified.
func (t *Tables) WithNICTLS(nics map[string]bool) *Tables {
	routes := t.Mesh.GetRoutes()
	var out []*fibv1.Route
	for i, r := range routes {
		want := nics[r.GetNode()]
		if r.GetNicTlsOffload() == want {
			if out != nil {
				out[i] = r
			}
			continue
		}
		if out == nil {
			out = make([]*fibv1.Route, len(routes))
			copy(out, routes[:i])
		}
		c := proto.CloneOf(r)
		c.NicTlsOffload = want
		out[i] = c
	}
	if out == nil {
		return t
	}
	mesh := &fibv1.FlowTable{Node: t.Mesh.GetNode(), Routes: out, Services: t.Mesh.GetServices(), Identities: t.Mesh.GetIdentities()}
	return &Tables{Mesh: mesh, Nodes: t.Nodes}
}

// Shards splits the shared table into the shards agents subscribe to
// (api/xds MeshShardNames, in that order): each route goes to the route
// shard of its prefix, each identity to the route shard of its SPIFFE
// ID, each service VIP to the service shard of its hostname, keeping the
// table's order. A shard's Node is its name. A readiness flip then
// changes the one service shard of its service. The shards share the
// table's messages: neither may be modified.
//
// The shards are computed once per Tables; tables made by WithServices
// share the shards its change does not touch with the tables it started
// from (the same messages), so that the server hashes and sends only the
// shards that changed.
func (t *Tables) Shards() []*fibv1.FlowTable {
	t.shardsOnce.Do(func() {
		if t.shards == nil {
			t.shards = t.split()
		}
	})
	return t.shards
}

// KeepShard replaces shard i of t by sh, a table of the same content (the
// one the server pushed before), so that t and the tables derived from it
// by WithServices hold the pushed message, which the server skips by
// identity. It is for the one goroutine that pushes t.
func (t *Tables) KeepShard(i int, sh *fibv1.FlowTable) {
	t.Shards()[i] = sh
}

// split computes the shards of t.Mesh.
func (t *Tables) split() []*fibv1.FlowTable {
	out := make([]*fibv1.FlowTable, xdsapi.MeshShards+xdsapi.MeshServiceShards)
	for i, name := range xdsapi.MeshShardNames() {
		out[i] = &fibv1.FlowTable{Node: name}
	}
	for _, r := range t.Mesh.GetRoutes() {
		sh := out[xdsapi.MeshShardOf(r.GetPrefix())]
		sh.Routes = append(sh.Routes, r)
	}
	for _, id := range t.Mesh.GetIdentities() {
		sh := out[xdsapi.MeshShardOf(id.GetSpiffeId())]
		sh.Identities = append(sh.Identities, id)
	}
	for _, v := range t.Mesh.GetServices() {
		sh := out[xdsapi.MeshShards+xdsapi.MeshServiceShardOf(v.GetHostname())]
		sh.Services = append(sh.Services, v)
	}
	return out
}

// WithServices returns the tables of m for a change of the services of
// hosts alone, whose endpoints' readiness is all that changed since t was
// built: t's tables with those hosts' VIPs built again, the rest shared
// with t. ok is false when the result could differ from Build(m) (a
// changed host's VIP and port also belong to another service, where
// Build keeps the first by hostname): call Build then.
func (t *Tables) WithServices(m *model.Model, hosts map[string]bool) (out *Tables, ok bool) {
	ids := make(map[string]uint32, len(t.Mesh.GetIdentities()))
	for _, id := range t.Mesh.GetIdentities() {
		ids[id.GetSpiffeId()] = id.GetId()
	}
	sub := *m
	sub.Services = slices.DeleteFunc(slices.Clone(m.Services), func(s *model.Service) bool { return !hosts[s.Hostname] })
	for _, s := range sub.Services {
		for _, e := range s.Endpoints {
			if _, known := ids[e.Identity]; e.Identity != "" && !known {
				return nil, false // a new identity: ids are numbered over the whole model
			}
		}
	}
	fresh := services(&sub, ids)
	type key struct {
		vip   string
		port  uint32
		proto fibv1.Protocol
	}
	taken := map[key]bool{}
	kept := make([]*fibv1.ServiceVIP, 0, len(t.Mesh.GetServices())+len(fresh))
	for _, v := range t.Mesh.GetServices() {
		if hosts[v.GetHostname()] {
			continue
		}
		taken[key{v.GetVip(), v.GetPort(), v.GetProtocol()}] = true
		kept = append(kept, v)
	}
	for _, v := range fresh {
		if taken[key{v.GetVip(), v.GetPort(), v.GetProtocol()}] {
			return nil, false
		}
	}
	kept = append(kept, fresh...)
	slices.SortStableFunc(kept, func(a, b *fibv1.ServiceVIP) int {
		return cmp.Or(strings.Compare(a.Vip, b.Vip), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol))
	})
	mesh := &fibv1.FlowTable{Node: t.Mesh.GetNode(), Routes: t.Mesh.GetRoutes(), Services: kept, Identities: t.Mesh.GetIdentities()}
	out = &Tables{Mesh: mesh, Nodes: t.Nodes}
	// Only the shards of the changed hosts' VIPs differ: the others are
	// t's (the same messages).
	touched := make(map[int]bool, len(hosts))
	for h := range hosts {
		touched[xdsapi.MeshServiceShardOf(h)] = true
	}
	out.shards = slices.Clone(t.Shards())
	for i := range touched {
		sh := &fibv1.FlowTable{Node: xdsapi.MeshServiceShard(i)}
		for _, v := range kept {
			if xdsapi.MeshServiceShardOf(v.GetHostname()) == i {
				sh.Services = append(sh.Services, v)
			}
		}
		out.shards[xdsapi.MeshShards+i] = sh
	}
	return out, true
}
