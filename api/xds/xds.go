// Package xds is the contract between fibmesh's agent and its controller:
// the xDS resource type of the flow table (FDS), the names of the flow
// table resources and SDS secrets, and what an agent subscribes to. Both
// sides import it; neither imports the other.
package xds

import (
	"strconv"
	"strings"

	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// FlowTableType is FDS's xDS resource type (fibmesh.fib.v1.FlowTable).
const FlowTableType = "type.googleapis.com/fibmesh.fib.v1.FlowTable"

// MeshTable is the name of the flow table every node shares: routes to
// every node's pods, L4 service VIPs, identity ids. Each node also has a
// table named after the node (its local pods and their port policies).
//
// The shared table is also served split in shards, which is what agents
// subscribe to (AgentSubscriptions): an endpoint change then sends the
// one small shard that changed rather than the whole table (~460 kB for
// 10,000 pods) to every node. There are two kinds, so that what changes
// most often is sent alone:
//
//   - MeshShards route shards, MeshShard(i) = "mesh/<i>": the routes
//     whose prefix and the identities whose SPIFFE ID MeshShardOf puts
//     in i (they change when pods come and go);
//   - MeshServiceShards service shards, MeshServiceShard(i) =
//     "mesh/svc/<i>": the service VIPs whose hostname
//     MeshServiceShardOf puts in i (they change when an endpoint's
//     readiness flips, which is the commonest change).
//
// A shard keeps the table's order, and its FlowTable.node is its name.
// Together the shards are the shared table; MeshTable stays served whole
// for readers that want it in one piece (tests, fibctl).
const MeshTable = "mesh"

// MeshShards is the number of route shards of the shared flow table.
const MeshShards = 64

// MeshServiceShards is the number of service shards of the shared flow
// table. A readiness flip sends one (~1.5 kB at 1,000 services of 10
// endpoints) to every node, and each node decodes it. Agents subscribe
// to every shard with one glob (MeshShardsGlob), so more shards cost the
// controller's subscriber index nothing.
const MeshServiceShards = 256

// MeshShard is the name of route shard i of the shared flow table:
// "mesh/<i>".
func MeshShard(i int) string { return MeshTable + "/" + strconv.Itoa(i) }

// MeshServiceShard is the name of service shard i of the shared flow
// table: "mesh/svc/<i>".
func MeshServiceShard(i int) string { return MeshTable + "/svc/" + strconv.Itoa(i) }

// MeshShardOf is the route shard a route (by its prefix) or an identity
// (by its SPIFFE ID) lives in: FNV-1a of the key, modulo MeshShards.
func MeshShardOf(key string) int { return int(fnv1a(key) % MeshShards) }

// MeshServiceShardOf is the service shard a service VIP lives in, by its
// hostname: FNV-1a of it, modulo MeshServiceShards.
func MeshServiceShardOf(hostname string) int { return int(fnv1a(hostname) % MeshServiceShards) }

func fnv1a(key string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return h
}

// IsMeshTable reports whether name is the shared flow table or one of
// its shards.
func IsMeshTable(name string) bool {
	return name == MeshTable || strings.HasPrefix(name, MeshTable+"/")
}

// MeshShardsGlob is the glob name ("mesh/*") of every shard of the
// shared flow table, route and service shards, as an xDS glob
// collection: a subscription to it gets every shard and any added later.
// Agents subscribe to it rather than to each shard by name, which costs
// the controller's subscriber index one entry per agent rather than one
// per shard (MeshShards + MeshServiceShards).
const MeshShardsGlob = MeshTable + "/*"

// MeshShardNames are the names of the shared flow table's shards: the
// route shards in order, then the service shards in order.
func MeshShardNames() []string {
	out := make([]string, 0, MeshShards+MeshServiceShards)
	for i := range MeshShards {
		out = append(out, MeshShard(i))
	}
	for i := range MeshServiceShards {
		out = append(out, MeshServiceShard(i))
	}
	return out
}

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
// and the shared flow table's shards (MeshShardsGlob) and its own.
func AgentSubscriptions(node string) []Subscription {
	return []Subscription{
		{TypeURL: resource.ClusterType},
		{TypeURL: resource.EndpointType},
		{TypeURL: resource.ListenerType},
		{TypeURL: resource.RouteType},
		{TypeURL: resource.SecretType, Names: []string{RootCASecret}},
		{TypeURL: FlowTableType, Names: []string{MeshShardsGlob, node}},
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
