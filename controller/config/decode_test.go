package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	apinet "istio.io/api/networking/v1alpha3"
	apisec "istio.io/api/security/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func tm(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}

func om(ns, name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: ns, Name: name} }

func TestDecodeKubernetesKinds(t *testing.T) {
	ptr := func(s string) *string { return &s }
	tests := []struct {
		name string
		in   string
		want runtime.Object
	}{{
		name: "Service",
		in: `apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: production}
spec:
  clusterIP: 10.96.0.11
  selector: {app: reviews}
  ports:
  - {name: http, port: 9080, targetPort: 9080}
`,
		want: &corev1.Service{TypeMeta: tm("v1", "Service"), ObjectMeta: om("production", "reviews"), Spec: corev1.ServiceSpec{
			ClusterIP: "10.96.0.11",
			Selector:  map[string]string{"app": "reviews"},
			Ports:     []corev1.ServicePort{{Name: "http", Port: 9080, TargetPort: intstr.FromInt32(9080)}},
		}},
	}, {
		name: "Pod, namespace defaulted",
		in: `apiVersion: v1
kind: Pod
metadata:
  name: reviews-v1
  labels: {app: reviews, version: v1}
spec:
  nodeName: node1
  serviceAccountName: reviews
  containers: [{name: reviews, image: demo/reviews}]
status: {podIP: 10.200.1.11, podIPs: [{ip: 10.200.1.11}]}
`,
		want: &corev1.Pod{TypeMeta: tm("v1", "Pod"),
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "reviews-v1", Labels: map[string]string{"app": "reviews", "version": "v1"}},
			Spec:       corev1.PodSpec{NodeName: "node1", ServiceAccountName: "reviews", Containers: []corev1.Container{{Name: "reviews", Image: "demo/reviews"}}},
			Status:     corev1.PodStatus{PodIP: "10.200.1.11", PodIPs: []corev1.PodIP{{IP: "10.200.1.11"}}},
		},
	}, {
		name: "Namespace stays cluster-scoped",
		in:   "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: staging\n  labels: {environment: staging}\n",
		want: &corev1.Namespace{TypeMeta: tm("v1", "Namespace"), ObjectMeta: metav1.ObjectMeta{Name: "staging", Labels: map[string]string{"environment": "staging"}}},
	}, {
		name: "Node",
		in:   "apiVersion: v1\nkind: Node\nmetadata: {name: node1}\nspec: {podCIDR: 10.200.1.0/24}\nstatus:\n  addresses: [{type: InternalIP, address: 10.100.0.1}]\n",
		want: &corev1.Node{TypeMeta: tm("v1", "Node"), ObjectMeta: om("", "node1"), Spec: corev1.NodeSpec{PodCIDR: "10.200.1.0/24"},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.100.0.1"}}}},
	}, {
		name: "ServiceAccount",
		in:   "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: frontend, namespace: production}\n",
		want: &corev1.ServiceAccount{TypeMeta: tm("v1", "ServiceAccount"), ObjectMeta: om("production", "frontend")},
	}, {
		name: "EndpointSlice",
		in: `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: reviews-1
  namespace: production
  labels: {kubernetes.io/service-name: reviews}
addressType: IPv4
ports: [{name: http, port: 9080}]
endpoints:
- addresses: [10.200.1.11]
  nodeName: node1
  targetRef: {kind: Pod, namespace: production, name: reviews-v1}
`,
		want: func() runtime.Object {
			port := int32(9080)
			return &discoveryv1.EndpointSlice{TypeMeta: tm("discovery.k8s.io/v1", "EndpointSlice"),
				ObjectMeta:  metav1.ObjectMeta{Namespace: "production", Name: "reviews-1", Labels: map[string]string{"kubernetes.io/service-name": "reviews"}},
				AddressType: discoveryv1.AddressTypeIPv4,
				Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: &port}},
				Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.200.1.11"}, NodeName: ptr("node1"),
					TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "production", Name: "reviews-v1"}}},
			}
		}(),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, skipped, err := DecodeFile("f.yaml", []byte(tt.in))
			if err != nil || len(skipped) != 0 || len(res) != 1 {
				t.Fatalf("DecodeFile = %d resources, %d skipped, %v; want 1, 0, nil", len(res), len(skipped), err)
			}
			if diff := cmp.Diff(tt.want, res[0].Object); diff != "" {
				t.Errorf("object (-want +got):\n%s", diff)
			}
			gvk := tt.want.GetObjectKind().GroupVersionKind()
			if res[0].GVK != gvk || res[0].Source != (Source{File: "f.yaml", Doc: 1}) {
				t.Errorf("GVK, Source = %v, %v; want %v, f.yaml document 1", res[0].GVK, res[0].Source, gvk)
			}
		})
	}
}

// TestDecodeIstioVersions decodes every Istio kind in every served
// version: always into the v1 client-go type, with GVK and TypeMeta as
// written.
func TestDecodeIstioVersions(t *testing.T) {
	kinds := []struct {
		group, kind, spec string
		versions          []string
		want              func(meta metav1.ObjectMeta, tm metav1.TypeMeta) runtime.Object
	}{{
		group: "networking.istio.io", kind: "VirtualService", versions: netVersions,
		spec: "hosts: [reviews]\nhttp:\n- route:\n  - destination: {host: reviews, subset: v1}\n  timeout: 10s\n",
		want: func(m metav1.ObjectMeta, t metav1.TypeMeta) runtime.Object {
			return &networkingv1.VirtualService{TypeMeta: t, ObjectMeta: m, Spec: apinet.VirtualService{
				Hosts: []string{"reviews"},
				Http: []*apinet.HTTPRoute{{
					Route:   []*apinet.HTTPRouteDestination{{Destination: &apinet.Destination{Host: "reviews", Subset: "v1"}}},
					Timeout: durationpb.New(10e9),
				}},
			}}
		},
	}, {
		group: "networking.istio.io", kind: "VirtualService", versions: netVersions,
		spec: "hosts: [db, api.example.com]\ntcp:\n- match: [{port: 5432, sourceLabels: {app: web}, sourceNamespace: prod, destinationSubnets: [10.96.0.0/16]}]\n" +
			"  route:\n  - {destination: {host: db, subset: v1}, weight: 90}\n  - {destination: {host: db, subset: v2, port: {number: 5432}}, weight: 10}\n" +
			"tls:\n- match: [{sniHosts: [api.example.com, \"*.example.com\"], port: 443}]\n  route: [{destination: {host: api.example.com}}]\n",
		want: func(m metav1.ObjectMeta, t metav1.TypeMeta) runtime.Object {
			return &networkingv1.VirtualService{TypeMeta: t, ObjectMeta: m, Spec: apinet.VirtualService{
				Hosts: []string{"db", "api.example.com"},
				Tcp: []*apinet.TCPRoute{{
					Match: []*apinet.L4MatchAttributes{{Port: 5432, SourceLabels: map[string]string{"app": "web"}, SourceNamespace: "prod",
						DestinationSubnets: []string{"10.96.0.0/16"}}},
					Route: []*apinet.RouteDestination{{Destination: &apinet.Destination{Host: "db", Subset: "v1"}, Weight: 90},
						{Destination: &apinet.Destination{Host: "db", Subset: "v2", Port: &apinet.PortSelector{Number: 5432}}, Weight: 10}},
				}},
				Tls: []*apinet.TLSRoute{{
					Match: []*apinet.TLSMatchAttributes{{SniHosts: []string{"api.example.com", "*.example.com"}, Port: 443}},
					Route: []*apinet.RouteDestination{{Destination: &apinet.Destination{Host: "api.example.com"}}},
				}},
			}}
		},
	}, {
		group: "networking.istio.io", kind: "DestinationRule", versions: netVersions,
		spec: "host: reviews\nsubsets:\n- name: v1\n  labels: {version: v1}\n",
		want: func(m metav1.ObjectMeta, t metav1.TypeMeta) runtime.Object {
			return &networkingv1.DestinationRule{TypeMeta: t, ObjectMeta: m, Spec: apinet.DestinationRule{
				Host:    "reviews",
				Subsets: []*apinet.Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}}},
			}}
		},
	}, {
		group: "networking.istio.io", kind: "ServiceEntry", versions: netVersions,
		spec: "hosts: [api.example.com]\nlocation: MESH_EXTERNAL\nresolution: DNS\nports: [{number: 443, name: https, protocol: HTTPS}]\n",
		want: func(m metav1.ObjectMeta, t metav1.TypeMeta) runtime.Object {
			return &networkingv1.ServiceEntry{TypeMeta: t, ObjectMeta: m, Spec: apinet.ServiceEntry{
				Hosts:      []string{"api.example.com"},
				Location:   apinet.ServiceEntry_MESH_EXTERNAL,
				Resolution: apinet.ServiceEntry_DNS,
				Ports:      []*apinet.ServicePort{{Number: 443, Name: "https", Protocol: "HTTPS"}},
			}}
		},
	}, {
		group: "security.istio.io", kind: "PeerAuthentication", versions: secVersions,
		spec: "mtls: {mode: STRICT}\n",
		want: func(m metav1.ObjectMeta, t metav1.TypeMeta) runtime.Object {
			return &securityv1.PeerAuthentication{TypeMeta: t, ObjectMeta: m, Spec: apisec.PeerAuthentication{
				Mtls: &apisec.PeerAuthentication_MutualTLS{Mode: apisec.PeerAuthentication_MutualTLS_STRICT},
			}}
		},
	}, {
		group: "security.istio.io", kind: "AuthorizationPolicy", versions: secVersions,
		spec: "action: DENY\nrules:\n- to:\n  - operation: {methods: [DELETE]}\n",
		want: func(m metav1.ObjectMeta, t metav1.TypeMeta) runtime.Object {
			return &securityv1.AuthorizationPolicy{TypeMeta: t, ObjectMeta: m, Spec: apisec.AuthorizationPolicy{
				Action: apisec.AuthorizationPolicy_DENY,
				Rules:  []*apisec.Rule{{To: []*apisec.Rule_To{{Operation: &apisec.Operation{Methods: []string{"DELETE"}}}}}},
			}}
		},
	}}
	for _, k := range kinds {
		for _, v := range k.versions {
			apiVersion := k.group + "/" + v
			t.Run(k.kind+"/"+v, func(t *testing.T) {
				in := "apiVersion: " + apiVersion + "\nkind: " + k.kind + "\nmetadata:\n  name: x\n  namespace: prod\nspec:\n  " +
					strings.ReplaceAll(strings.TrimSuffix(k.spec, "\n"), "\n", "\n  ") + "\n"
				res, skipped, err := DecodeFile("f.yaml", []byte(in))
				if err != nil || len(skipped) != 0 || len(res) != 1 {
					t.Fatalf("DecodeFile = %d resources, %d skipped, %v; want 1, 0, nil\n%s", len(res), len(skipped), err, in)
				}
				want := k.want(om("prod", "x"), tm(apiVersion, k.kind))
				if diff := cmp.Diff(objView(want), objView(res[0].Object), protocmp.Transform()); diff != "" {
					t.Errorf("object (-want +got):\n%s", diff)
				}
				if got := res[0].GVK.GroupVersion().String(); got != apiVersion {
					t.Errorf("GVK = %v, want version as written %s", res[0].GVK, apiVersion)
				}
			})
		}
	}
}

// The spec types' own UnmarshalJSON (istio.io/api's jsonshim) allows
// unknown fields: this is why DecodeFile does not use it. If this test
// fails, the upstream types became strict and decodeSpec could use them.
func TestIstioUnmarshalJSONIsLenient(t *testing.T) {
	var vs apinet.VirtualService
	if err := vs.UnmarshalJSON([]byte(`{"hosts":["a"],"hostz":["b"]}`)); err != nil {
		t.Fatalf("upstream UnmarshalJSON rejects unknown fields now: %v", err)
	}
	if diff := cmp.Diff(&apinet.VirtualService{Hosts: []string{"a"}}, proto.Clone(&vs), protocmp.Transform()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestDecodeErrors(t *testing.T) {
	const (
		svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  namespace: p\n"
		vs  = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\n  namespace: p\n"
		dr  = "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata:\n  name: r\n  namespace: p\n"
		ap  = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: x\n  namespace: p\n"
	)
	tests := []struct {
		name, in string
		want     []string
	}{
		{"unknown field in metadata", svc + "  labelz: {}\n",
			[]string{"f.yaml (document 1): Service p/a: field metadata.labelz: unknown field"}},
		{"unknown field in Istio metadata", vs + "  lables: {}\n",
			[]string{"f.yaml (document 1): VirtualService p/r: field metadata.lables: unknown field"}},
		{"field names are case-sensitive", svc + "spec:\n  clusterIp: 10.0.0.1\n",
			[]string{"f.yaml (document 1): Service p/a: field spec.clusterIp: unknown field"}},
		{"unknown field in Kubernetes spec", svc + "spec:\n  portz: []\n",
			[]string{"f.yaml (document 1): Service p/a: field spec.portz: unknown field"}},
		{"unknown top-level field", vs + "specs: {}\n",
			[]string{"f.yaml (document 1): VirtualService p/r: field specs: unknown field"}},
		{"unknown field in Istio spec", dr + "spec:\n  hosts: [a]\n",
			[]string{`f.yaml (document 1): DestinationRule p/r: field spec.hosts: unknown field "hosts" in DestinationRule`}},
		{"unknown field nested in http routes", vs + "spec:\n  http:\n  - route:\n    - destination: {host: a}\n    - destination: {host: b}\n      wieght: 5\n",
			[]string{`f.yaml (document 1): VirtualService p/r: field spec.http[0].route[1].wieght: unknown field "wieght" in HTTPRouteDestination`}},
		{"proto name in a tls match", vs + "spec:\n  tls:\n  - match: [{sni_hosts: [a.example]}]\n",
			[]string{`f.yaml (document 1): VirtualService p/r: field spec.tls[0].match[0].sni_hosts: unknown field "sni_hosts" in TLSMatchAttributes: use "sniHosts"`}},
		{"unknown field in a tcp route", vs + "spec:\n  tcp:\n  - route: [{destination: {host: a}, wieght: 5}]\n",
			[]string{`f.yaml (document 1): VirtualService p/r: field spec.tcp[0].route[0].wieght: unknown field "wieght" in RouteDestination`}},
		{"proto name instead of JSON name", vs + "spec:\n  http:\n  - retries: {attempts: 3, per_try_timeout: 2s}\n",
			[]string{`f.yaml (document 1): VirtualService p/r: field spec.http[0].retries.per_try_timeout: unknown field "per_try_timeout" in HTTPRetry: use "perTryTimeout"`}},
		{"unknown field in a map value", dr + "spec:\n  host: a\n  trafficPolicy:\n    portLevelSettings:\n    - port: {numbr: 80}\n",
			[]string{`f.yaml (document 1): DestinationRule p/r: field spec.trafficPolicy.portLevelSettings[0].port.numbr: unknown field "numbr" in PortSelector`}},
		{"wrong type in Kubernetes spec", svc + "spec:\n  ports:\n  - port: abc\n",
			[]string{"f.yaml (document 1): Service p/a: field spec.ports.port: wrong type: got string, want int32"}},
		{"wrong type in Istio spec", vs + "spec:\n  http:\n  - route:\n    - destination: {host: a}\n      weight: 90\n    - destination: {host: b}\n      weight: ten\n",
			[]string{`f.yaml (document 1): VirtualService p/r: field spec.http[0].route[1].weight: invalid value for int32 field weight: "ten"`}},
		{"list where a string goes", vs + "spec:\n  hosts: [[a]]\n",
			[]string{`f.yaml (document 1): VirtualService p/r: field spec.hosts[0]: invalid value for string field hosts: [`}},
		{"bad duration", vs + "spec:\n  http:\n  - timeout: 10\n",
			[]string{`f.yaml (document 1): VirtualService p/r: field spec.http[0].timeout: invalid duration 10: want a string such as "10s" or "1.5s"`}},
		{"bad enum", dr + "spec:\n  trafficPolicy: {loadBalancer: {simple: FASTEST}}\n",
			[]string{`f.yaml (document 1): DestinationRule p/r: field spec.trafficPolicy.loadBalancer.simple: invalid value for enum field simple: "FASTEST"`}},
		{"bad map value", dr + "spec:\n  subsets: [{name: v1, labels: {version: [1]}}]\n",
			[]string{`f.yaml (document 1): DestinationRule p/r: field spec.subsets[0].labels[version]: invalid value for string field value: [`}},
		{"two members of a oneof", dr + "spec:\n  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN, consistentHash: {httpHeaderName: x}}}\n",
			[]string{`f.yaml (document 1): DestinationRule p/r: field spec.trafficPolicy.loadBalancer: error parsing "simple", oneof istio.networking.v1alpha3.LoadBalancerSettings.lb_policy is already set`}},
		{"spec not a mapping", ap + "spec: [1]\n",
			[]string{`f.yaml (document 1): AuthorizationPolicy p/x: field spec: unexpected token [`}},
		{"bad YAML", "apiVersion: v1\nkind: [\n",
			[]string{"f.yaml (document 1): document: not valid YAML: yaml: line 2: did not find expected node content"}},
		{"not YAML at all", "\x00\x01binary",
			[]string{"f.yaml (document 1): document: not valid YAML: yaml: control characters are not allowed"}},
		{"not an object", "just some text\n",
			[]string{"f.yaml (document 1): document: not a Kubernetes object: want a mapping with apiVersion, kind and metadata"}},
		{"duplicate key", "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  name: b\n",
			[]string{`f.yaml (document 1): Service b: yaml: line 5: duplicate key "name"`}},
		{"missing name", "apiVersion: v1\nkind: Service\nmetadata:\n  namespace: p\n",
			[]string{"f.yaml (document 1): Service: field metadata.name: is required"}},
		{"missing name, Istio", "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {}\n",
			[]string{"f.yaml (document 1): PeerAuthentication: field metadata.name: is required"}},
		{"missing name, skipped kind", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {namespace: p}\n",
			[]string{"f.yaml (document 1): Deployment: field metadata.name: is required"}},
		{"name not a string", "apiVersion: v1\nkind: Service\nmetadata:\n  name: 5\n",
			[]string{"f.yaml (document 1): Service: field metadata.name: must be a string, got 5: quote it (YAML reads unquoted y, no, on, off and numbers as booleans and numbers)"}},
		{"namespace read as a boolean", "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  namespace: y\n",
			[]string{"f.yaml (document 1): Service a: field metadata.namespace: must be a string, got true: quote it (YAML reads unquoted y, no, on, off and numbers as booleans and numbers)"}},
		{"apiVersion not a string", "apiVersion: [v1]\nkind: Service\nmetadata: {name: a}\n",
			[]string{"f.yaml (document 1): Service a: field apiVersion: must be a string"}},
		{"missing apiVersion", "kind: Service\nmetadata: {name: a}\n",
			[]string{"f.yaml (document 1): Service a: field apiVersion: is required"}},
		{"missing kind", "apiVersion: v1\nmetadata: {name: a}\n",
			[]string{"f.yaml (document 1): document a: field kind: is required"}},
		{"unserved networking version", "apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: a, namespace: p}\n",
			[]string{"f.yaml (document 1): VirtualService p/a: field apiVersion: networking.istio.io/v2 is not a served version of VirtualService: use networking.istio.io/v1, networking.istio.io/v1beta1, networking.istio.io/v1alpha3"}},
		{"unserved security version", "apiVersion: security.istio.io/v1alpha3\nkind: PeerAuthentication\nmetadata: {name: a}\n",
			[]string{"f.yaml (document 1): PeerAuthentication a: field apiVersion: security.istio.io/v1alpha3 is not a served version of PeerAuthentication: use security.istio.io/v1, security.istio.io/v1beta1"}},
		{"unserved core version", "apiVersion: v2\nkind: Pod\nmetadata: {name: a}\n",
			[]string{"f.yaml (document 1): Pod a: field apiVersion: v2 is not a served version of Pod: use v1"}},
		{"cluster-scoped kind with a namespace", "apiVersion: v1\nkind: Node\nmetadata: {name: node1, namespace: p}\n",
			[]string{"f.yaml (document 1): Node p/node1: field metadata.namespace: Node is cluster-scoped: remove the namespace"}},
		{"bad List item", "apiVersion: v1\nkind: List\nitems:\n- " + strings.ReplaceAll(svc, "\n", "\n  ") + "spec: {portz: 1}\n- {apiVersion: v1, kind: Pod}\n",
			[]string{
				"f.yaml (document 1): Service p/a: field items[0].spec.portz: unknown field",
				"f.yaml (document 1): Pod: field items[1].metadata.name: is required",
			}},
		{"List items not a sequence", "apiVersion: v1\nkind: List\nitems: {a: 1}\n",
			[]string{"f.yaml (document 1): List: field items: must be a sequence"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, _, err := DecodeFile("f.yaml", []byte(tt.in))
			if len(res) != 0 {
				t.Errorf("DecodeFile returned %d resources, want none", len(res))
			}
			if diff := cmp.Diff(tt.want, errStrings(t, err)); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDecodeFileCollectsAll: every bad document is reported, and the good
// ones are still returned.
func TestDecodeFileCollectsAll(t *testing.T) {
	in := `# the demo, with mistakes
apiVersion: v1
kind: Service
metadata: {name: good, namespace: p}
---
# only a comment
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad, namespace: p}
spec:
  http:
  - rout: []
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: skipped, namespace: p}
spec: {whatever: [1, 2]}
---
apiVersion: v1
kind: Pod
metadata: {name: bad2}
spec: {nodeName: 7}
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: good2, namespace: p}
spec: {mtls: {mode: PERMISSIVE}}
`
	res, skipped, err := DecodeFile("demo.yaml", []byte(in))
	var got []string
	for _, r := range append(res, skipped...) {
		got = append(got, r.Key()+" @ "+r.Source.String())
	}
	want := []string{
		"Service p/good @ demo.yaml (document 1)",
		"PeerAuthentication p/good2 @ demo.yaml (document 6)",
		"Deployment p/skipped @ demo.yaml (document 4)",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("resources (-want +got):\n%s", diff)
	}
	wantErrs := []string{
		`demo.yaml (document 3): VirtualService p/bad: field spec.http[0].rout: unknown field "rout" in HTTPRoute`,
		"demo.yaml (document 5): Pod bad2: field spec.nodeName: wrong type: got number, want string",
	}
	if diff := cmp.Diff(wantErrs, errStrings(t, err)); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
}

func TestDecodeSkipped(t *testing.T) {
	in := `apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1, namespace: production}
spec: {replicas: 1, anything: goes}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec: {servers: []}
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: ef}
---
apiVersion: fibmesh.io/v1alpha1
kind: NodeOffload
metadata: {name: node1}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reader}
`
	res, skipped, err := DecodeFile("f.yaml", []byte(in))
	if err != nil || len(res) != 0 {
		t.Fatalf("DecodeFile = %d resources, %v; want none, nil", len(res), err)
	}
	var got []string
	for _, r := range skipped {
		got = append(got, r.GVK.String()+" "+r.Key()+" "+r.Source.String())
	}
	want := []string{
		"apps/v1, Kind=Deployment Deployment production/reviews-v1 f.yaml (document 1)",
		"networking.istio.io/v1, Kind=Gateway Gateway istio-system/gw f.yaml (document 2)",
		"networking.istio.io/v1alpha3, Kind=EnvoyFilter EnvoyFilter ef f.yaml (document 3)",
		"fibmesh.io/v1alpha1, Kind=NodeOffload NodeOffload node1 f.yaml (document 4)",
		"rbac.authorization.k8s.io/v1, Kind=ClusterRole ClusterRole reader f.yaml (document 5)",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("skipped (-want +got):\n%s", diff)
	}
	for _, r := range skipped {
		if r.Object != nil {
			t.Errorf("skipped %s has an Object", r.Key())
		}
	}
}

func TestDecodeList(t *testing.T) {
	in := `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ServiceAccount
  metadata: {name: reviews, namespace: production}
- apiVersion: networking.istio.io/v1beta1
  kind: DestinationRule
  metadata: {name: reviews}
  spec: {host: reviews}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: reviews}
---
apiVersion: v1
kind: List
items: []
`
	res, skipped, err := DecodeFile("list.yaml", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []resView{
		{Key: "ServiceAccount production/reviews", GVK: "/v1, Kind=ServiceAccount", Source: Source{"list.yaml", 1},
			Object: &corev1.ServiceAccount{TypeMeta: tm("v1", "ServiceAccount"), ObjectMeta: om("production", "reviews")}},
		{Key: "DestinationRule default/reviews", GVK: "networking.istio.io/v1beta1, Kind=DestinationRule", Source: Source{"list.yaml", 1},
			Object: istioView{tm("networking.istio.io/v1beta1", "DestinationRule"), om("default", "reviews"), &apinet.DestinationRule{Host: "reviews"}}},
	}
	if diff := cmp.Diff(want, views(res), protocmp.Transform()); diff != "" {
		t.Errorf("resources (-want +got):\n%s", diff)
	}
	if len(skipped) != 1 || skipped[0].Key() != "Deployment reviews" {
		t.Errorf("skipped = %v, want the Deployment", skipped)
	}
}

func TestDecodeEmpty(t *testing.T) {
	for _, in := range []string{"", "\n", "# nothing\n", "---\n# a\n---\n\n---\n", "null\n", "~\n---\n...\n"} {
		res, skipped, err := DecodeFile("f.yaml", []byte(in))
		if len(res)+len(skipped) != 0 || err != nil {
			t.Errorf("DecodeFile(%q) = %v, %v, %v; want nothing", in, res, skipped, err)
		}
	}
}

// JSON is YAML: a .json file holds one object (or a List).
func TestDecodeJSON(t *testing.T) {
	in := `{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
  "metadata": {"name": "default", "namespace": "istio-system"},
  "spec": {"mtls": {"mode": "STRICT"}}}`
	res, _, err := DecodeFile("pa.json", []byte(in))
	if err != nil || len(res) != 1 {
		t.Fatalf("DecodeFile = %v, %v", res, err)
	}
	want := &apisec.PeerAuthentication{Mtls: &apisec.PeerAuthentication_MutualTLS{Mode: apisec.PeerAuthentication_MutualTLS_STRICT}}
	if diff := cmp.Diff(want, &res[0].Object.(*securityv1.PeerAuthentication).Spec, protocmp.Transform()); diff != "" {
		t.Errorf("spec (-want +got):\n%s", diff)
	}
}
