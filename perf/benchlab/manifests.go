package benchlab

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/fibmesh/fibmesh/controller/model"
)

// OutsideMesh is the label (on a pod or its namespace) that keeps a pod
// out of the mesh (model.CaptureOff): not enrolled, not captured,
// plaintext as a workload outside the mesh talks. It is written as a YAML
// flow-mapping entry ("key: value").
const OutsideMesh = model.LabelCapture + ": " + model.CaptureDisabled

// Namespaces returns the manifests every bench lab starts with: the
// namespace mesh with the service accounts "client" and "server", and the
// namespace plain labelled OutsideMesh. Each document ends with "---", so
// the bench's own documents follow directly.
func Namespaces(mesh, plain string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
---
apiVersion: v1
kind: Namespace
metadata:
  name: %[2]s
  labels: {%[3]s}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: %[1]s}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: server, namespace: %[1]s}
---
`, mesh, plain, OutsideMesh)
}

// Container is one container of a bench lab's pod: its name and the
// command the lab's kubelet runs.
type Container struct {
	Name    string
	Command []string
}

// Pod is one pod of a bench lab, with its address fixed in status.podIP
// so that a bench can write configurations naming it before the lab is up.
type Pod struct {
	Namespace, Name string
	// ServiceAccount is left out of the manifest when empty.
	ServiceAccount string
	Node           string
	IP             netip.Addr
	// OutsideMesh adds the OutsideMesh label beside "app: <Name>".
	OutsideMesh bool
	Containers  []Container
}

// YAML returns the pod's manifest as one YAML document, starting with its
// "---" separator.
func (p Pod) YAML() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: %s\n  labels: {app: %s", p.Name, p.Namespace, p.Name)
	if p.OutsideMesh {
		w(", %s", OutsideMesh)
	}
	w("}\nspec:\n  nodeName: %s\n", p.Node)
	if p.ServiceAccount != "" {
		w("  serviceAccountName: %s\n", p.ServiceAccount)
	}
	w("  terminationGracePeriodSeconds: 2\n  containers:\n")
	for _, c := range p.Containers {
		args := make([]string, len(c.Command))
		for i, a := range c.Command {
			args[i] = strconv.Quote(a)
		}
		w("  - name: %s\n    command: [%s]\n", c.Name, strings.Join(args, ", "))
	}
	w("status: {podIP: %s}\n", p.IP)
	return b.String()
}

// Layout is the part of a bench lab's topology that every bench shares:
// two namespaces, each with a client pod on ClientNode and a server pod on
// ServerNode at fixed addresses, and the mesh Service's ClusterIP. The
// pods in MeshNamespace are enrolled and captured; PlainNamespace is
// labelled OutsideMesh. A bench's Topology embeds it.
type Layout struct {
	MeshNamespace, PlainNamespace string
	// Node names: the clients run on ClientNode, the servers on ServerNode.
	ClientNode, ServerNode       string
	ClientIP, ServerIP           netip.Addr // MeshNamespace's pods
	PlainClientIP, PlainServerIP netip.Addr // PlainNamespace's pods
	ServiceIP                    netip.Addr // the mesh Service's ClusterIP
}

// DefaultLayout is the layout the benches run: namespaces "bench" and
// "bench-plain" on node1 and node2 of the lab (pod CIDRs 10.200.1.0/24 and
// 10.200.2.0/24), the mesh pods at .11 and the plain ones at .12, and
// serviceIP (in the lab's service range) as the Service's ClusterIP.
func DefaultLayout(serviceIP netip.Addr) Layout {
	return Layout{
		MeshNamespace: "bench", PlainNamespace: "bench-plain",
		ClientNode: "node1", ServerNode: "node2",
		ClientIP: netip.MustParseAddr("10.200.1.11"), ServerIP: netip.MustParseAddr("10.200.2.11"),
		PlainClientIP: netip.MustParseAddr("10.200.1.12"), PlainServerIP: netip.MustParseAddr("10.200.2.12"),
		ServiceIP: serviceIP,
	}
}
