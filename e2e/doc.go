// Package e2e runs the mesh as a user runs it: the binaries of make
// build, a lab built from a directory of ordinary manifests with its
// controller and one agent per node (fibmesh-lab up -f DIR --mesh), real
// processes in network namespaces, and checks what the issue of the
// "mesh comes alive" wave asks end to end: the FIBs equal the
// controller's flow tables, edits propagate, the data path survives the
// controller and the agents going away, and identities stay on their
// node; the slow path's TCP (slowpath_test.go) and HTTP (l7_test.go:
// the examples' canary and authorization, and every L7 policy on
// services of its own); the offload (offload_test.go: a stream offloaded
// on both agents where the kernel has kTLS, make vmtest, in userspace with
// the reason elsewhere; many short connections without leaks; revocation
// by an AuthorizationPolicy); traces (tracing_test.go: both agents'
// spans at an in-test OTLP receiver, the trace context the apps see);
// the FIB as the node's load balancer (services_test.go: ClusterIPs from
// a pod outside the mesh, 1,000 UDP flows on their Maglev picks, a
// backend removed moving only its flows, VIPs without backends refused)
// and L4 policy on plaintext UDP (punt_test.go: one punt per flow, the
// verdict kept in XDP, re-decided after a policy edit).
// Its tests need root and skip without it.
package e2e
