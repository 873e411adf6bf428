//go:build tools

// Module cni-plugins builds the reference CNI plugins (bridge, host-local
// IPAM) of github.com/containernetworking/plugins from the Go module
// proxy, for cmd/fibmesh-cni's tests, which chain fibmesh-cni after a
// real primary plugin run, as a container runtime does:
//
//	cd hack/cni-plugins && go build -o DIR/ \
//	    github.com/containernetworking/plugins/plugins/main/bridge \
//	    github.com/containernetworking/plugins/plugins/ipam/host-local
//
// The tests do this themselves (cached by the go tool), or use the
// binaries in $FIBMESH_CNI_PLUGINS.
package tools

import (
	_ "github.com/containernetworking/plugins/plugins/ipam/host-local"
	_ "github.com/containernetworking/plugins/plugins/main/bridge"
)
