package envoy

import (
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/structpb"

	xdsapi "github.com/fibmesh/fibmesh/api/xds"
	"github.com/fibmesh/fibmesh/controller/model"
)

// selects reports whether an endpoint is in a subset: it has every one
// of the subset's labels.
func selects(labels map[string]string, ep *model.Endpoint) bool {
	for k, v := range labels {
		if w, ok := ep.Labels[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// assignment is the ClusterLoadAssignment of an EDS cluster: the plan's
// endpoints in the subset, grouped by locality, each at its port for
// the service port and healthy when ready.
//
// The model knows no regions or zones, so a locality is the endpoint's
// node as sub_zone: enough to keep locality stats per node and to prefer
// local endpoints once zones exist.
func assignment(plan *portPlan, name string, labels map[string]string) *endpointv3.ClusterLoadAssignment {
	idx := make([]int, 0, len(plan.eps))
	for i, ep := range plan.eps {
		if selects(labels, ep) {
			idx = append(idx, i)
		}
	}
	// Endpoints are sorted by address; keep that order within a node.
	slices.SortStableFunc(idx, func(a, b int) int { return strings.Compare(plan.eps[a].Node, plan.eps[b].Node) })
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{}}
	var cur *endpointv3.LocalityLbEndpoints
	for _, i := range idx {
		ep := plan.eps[i]
		if cur == nil || cur.Locality.SubZone != ep.Node {
			cur = &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{SubZone: ep.Node}}
			cla.Endpoints = append(cla.Endpoints, cur)
		}
		lb := lbEndpoint(ep.Address, uint32(ep.PortFor(plan.port)), ep.Ready)
		lb.Metadata = endpointMetadata(ep, plan.mixed && plan.plaintext[i])
		cur.LbEndpoints = append(cur.LbEndpoints, lb)
	}
	return cla
}

func lbEndpoint(addr string, port uint32, ready bool) *endpointv3.LbEndpoint {
	health := corev3.HealthStatus_HEALTHY
	if !ready {
		health = corev3.HealthStatus_UNHEALTHY
	}
	return &endpointv3.LbEndpoint{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(addr, port)}},
		HealthStatus:   health,
	}
}

// endpointMetadata is an EDS endpoint's metadata, nil when it has none:
// plaintext marks it for the cluster's plaintext transport socket match;
// an endpoint backed by a known pod carries its workload as Istio's EDS
// does (filter_metadata "istio" workload, xdsapi.EndpointWorkload), for
// the client's telemetry to name the destination workload. A workload
// the agents would refuse (a label value the file store let through
// with a character Kubernetes refuses) is left out rather than have
// every agent NACK the assignment.
func endpointMetadata(ep *model.Endpoint, plaintext bool) *corev3.Metadata {
	var fm map[string]*structpb.Struct
	if plaintext {
		fm = map[string]*structpb.Struct{socketMatchKey: {
			Fields: map[string]*structpb.Value{tlsModeKey: structpb.NewStringValue(tlsModePlaintext)},
		}}
	}
	if ns, pod, ok := strings.Cut(ep.Workload, "/"); ok {
		enc := xdsapi.EndpointWorkloadOf(ns, pod, ep.Labels).Encode()
		if _, err := xdsapi.ParseEndpointWorkload(enc); err == nil {
			if fm == nil {
				fm = make(map[string]*structpb.Struct, 1)
			}
			fm[xdsapi.EndpointMetadataKey] = &structpb.Struct{
				Fields: map[string]*structpb.Value{xdsapi.EndpointWorkloadField: structpb.NewStringValue(enc)},
			}
		}
	}
	if fm == nil {
		return nil
	}
	return &corev3.Metadata{FilterMetadata: fm}
}

// dnsAssignment is the inline assignment of a DNS ServiceEntry's
// cluster: its endpoints (addresses or hostnames) in the subset, or the
// host itself where it lists none, as Istio does. LOGICAL_DNS takes only
// the first.
func dnsAssignment(plan *portPlan, name string, labels map[string]string) *endpointv3.ClusterLoadAssignment {
	loc := &endpointv3.LocalityLbEndpoints{}
	if len(plan.svc.Endpoints) == 0 {
		loc.LbEndpoints = append(loc.LbEndpoints, lbEndpoint(plan.svc.Hostname, uint32(plan.port.Port), true))
	}
	for _, ep := range plan.eps {
		if selects(labels, ep) {
			loc.LbEndpoints = append(loc.LbEndpoints, lbEndpoint(ep.Address, uint32(ep.PortFor(plan.port)), ep.Ready))
		}
	}
	if len(loc.LbEndpoints) > 1 && plan.kind == clusterv3.Cluster_LOGICAL_DNS {
		loc.LbEndpoints = loc.LbEndpoints[:1]
	}
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	if len(loc.LbEndpoints) > 0 {
		cla.Endpoints = []*endpointv3.LocalityLbEndpoints{loc}
	}
	return cla
}
