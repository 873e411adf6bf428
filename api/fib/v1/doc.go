// Package fibv1 holds FDS, the flow table (fibmesh.fib.v1.FlowTable) the
// controller serves each node over xDS: fib.proto and its generated Go,
// committed so that `go build` needs no protoc. `make generate` rebuilds
// it. A local pod carries the few labels Istio's metrics read
// (WorkloadLabels, labels.go) and its workload's name; WorkloadName
// (workload.go) is the one rule that names a pod's workload, for the
// agents and the controller's live page. The one thing an agent tells the
// controller for FDS travels in its xDS node metadata: NodeMetadataNICTLS
// (nicmeta.go). A local pod's UDP port carries the AuthorizationPolicies
// that apply to the pod (PortPolicy.authz): XDP punts new flows to a port
// they cover, and the agent decides them.
package fibv1

//go:generate sh -c "protoc --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --go_out=. --go_opt=paths=source_relative fib.proto"
