package proxy

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/fibmesh/fibmesh/controller/config"
	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/controller/xds/envoy"
	"github.com/fibmesh/fibmesh/slowpath/xdsconf"
)

// The L7 lab: the same two pods (client in A, server in B, one Proxy),
// configured by the controller's own translation of a small mesh: a
// Service "web" (VIP webVIP) and one "held" (heldVIP, a circuit breaker
// of one connection and one pending request), both on the server pod's
// httpPort, STRICT mTLS, an AuthorizationPolicy on /admin.
var (
	webVIP   = netip.MustParseAddrPort("10.96.0.20:80")
	heldVIP  = netip.MustParseAddrPort("10.96.0.21:80")
	httpPort = uint16(8081)
)

func l7Manifests(client, server netip.Addr) map[string]string {
	pod := func(name string, ip netip.Addr) string {
		return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %[1]s, namespace: default, labels: {app: %[1]s}}
spec:
  serviceAccountName: %[1]s
  nodeName: node1
  containers: [{name: app, image: app, ports: [{name: http, containerPort: %[3]d}]}]
status: {phase: Running, podIP: %[2]s, podIPs: [{ip: %[2]s}]}
`, name, ip, httpPort)
	}
	svc := func(name string, vip netip.AddrPort) string {
		return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: %[1]s, namespace: default}
spec:
  clusterIP: %[2]s
  selector: {app: server}
  ports: [{name: http, port: %[3]d, targetPort: %[4]d}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: %[1]s-1, namespace: default, labels: {kubernetes.io/service-name: %[1]s}}
addressType: IPv4
ports: [{name: http, port: %[4]d, protocol: TCP}]
endpoints:
- addresses: [%[5]s]
  conditions: {ready: true}
  nodeName: node1
  targetRef: {kind: Pod, namespace: default, name: server}
`, name, vip.Addr(), vip.Port(), httpPort, server)
	}
	return map[string]string{
		"ns.yaml": `apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: default}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: server, namespace: default}
`,
		"pods.yaml": pod("client", client) + "---\n" + pod("server", server),
		"svc.yaml":  svc("web", webVIP) + "---\n" + svc("held", heldVIP),
		"policy.yaml": `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin/*"]}}]
`,
		"routes.yaml": `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [web]
  http:
  - name: retry
    match: [{uri: {prefix: /retry}}]
    route: [{destination: {host: web}}]
    retries: {attempts: 2, retryOn: 5xx}
  - name: timeout
    match: [{uri: {prefix: /slow}}]
    route: [{destination: {host: web}}]
    timeout: 0.3s
  - name: abort
    match: [{uri: {prefix: /abort}}]
    route: [{destination: {host: web}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
  - name: default
    route: [{destination: {host: web}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: held, namespace: default}
spec:
  host: held
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1}
`,
	}
}

// l7Snapshot compiles the manifests for node1 as the agent would.
func l7Snapshot(t testing.TB, files map[string]string) *xdsconf.Snapshot {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	st, err := config.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Build(st, nil, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := envoy.NodeResources(m, "node1")
	if err != nil {
		t.Fatal(err)
	}
	s := xdsconf.NewStore()
	for _, typ := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType} {
		if err := s.Update(typ, res[typ], "v1"); err != nil {
			t.Fatalf("Update(%s): %v", typ, err)
		}
	}
	return s.Snapshot()
}
