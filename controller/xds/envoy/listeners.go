package envoy

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/fibmesh/fibmesh/controller/model"
)

// outboundListener is the capture listener: one filter chain per
// service VIP and port, matched on the original destination. HTTP-family
// ports go to the HTTP connection manager with the port's routes over
// RDS; the others to tcp_proxy, with more chains where the host's
// VirtualService has tcp or tls rules for the port (l4Chains). Services
// without a VIP (headless Services, ServiceEntries without addresses)
// have no chain but those of their tls rules (matched on port and SNI):
// their traffic, like any destination the mesh does not know, takes the
// default chain to OutboundPassthroughCluster. It returns the HTTP
// ports that got a chain, whose routes RDS must serve.
func (b *builder) outboundListener(ix *index) (*listenerv3.Listener, []hostPort, error) {
	httpFilters := []*hcmv3.HttpFilter{
		{Name: wkFault, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: b.any(&faultv3.HTTPFault{})}},
		b.routerFilter(),
	}
	l := &listenerv3.Listener{
		Name:             OutboundListener,
		Address:          socketAddress("0.0.0.0", OutboundPort),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		ListenerFilters:  b.originalDst(),
		DefaultFilterChain: &listenerv3.FilterChain{
			Name:    OutboundPassthroughCluster,
			Filters: []*listenerv3.Filter{b.tcpProxy(OutboundPassthroughCluster, OutboundPassthroughCluster)},
		},
	}
	type vipPort struct {
		vip  netip.Addr
		port uint32
	}
	seen := map[vipPort]bool{}
	seenSNI := map[string]bool{} // "<port>|<server name>" of chains without a VIP
	var sniPorts []uint32        // ports with chains matching on SNI
	var served []hostPort
	for _, svc := range ix.services {
		first := len(l.FilterChains)
		for _, p := range svc.Ports {
			if p.Protocol == model.ProtocolUDP {
				continue
			}
			pn, chained := uint32(p.Port), false
			if len(svc.VIPs) == 0 && !httpFamily(p.Protocol) {
				// Only tls rules make chains without a VIP; the first
				// service by hostname keeps a port and server name.
				fcs, sni, err := b.l4Chains(ix, svc, p, netip.Addr{})
				if err != nil {
					return nil, nil, err
				}
				key := func(fc *listenerv3.FilterChain) string { return port(pn) + "|" + fc.FilterChainMatch.ServerNames[0] }
				for _, fc := range fcs {
					if !seenSNI[key(fc)] {
						l.FilterChains = append(l.FilterChains, fc)
					}
				}
				for _, fc := range fcs {
					seenSNI[key(fc)] = true
				}
				if sni {
					sniPorts = append(sniPorts, pn)
				}
			}
			for _, v := range svc.VIPs {
				vip, err := netip.ParseAddr(v)
				if err != nil || seen[vipPort{vip, pn}] {
					continue // analyze reports bad and shared VIPs; the first service keeps its chain
				}
				seen[vipPort{vip, pn}], chained = true, true
				if !httpFamily(p.Protocol) {
					fcs, sni, err := b.l4Chains(ix, svc, p, vip)
					if err != nil {
						return nil, nil, err
					}
					l.FilterChains = append(l.FilterChains, fcs...)
					if sni {
						sniPorts = append(sniPorts, pn)
					}
					continue
				}
				l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
					Name: vip.String() + "_" + port(pn),
					FilterChainMatch: &listenerv3.FilterChainMatch{
						PrefixRanges:    []*corev3.CidrRange{hostRange(vip)},
						DestinationPort: wrapperspb.UInt32(pn),
					},
					Filters: []*listenerv3.Filter{b.hcm(&hcmv3.HttpConnectionManager{
						StatPrefix: "outbound_" + vip.String() + "_" + port(pn),
						RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
							ConfigSource: ads(), RouteConfigName: RouteName(svc.Hostname, pn),
						}},
						HttpFilters: httpFilters,
					})},
				})
			}
			if chained && httpFamily(p.Protocol) {
				served = append(served, hostPort{svc.Hostname, pn})
			}
		}
		if first < len(l.FilterChains) {
			meta := chainHostMetadata(svc.Hostname)
			for _, fc := range l.FilterChains[first:] {
				fc.Metadata = meta
			}
		}
	}
	if len(sniPorts) > 0 {
		slices.Sort(sniPorts)
		l.ListenerFilters = append(l.ListenerFilters, b.tlsInspector(slices.Compact(sniPorts)))
	}
	return l, served, nil
}

// chainHostMetadata marks an outbound chain with the service host it
// belongs to (ChainMetadataKey): its VIP is that host's, wherever a tcp
// or tls rule sends the connection.
func chainHostMetadata(host string) *corev3.Metadata {
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		ChainMetadataKey: {Fields: map[string]*structpb.Value{ChainMetadataHost: structpb.NewStringValue(host)}},
	}}
}

func (b *builder) originalDst() []*listenerv3.ListenerFilter {
	return []*listenerv3.ListenerFilter{{Name: wkOriginalDst, ConfigType: &listenerv3.ListenerFilter_TypedConfig{
		TypedConfig: b.any(&originaldstv3.OriginalDst{}),
	}}}
}

func (b *builder) routerFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: wkRouter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: b.any(&routerv3.Router{})}}
}

// hcm wraps an HTTP connection manager (codec sniffed: HTTP/1.1 or
// HTTP/2) as a network filter.
func (b *builder) hcm(h *hcmv3.HttpConnectionManager) *listenerv3.Filter {
	h.CodecType = hcmv3.HttpConnectionManager_AUTO
	return &listenerv3.Filter{Name: wkHCM, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: b.any(h)}}
}

func (b *builder) tcpProxy(stat, cluster string) *listenerv3.Filter {
	return &listenerv3.Filter{Name: wkTCPProxy, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: b.any(&tcpproxyv3.TcpProxy{
		StatPrefix: stat, ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster},
	})}}
}

// NodeListeners returns the inbound listeners of node's workloads:
// InboundListener (mTLS) and InboundPlaintextListener, in that order,
// each with one filter chain per workload and port, matched on the
// workload's addresses and the original destination port.
//
// A workload port gets an mTLS chain unless its mode is DISABLE, and a
// plaintext chain only if its mode is PERMISSIVE or DISABLE: plaintext
// to a STRICT port matches no chain and is refused (fail closed). The
// ports are those the services' endpoints serve on the workload (with
// the service port's protocol; HTTP-family ports get the HTTP RBAC
// filter, the others network RBAC), the ports a PeerAuthentication
// sets a mode for, and every other port, by the workload's default mode,
// as TCP. Since a listener picks a chain by port before address, two
// more kinds of chain keep each workload's decision its own: where a
// port's mode refuses what the workload's catch-all chain in a listener
// would accept, a refusing chain (network RBAC allowing nothing); and
// for each port another chain of the listener names, a chain like the
// catch-all for every workload whose catch-all is in that listener. A
// listener with no chains is left out: a node without
// workloads gets none, and one whose workloads are all STRICT gets no
// plaintext listener. Workloads without an IP are skipped, and so are
// workloads outside the mesh (model.Workload.OutsideMesh): nothing is
// captured for them, so no agent listens for them; clients reach them in
// plaintext (their ports are DISABLE).
func NodeListeners(m *model.Model, node string) ([]*listenerv3.Listener, error) {
	return NewNodeIndex(m).Listeners(node)
}

// NodeIndex computes the listeners of many nodes of one model: it indexes
// the model once (which workloads run where, which ports services'
// endpoints serve on them), so each node costs only its own workloads.
type NodeIndex struct {
	m      *model.Model
	ports  map[string]*workloadPorts // by workload "namespace/name"
	byNode map[string][]*model.Workload
}

// NewNodeIndex indexes m for Listeners.
func NewNodeIndex(m *model.Model) *NodeIndex {
	ix := &NodeIndex{m: m, ports: servedPorts(m), byNode: map[string][]*model.Workload{}}
	for _, w := range m.Workloads { // sorted by namespace and name
		if w.Node != "" {
			ix.byNode[w.Node] = append(ix.byNode[w.Node], w)
		}
	}
	return ix
}

// Listeners is NodeListeners(m, node) of the indexed model.
func (ix *NodeIndex) Listeners(node string) ([]*listenerv3.Listener, error) {
	m := ix.m
	b := &builder{}
	mtls := &listenerv3.Listener{Name: InboundListener, Address: socketAddress("0.0.0.0", InboundPort),
		TrafficDirection: corev3.TrafficDirection_INBOUND, ListenerFilters: b.originalDst()}
	plain := &listenerv3.Listener{Name: InboundPlaintextListener, Address: socketAddress("0.0.0.0", InboundPlaintextPort),
		TrafficDirection: corev3.TrafficDirection_INBOUND, ListenerFilters: b.originalDst()}
	// A listener picks a chain by destination port first, then by
	// address, and never goes back: once any chain names a port, a
	// workload without a chain for that port in that listener would be
	// refused there, whatever its catch-all says. So every workload whose
	// catch-all accepts in a listener gets a chain for each port another
	// chain of that listener names (fill), and one whose port-level mode
	// refuses what its catch-all accepts gets a refusing chain (refuse).
	type inbound struct {
		w        *model.Workload
		key      string
		addrs    []*corev3.CidrRange
		az       authz
		tls      *corev3.TransportSocket
		ports    []servedPort // explicit: served, then port-level modes only
		explicit map[uint32]bool
	}
	var ins []inbound
	named := [2]map[uint32]bool{{}, {}} // ports explicit chains name, per listener (0: mTLS, 1: plaintext)
	serves := func(l int, mode model.Mode) bool {
		if l == 0 {
			return mode != model.ModeDisable
		}
		return mode != model.ModeStrict
	}
	for _, w := range ix.byNode[node] {
		if w.IP == "" || w.OutsideMesh {
			continue // no agent listens for a workload outside the mesh
		}
		key := w.Namespace + "/" + w.Name
		sp := ix.ports[key]
		if sp == nil {
			sp = &workloadPorts{}
		}
		addrs := workloadRanges(w, sp.addrs)
		if addrs == nil {
			continue
		}
		in := inbound{w: w, key: key, addrs: addrs, az: b.authzFor(m, m.AuthzFor(key)), tls: b.downstreamTLS(w.Identity),
			ports: slices.Clone(sp.ports), explicit: map[uint32]bool{}}
		for _, pn := range sortedKeys(w.PortModes) {
			if !slices.ContainsFunc(sp.ports, func(p servedPort) bool { return p.port == pn }) {
				in.ports = append(in.ports, servedPort{pn, model.ProtocolTCP})
			}
		}
		for _, p := range in.ports {
			in.explicit[p.port] = true
			for l := range named {
				if serves(l, w.MTLSMode(p.port)) || serves(l, w.DefaultMode) {
					named[l][p.port] = true
				}
			}
		}
		ins = append(ins, in)
	}
	fills := [2][]uint32{slices.Sorted(maps.Keys(named[0])), slices.Sorted(maps.Keys(named[1]))}
	for _, in := range ins {
		for l, lis := range []*listenerv3.Listener{mtls, plain} {
			tls := in.tls
			if l == 1 {
				tls = nil
			}
			for _, p := range in.ports {
				switch {
				case serves(l, in.w.MTLSMode(p.port)):
					lis.FilterChains = append(lis.FilterChains, b.inboundChain(in.key, in.addrs, p.port, p.proto, in.az, tls))
				case serves(l, in.w.DefaultMode):
					lis.FilterChains = append(lis.FilterChains, b.refusingChain(in.key, in.addrs, p.port, tls))
				}
			}
			if !serves(l, in.w.DefaultMode) {
				continue // no catch-all: every other port is refused anyway
			}
			for _, pn := range fills[l] {
				if !in.explicit[pn] {
					lis.FilterChains = append(lis.FilterChains, b.inboundChain(in.key, in.addrs, pn, model.ProtocolTCP, in.az, tls))
				}
			}
			lis.FilterChains = append(lis.FilterChains, b.inboundChain(in.key, in.addrs, 0, model.ProtocolTCP, in.az, tls))
		}
	}
	if b.err != nil {
		return nil, b.err
	}
	var out []*listenerv3.Listener
	for _, l := range []*listenerv3.Listener{mtls, plain} {
		if len(l.FilterChains) > 0 {
			out = append(out, l)
		}
	}
	return out, nil
}

func sortedKeys(m map[uint32]model.Mode) []uint32 {
	out := make([]uint32, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// servedPort is a port a workload serves a service on.
type servedPort struct {
	port  uint32
	proto model.Protocol
}

// workloadPorts are the ports of a workload, sorted, and the addresses
// its endpoints have.
type workloadPorts struct {
	ports []servedPort
	addrs []string
}

// servedPorts finds, for every workload on a node, the ports services'
// endpoints serve on it: the first service by hostname decides a port's
// protocol.
func servedPorts(m *model.Model) map[string]*workloadPorts {
	out := map[string]*workloadPorts{}
	for _, w := range m.Workloads {
		if w.Node != "" {
			out[w.Namespace+"/"+w.Name] = &workloadPorts{}
		}
	}
	for _, svc := range m.Services {
		for _, ep := range svc.Endpoints {
			wp := out[ep.Workload]
			if wp == nil {
				continue
			}
			if !slices.Contains(wp.addrs, ep.Address) {
				wp.addrs = append(wp.addrs, ep.Address)
			}
			for _, p := range svc.Ports {
				if p.Protocol == model.ProtocolUDP {
					continue
				}
				pn := uint32(ep.PortFor(p))
				if !slices.ContainsFunc(wp.ports, func(s servedPort) bool { return s.port == pn }) {
					wp.ports = append(wp.ports, servedPort{pn, p.Protocol})
				}
			}
		}
	}
	for _, wp := range out {
		slices.SortStableFunc(wp.ports, func(a, b servedPort) int { return cmp.Compare(a.port, b.port) })
	}
	return out
}

// workloadRanges are the host CIDRs of a workload's IP and its
// endpoints' addresses, sorted; nil when none parses.
func workloadRanges(w *model.Workload, addrs []string) []*corev3.CidrRange {
	all := append([]string{w.IP}, addrs...)
	var ps []netip.Addr
	for _, a := range all {
		if ip, err := netip.ParseAddr(a); err == nil && !slices.Contains(ps, ip) {
			ps = append(ps, ip)
		}
	}
	slices.SortFunc(ps, func(a, b netip.Addr) int { return a.Compare(b) })
	var out []*corev3.CidrRange
	for _, ip := range ps {
		out = append(out, &corev3.CidrRange{AddressPrefix: ip.String(), PrefixLen: wrapperspb.UInt32(uint32(ip.BitLen()))})
	}
	return out
}

// downstreamTLS is the server side of mesh mTLS for one workload: its
// SVID, and a client certificate required and verified against the
// trust bundle (who may call is RBAC's business).
func (b *builder) downstreamTLS(identity string) *corev3.TransportSocket {
	ctx := &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: WorkloadSecret(identity), SdsConfig: ads()}},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: RootCASecret, SdsConfig: ads()},
			},
		},
	}
	return &corev3.TransportSocket{Name: wkTLS, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: b.any(ctx)}}
}

// refusingChain is a workload port's chain that refuses every
// connection: the port's mode says this listener must not serve it, but
// the workload's catch-all chain would (a STRICT port under a PERMISSIVE
// default in the plaintext listener, a DISABLE port in the mTLS
// listener). A network RBAC ALLOW filter without policies denies
// everything; the tcp_proxy after it is never reached.
func (b *builder) refusingChain(key string, addrs []*corev3.CidrRange, pn uint32, tls *corev3.TransportSocket) *listenerv3.FilterChain {
	return &listenerv3.FilterChain{
		Name:             key + "|" + port(pn),
		FilterChainMatch: &listenerv3.FilterChainMatch{PrefixRanges: addrs, DestinationPort: wrapperspb.UInt32(pn)},
		TransportSocket:  tls,
		Filters: []*listenerv3.Filter{
			{Name: wkNetworkRBAC, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: b.any(&netrbacv3.RBAC{
				StatPrefix: "tcp.mode_refused.", Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW},
			})}},
			b.tcpProxy("inbound_"+port(pn), InboundPassthroughCluster),
		},
	}
}

// inboundChain is one workload port's chain (port 0: every other port):
// RBAC, then the connection or request goes to InboundPassthroughCluster.
func (b *builder) inboundChain(key string, addrs []*corev3.CidrRange, pn uint32, proto model.Protocol, az authz, tls *corev3.TransportSocket) *listenerv3.FilterChain {
	ps, stat := "*", "inbound_passthrough"
	match := &listenerv3.FilterChainMatch{PrefixRanges: addrs}
	if pn != 0 {
		ps, stat = port(pn), "inbound_"+port(pn)
		match.DestinationPort = wrapperspb.UInt32(pn)
	}
	fc := &listenerv3.FilterChain{Name: key + "|" + ps, FilterChainMatch: match, TransportSocket: tls}
	if !httpFamily(proto) {
		fc.Filters = append(slices.Clip(az.tcp), b.tcpProxy(stat, InboundPassthroughCluster))
		return fc
	}
	filters := append(slices.Clip(az.http), b.routerFilter())
	fc.Filters = []*listenerv3.Filter{b.hcm(&hcmv3.HttpConnectionManager{
		StatPrefix: stat,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: "inbound|" + ps,
			VirtualHosts: []*routev3.VirtualHost{{
				Name: "inbound|http|" + ps, Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Name:  "default",
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{
						ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: InboundPassthroughCluster},
						Timeout:          durationpb.New(0),
					}},
				}},
			}},
			ValidateClusters: wrapperspb.Bool(false),
		}},
		HttpFilters: filters,
	})}
	return fc
}
