// Package envoy translates the controller's model (controller/model)
// into Envoy v3 resources: clusters (CDS), their endpoints (EDS), route
// configurations (RDS) and listeners (LDS), following Istio's
// conventions for names and semantics so that the output reads like
// Istio's to anyone who knows it and works with any xDS client.
//
// Routing is decided where the client runs, so clusters, endpoints,
// routes and the outbound listener are the same for every node (Mesh,
// built once per model version by BuildMesh). Only the inbound
// listeners, which terminate mTLS and authorize for the workloads of one
// node, differ per node (NodeListeners). docs/xds.md maps every Istio
// field to the Envoy field it becomes, and lists what is not translated.
//
// The translation is pure and deterministic: the same model gives
// proto.Equal resources, every list sorted. Resources may share
// immutable sub-messages (the HTTP filter chain of the outbound
// listener, for one); callers must not modify them.
package envoy

import (
	"net/netip"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/fibmesh/fibmesh/controller/model"
)

// Mesh is what every node gets, whatever runs on it. Its resources are
// consistent as go-control-plane's Snapshot.Consistent wants them: every
// EDS cluster has exactly one ClusterLoadAssignment and every
// RouteConfiguration is referenced by the outbound listener.
type Mesh struct {
	// Clusters, sorted by name: outbound|<port>||<host> per service
	// port, outbound|<port>|<subset>|<host> per DestinationRule subset,
	// and the shared passthrough clusters.
	Clusters []*clusterv3.Cluster
	// Endpoints has one ClusterLoadAssignment per EDS cluster, with the
	// cluster's name, sorted by name.
	Endpoints []*endpointv3.ClusterLoadAssignment
	// Routes has one RouteConfiguration per HTTP-family service port
	// with a VIP, named <host>:<port>, sorted by name.
	Routes []*routev3.RouteConfiguration
	// Outbound is the outbound capture listener, mesh-wide.
	Outbound *listenerv3.Listener
}

// BuildMesh translates the mesh-wide resources of m. The error names the
// resource and field that could not be translated (an unparsable
// duration, for one); Build's durations always parse. Input that Envoy
// would reject but the model keeps as written (an invalid VIP or
// endpoint address) is left out, as analyze reports it.
func BuildMesh(m *model.Model) (*Mesh, error) {
	ix := newIndex(m)
	b := &builder{}
	out := &Mesh{}
	var err error
	if out.Clusters, out.Endpoints, err = b.clusters(ix); err != nil {
		return nil, err
	}
	var served []hostPort
	if out.Outbound, served, err = b.outboundListener(ix); err != nil {
		return nil, err
	}
	if out.Routes, err = b.routes(ix, served); err != nil {
		return nil, err
	}
	if b.err != nil {
		return nil, b.err
	}
	return out, nil
}

// index is what the translation looks up, built once per model: the
// services in force by hostname, and the first route and destination
// policy of each host.
type index struct {
	m *model.Model
	// services are the services in force: the first of each hostname
	// (a Kubernetes Service before ServiceEntries, as ServicesFor
	// orders them), sorted by hostname.
	services []*model.Service
	byHost   map[string]*model.Service
	routes   map[string]*model.Route
	policies map[string]*model.DestinationPolicy
	// sources caches the client IPs each tcp/tls match selects.
	sources map[*model.L4Match][]netip.Addr
}

func newIndex(m *model.Model) *index {
	ix := &index{m: m, byHost: make(map[string]*model.Service, len(m.Services)),
		routes: map[string]*model.Route{}, policies: map[string]*model.DestinationPolicy{}}
	for _, s := range m.Services { // sorted by hostname, the one in force first
		if _, ok := ix.byHost[s.Hostname]; !ok {
			ix.byHost[s.Hostname] = s
			ix.services = append(ix.services, s)
		}
	}
	for _, r := range m.Routes { // by namespace and name: the first wins
		for _, h := range r.Hosts {
			if _, ok := ix.routes[h]; !ok {
				ix.routes[h] = r
			}
		}
	}
	for _, d := range m.DestinationPolicies {
		if _, ok := ix.policies[d.Host]; !ok {
			ix.policies[d.Host] = d
		}
	}
	return ix
}

// hostPort is a service port.
type hostPort struct {
	host string
	port uint32
}

// httpFamily reports whether a protocol gets L7 (HCM, RDS) handling.
// UNKNOWN does not: fibmesh sniffs it at run time, and without a known
// protocol it is proxied as TCP, like Istio without sniffing.
func httpFamily(p model.Protocol) bool {
	switch p {
	case model.ProtocolHTTP, model.ProtocolHTTP2, model.ProtocolGRPC:
		return true
	}
	return false
}

// NodeResources is what an agent on node holds of CDS, EDS, LDS and RDS:
// the mesh's resources and the node's listeners, by type URL, then by
// name (a load assignment by its cluster's name). The server pushes the
// same; tests of the agent's side compile it as the agent would.
func NodeResources(m *model.Model, node string) (map[string]map[string]proto.Message, error) {
	mesh, err := BuildMesh(m)
	if err != nil {
		return nil, err
	}
	ls, err := NodeListeners(m, node)
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]proto.Message{
		resource.ClusterType: {}, resource.EndpointType: {}, resource.ListenerType: {}, resource.RouteType: {},
	}
	for _, c := range mesh.Clusters {
		out[resource.ClusterType][c.GetName()] = c
	}
	for _, e := range mesh.Endpoints {
		out[resource.EndpointType][e.GetClusterName()] = e
	}
	for _, r := range mesh.Routes {
		out[resource.RouteType][r.GetName()] = r
	}
	out[resource.ListenerType][mesh.Outbound.GetName()] = mesh.Outbound
	for _, l := range ls {
		out[resource.ListenerType][l.GetName()] = l
	}
	return out, nil
}
