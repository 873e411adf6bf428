package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
)

const canary = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: production}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        x-canary-user: {exact: "true"}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v2}
      weight: 10
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "5xx,reset,connect-failure"}
    timeout: 10s
    fault:
      delay: {percentage: {value: 1}, fixedDelay: 5s}
`

func TestDecodeKinds(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string // Resource keys with GVK
		check      func(t *testing.T, r []Resource)
	}{
		{"canary VirtualService v1", canary, []string{"networking.istio.io/v1, Kind=VirtualService production/reviews"}, func(t *testing.T, r []Resource) {
			vs := r[0].Object.(*networkingv1.VirtualService)
			http := vs.Spec.GetHttp()
			if len(http) != 2 || http[1].GetRoute()[0].GetWeight() != 90 || http[1].GetRetries().GetAttempts() != 3 ||
				http[1].GetTimeout().AsDuration().String() != "10s" || http[1].GetFault().GetDelay().GetPercentage().GetValue() != 1 ||
				http[0].GetMatch()[0].GetHeaders()["x-canary-user"].GetExact() != "true" {
				t.Errorf("decoded spec: %v", &vs.Spec)
			}
		}},
		{"VirtualService v1alpha3 and v1beta1 decode to v1 types", strings.Replace(canary, "networking.istio.io/v1", "networking.istio.io/v1alpha3", 1) + "---\n" +
			strings.Replace(strings.Replace(canary, "networking.istio.io/v1", "networking.istio.io/v1beta1", 1), "name: reviews,", "name: reviews2,", 1),
			[]string{"networking.istio.io/v1alpha3, Kind=VirtualService production/reviews", "networking.istio.io/v1beta1, Kind=VirtualService production/reviews2"}, nil},
		{"DestinationRule", "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}, outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}}\n  subsets: [{name: v1, labels: {version: v1}}]\n",
			[]string{"networking.istio.io/v1beta1, Kind=DestinationRule default/reviews"}, nil},
		{"ServiceEntry", "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext, namespace: a}\nspec: {hosts: [api.example.com], ports: [{number: 443, name: https, protocol: TLS}], resolution: DNS}\n",
			[]string{"networking.istio.io/v1, Kind=ServiceEntry a/ext"}, nil},
		{"PeerAuthentication", "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}, portLevelMtls: {\"8080\": {mode: DISABLE}}}\n",
			[]string{"security.istio.io/v1beta1, Kind=PeerAuthentication istio-system/default"}, func(t *testing.T, r []Resource) {
				pa := r[0].Object.(*securityv1.PeerAuthentication)
				if pa.Spec.GetMtls().GetMode().String() != "STRICT" || pa.Spec.GetPortLevelMtls()[8080].GetMode().String() != "DISABLE" {
					t.Errorf("decoded spec: %v", &pa.Spec)
				}
			}},
		{"AuthorizationPolicy", "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ap, namespace: p}\nspec:\n  rules: [{when: [{key: \"request.headers[x-request-id]\", notValues: [\"\"]}]}]\n",
			[]string{"security.istio.io/v1, Kind=AuthorizationPolicy p/ap"}, nil},
		{"core kinds", "apiVersion: v1\nkind: Namespace\nmetadata: {name: production, labels: {a: b}}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: production}\nspec: {ports: [{name: http, port: 9080}]}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: frontend, namespace: production}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: node1}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: production}\nspec: {nodeName: node1, containers: [{name: a, image: a}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: reviews-1, namespace: production}\naddressType: IPv4\nendpoints: [{addresses: [10.200.1.11]}]\n",
			[]string{"/v1, Kind=Namespace production", "/v1, Kind=Service production/reviews", "/v1, Kind=ServiceAccount production/frontend", "/v1, Kind=Node node1", "/v1, Kind=Pod production/p", "discovery.k8s.io/v1, Kind=EndpointSlice production/reviews-1"}, func(t *testing.T, r []Resource) {
				if r[1].Object.(*corev1.Service).Spec.Ports[0].Port != 9080 {
					t.Error("service port")
				}
			}},
		{"List", "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: x}\n", []string{"/v1, Kind=Namespace x"}, nil},
		{"comments and empty documents", "# just a comment\n---\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n", []string{"/v1, Kind=Namespace x"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, skipped, err := DecodeFile("in.yaml", []byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if len(skipped) != 0 {
				t.Errorf("skipped %v", skipped)
			}
			var got []string
			for _, r := range res {
				got = append(got, r.GVK.String()+" "+strings.TrimPrefix(r.Key(), r.GVK.Kind+" "))
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("resources (-want +got):\n%s", d)
			}
			if tc.check != nil && len(res) > 0 {
				tc.check(t, res)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       string // exact error text
	}{
		{"unknown spec field, nested", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: p}\nspec:\n  http:\n  - route:\n    - destination: {host: r}\n      wieght: 90\n",
			`in.yaml (document 1): VirtualService p/r: field spec.http[0].route[0].wieght: unknown field "wieght" in HTTPRouteDestination`},
		{"unknown header match field", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  http:\n  - match: [{headers: {x: {exactly: a}}}]\n",
			`in.yaml (document 1): VirtualService r: field spec.http[0].match[0].headers[x].exactly: unknown field "exactly" in StringMatch`},
		{"unknown metadata field on an Istio kind", "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: a, labelz: {}}\n",
			`in.yaml (document 1): PeerAuthentication a: field metadata.labelz: unknown field "metadata.labelz"`},
		{"unknown top-level field", "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: a}\nspecs: {}\n",
			`in.yaml (document 1): PeerAuthentication a: field specs: unknown field`},
		{"wrong enum value", "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: a}\nspec: {mtls: {mode: STRICTER}}\n",
			`in.yaml (document 1): PeerAuthentication a: field spec: invalid value for enum field mode: "STRICTER"`},
		{"unknown Kubernetes field", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 1, protcol: TCP}]}\n",
			`in.yaml (document 1): Service s: field spec.ports[0].protcol: unknown field "spec.ports[0].protcol"`},
		{"wrong type", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: abc}]}\n",
			`in.yaml (document 1): Service s: field spec.ports.port: json: cannot unmarshal string into Go struct field ServicePort.spec.ports.port of type int32`},
		{"duplicate key", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\nmetadata: {name: b}\n",
			`in.yaml (document 1): document: not valid YAML: yaml: unmarshal errors:
  line 4: key "metadata" already set in map`},
		{"missing name", "apiVersion: v1\nkind: Namespace\nmetadata: {}\n",
			`in.yaml (document 1): Namespace: field metadata.name: is required`},
		{"unserved version", "apiVersion: networking.istio.io/v2\nkind: DestinationRule\nmetadata: {name: x}\n",
			`in.yaml (document 1): DestinationRule x: field apiVersion: networking.istio.io/v2 is not a served version of DestinationRule: use networking.istio.io/v1, networking.istio.io/v1beta1, networking.istio.io/v1alpha3`},
		{"namespace on a cluster-scoped kind", "apiVersion: v1\nkind: Node\nmetadata: {name: node1, namespace: x}\n",
			`in.yaml (document 1): Node x/node1: field metadata.namespace: Node is cluster-scoped: remove the namespace`},
		{"not an object", "- a\n- b\n", `in.yaml (document 1): document: not a Kubernetes object`},
		{"no kind", "apiVersion: v1\nmetadata: {name: a}\n", `in.yaml (document 1): document a: apiVersion and kind are required`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := DecodeFile("in.yaml", []byte(tc.yaml))
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("error:\n %v\nwant prefix:\n %s", err, tc.want)
			}
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Errorf("error is not a *DecodeError: %T", err)
			}
		})
	}
}

func TestDecodeKeepsGoodDocumentsAndEveryError(t *testing.T) {
	in := "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {nam: b}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: c, x: 1}\n"
	res, skipped, err := DecodeFile("f.yaml", []byte(in))
	if len(res) != 1 || res[0].Name != "a" {
		t.Errorf("resources %v", res)
	}
	if len(skipped) != 1 || skipped[0].GVK.Kind != "Deployment" {
		t.Errorf("skipped %v", skipped)
	}
	var des []*DecodeError
	collect(err, &des)
	if len(des) != 2 || des[0].Source.Doc != 2 || des[1].Source.Doc != 4 {
		t.Errorf("errors %v", err)
	}
}

func TestLoadDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("b.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n")
	write("sub/a.yml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")
	write(".hidden.yaml", "not: [yaml")
	write("x.yaml~", "not: [yaml")
	write("notes.txt", "hello")
	s, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Resources) != 2 || s.Resources[0].Name != "a" || s.Resources[1].Name != "b" {
		t.Errorf("resources %v", s.Resources)
	}
	write("c.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")
	_, err = LoadDir(dir)
	if err == nil || !strings.Contains(err.Error(), "Namespace a: defined twice: also in ") {
		t.Errorf("duplicate: %v", err)
	}
	if _, err := LoadDir(filepath.Join(dir, "missing")); !errors.Is(err, ErrUnusable) {
		t.Errorf("missing dir: %v", err)
	}
	txt := t.TempDir()
	os.WriteFile(filepath.Join(txt, "a.txt"), []byte("x"), 0o644)
	if _, err := LoadDir(txt); !errors.Is(err, ErrUnusable) {
		t.Errorf("no YAML: %v", err)
	}
	if s, err := LoadDir(t.TempDir()); err != nil || len(s.Resources) != 0 {
		t.Errorf("empty dir: %v %v", s, err)
	}
}

func FuzzDecodeFile(f *testing.F) {
	f.Add([]byte(canary))
	f.Add([]byte("apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: Namespace, metadata: {name: a}}]\n"))
	f.Add([]byte("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: a}\nspec: {mtls: {mode: STRICT}}\n"))
	if ex, err := filepath.Glob("../../examples/*.yaml"); err == nil {
		for _, p := range ex {
			if b, err := os.ReadFile(p); err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		res, _, err := DecodeFile("fuzz.yaml", b)
		var des []*DecodeError
		collect(err, &des)
		if err != nil && len(des) == 0 {
			t.Fatalf("error that is not a *DecodeError: %v", err)
		}
		for _, r := range res {
			if r.Name == "" || r.Object == nil {
				t.Fatalf("resource without name or object: %+v", r)
			}
		}
		res2, _, err2 := DecodeFile("fuzz.yaml", b)
		if len(res2) != len(res) || (err == nil) != (err2 == nil) {
			t.Fatal("decoding is not deterministic")
		}
	})
}
