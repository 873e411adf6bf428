// Package xds is the contract between fibmesh's agent and its controller:
// the xDS resource type of the flow table (FDS), the names of the flow
// table resources and SDS secrets, and what an agent subscribes to. Both
// sides import it; neither imports the other.
package xds

import (
	"strings"

	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// FlowTableType is FDS's xDS resource type (fibmesh.fib.v1.FlowTable).
const FlowTableType = "type.googleapis.com/fibmesh.fib.v1.FlowTable"

// MeshTable is the name of the flow table every node shares: routes to
// every node's pods, L4 service VIPs, identity ids. Each node also has a
// table named after the node (its local pods and their port policies).
const MeshTable = "mesh"

// SDS secret names.
const (
	// RootCASecret is the validation context: the mesh's trust bundle.
	RootCASecret = "ROOTCA"
	// ClientSecret is the secret mesh-wide clusters present as their
	// client certificate. It means "the SVID of the calling workload":
	// clusters are shared by every pod, so they cannot name one; the
	// agent maps it to WorkloadSecret of the pod that opened the
	// connection.
	ClientSecret = "default"
)

// WorkloadSecret returns the name of the SDS secret holding the SVID of
// a workload identity: the SPIFFE ID itself, which is unambiguous on a
// node agent serving many pods.
func WorkloadSecret(identity string) string { return identity }

// Subscription is one resource type and the names wanted; no names means
// every resource of the type (a wildcard subscription).
type Subscription struct {
	TypeURL string
	Names   []string
}

// AgentSubscriptions are what a node's agent subscribes to, in the order
// it requests them: every cluster, load assignment, listener and route
// configuration (its listeners are its own node's), the trust bundle,
// and the shared and its own flow tables.
func AgentSubscriptions(node string) []Subscription {
	return []Subscription{
		{TypeURL: resource.ClusterType},
		{TypeURL: resource.EndpointType},
		{TypeURL: resource.ListenerType},
		{TypeURL: resource.RouteType},
		{TypeURL: resource.SecretType, Names: []string{RootCASecret}},
		{TypeURL: FlowTableType, Names: []string{MeshTable, node}},
	}
}

// ShortType is a type URL's usual short name: CDS, EDS, LDS, RDS, SDS,
// FDS, or the URL's last element for any other type.
func ShortType(url string) string {
	switch url {
	case resource.ClusterType:
		return "CDS"
	case resource.EndpointType:
		return "EDS"
	case resource.ListenerType:
		return "LDS"
	case resource.RouteType:
		return "RDS"
	case resource.SecretType:
		return "SDS"
	case FlowTableType:
		return "FDS"
	}
	return url[strings.LastIndexByte(url, '/')+1:]
}
