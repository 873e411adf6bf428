package cluster

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/fibmesh/fibmesh/controller/config"
)

func pod(ns, name string, labels map[string]string, mods ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}},
	}
	for _, m := range mods {
		m(p)
	}
	return p
}

func running(node, ip string, ready bool) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		p.Spec.NodeName = node
		st := corev1.ConditionTrue
		if !ready {
			st = corev1.ConditionFalse
		}
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}}
	}
}

func containerPort(name string, port int32) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, corev1.ContainerPort{Name: name, ContainerPort: port})
	}
}

func svc(ns, name string, sel map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"team": "a"}},
		Spec: corev1.ServiceSpec{Selector: sel, Ports: ports}}
}

func sp(name string, port int32, target intstr.IntOrString) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, TargetPort: target, Protocol: corev1.ProtocolTCP}
}

func ep(ip, node, pod string, ready bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  []string{ip},
		Conditions: discoveryv1.EndpointConditions{Ready: ptr(ready), Serving: ptr(ready), Terminating: ptr(false)},
		NodeName:   ptr(node),
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "prod", Name: pod},
	}
}

func epPort(name string, port int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr(name), Port: ptr(port), Protocol: ptr(corev1.ProtocolTCP)}
}

// TestEndpointSlices: derivation as the endpoint-slice controller does it.
func TestEndpointSlices(t *testing.T) {
	web := map[string]string{"app": "web"}
	type slice struct {
		ports     []discoveryv1.EndpointPort
		endpoints []discoveryv1.Endpoint
	}
	tests := []struct {
		name     string
		services []*corev1.Service
		pods     []*corev1.Pod
		want     []slice
	}{{
		name:     "selector matches running pods; numbered targetPort",
		services: []*corev1.Service{svc("prod", "web", web, sp("http", 80, intstr.FromInt32(8080)))},
		pods: []*corev1.Pod{
			pod("prod", "web-b", web, running("node2", "10.200.2.11", true)),
			pod("prod", "web-a", web, running("node1", "10.200.1.11", true)),
			pod("prod", "other", map[string]string{"app": "other"}, running("node1", "10.200.1.12", true)),
			pod("dev", "web-dev", web, running("node1", "10.200.1.13", true)), // other namespace
		},
		want: []slice{{
			ports:     []discoveryv1.EndpointPort{epPort("http", 8080)},
			endpoints: []discoveryv1.Endpoint{ep("10.200.1.11", "node1", "web-a", true), ep("10.200.2.11", "node2", "web-b", true)},
		}},
	}, {
		name:     "no targetPort: the service port",
		services: []*corev1.Service{svc("prod", "web", web, sp("http", 80, intstr.IntOrString{}))},
		pods:     []*corev1.Pod{pod("prod", "web-a", web, running("node1", "10.200.1.11", true))},
		want: []slice{{
			ports:     []discoveryv1.EndpointPort{epPort("http", 80)},
			endpoints: []discoveryv1.Endpoint{ep("10.200.1.11", "node1", "web-a", true)},
		}},
	}, {
		name:     "named targetPort resolved per pod; pods that resolve differently get their own slice",
		services: []*corev1.Service{svc("prod", "web", web, sp("http", 80, intstr.FromString("web")))},
		pods: []*corev1.Pod{
			pod("prod", "web-a", web, running("node1", "10.200.1.11", true), containerPort("web", 8080)),
			pod("prod", "web-b", web, running("node2", "10.200.2.11", true), containerPort("web", 9090)),
			pod("prod", "web-c", web, running("node2", "10.200.2.12", true), containerPort("web", 8080)),
		},
		want: []slice{{
			ports:     []discoveryv1.EndpointPort{epPort("http", 8080)},
			endpoints: []discoveryv1.Endpoint{ep("10.200.1.11", "node1", "web-a", true), ep("10.200.2.12", "node2", "web-c", true)},
		}, {
			ports:     []discoveryv1.EndpointPort{epPort("http", 9090)},
			endpoints: []discoveryv1.Endpoint{ep("10.200.2.11", "node2", "web-b", true)},
		}},
	}, {
		name:     "a pod without the named port has no port in its slice",
		services: []*corev1.Service{svc("prod", "web", web, sp("http", 80, intstr.FromString("web")))},
		pods:     []*corev1.Pod{pod("prod", "web-a", web, running("node1", "10.200.1.11", true))},
		want: []slice{{
			endpoints: []discoveryv1.Endpoint{ep("10.200.1.11", "node1", "web-a", true)},
		}},
	}, {
		name:     "not ready pods are endpoints that are not ready; pods without IP or finished are none",
		services: []*corev1.Service{svc("prod", "web", web, sp("http", 80, intstr.FromInt32(80)))},
		pods: []*corev1.Pod{
			pod("prod", "web-a", web, running("node1", "10.200.1.11", false)),
			pod("prod", "web-b", web),
			pod("prod", "web-c", web, running("node1", "10.200.1.12", true), func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
		},
		want: []slice{{
			ports:     []discoveryv1.EndpointPort{epPort("http", 80)},
			endpoints: []discoveryv1.Endpoint{ep("10.200.1.11", "node1", "web-a", false)},
		}},
	}, {
		name:     "no pods: one empty slice",
		services: []*corev1.Service{svc("prod", "web", web, sp("http", 80, intstr.FromInt32(8080)))},
		want:     []slice{{ports: []discoveryv1.EndpointPort{epPort("http", 8080)}}},
	}, {
		name: "selector-less and ExternalName services: none (their slices are the user's)",
		services: []*corev1.Service{
			svc("prod", "ext", nil, sp("http", 80, intstr.FromInt32(80))),
			func() *corev1.Service {
				s := svc("prod", "name", web, sp("http", 80, intstr.FromInt32(80)))
				s.Spec.Type = corev1.ServiceTypeExternalName
				return s
			}(),
		},
		pods: []*corev1.Pod{pod("prod", "web-a", web, running("node1", "10.200.1.11", true))},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := EndpointSlices(tt.services, tt.pods)
			if len(got) != len(tt.want) {
				t.Fatalf("%d slices, want %d: %+v", len(got), len(tt.want), got)
			}
			byPorts := map[string]*discoveryv1.EndpointSlice{}
			for _, s := range got {
				byPorts[portsKey(s.Ports)] = s
				if s.Labels[LabelServiceName] != "web" || s.Labels[LabelManagedBy] != ManagedByController || s.Labels["team"] != "a" {
					t.Errorf("slice %s labels %v: want service-name web, managed-by %s and the Service's own", s.Name, s.Labels, ManagedByController)
				}
				if !strings.HasPrefix(s.Name, "web-") || len(s.Name) != len("web-")+5 || s.Namespace != "prod" || s.AddressType != discoveryv1.AddressTypeIPv4 {
					t.Errorf("slice %s/%s type %s: want prod/web-<5 characters>, IPv4", s.Namespace, s.Name, s.AddressType)
				}
			}
			for _, w := range tt.want {
				s := byPorts[portsKey(w.ports)]
				if s == nil {
					t.Fatalf("no slice with ports %s among %v", portsKey(w.ports), got)
				}
				if d := cmp.Diff(w.endpoints, s.Endpoints); d != "" {
					t.Errorf("endpoints of slice %s (-want +got):\n%s", s.Name, d)
				}
			}
			again := EndpointSlices(tt.services, tt.pods)
			for i := range got {
				if got[i].Name != again[i].Name {
					t.Errorf("slice names change between runs: %s, %s", got[i].Name, again[i].Name)
				}
			}
		})
	}
}

func TestDeploymentPods(t *testing.T) {
	lbl := map[string]string{"app": "reviews", "version": "v1"}
	dep := func(replicas int32, mods ...func(*appsv1.Deployment)) *appsv1.Deployment {
		d := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "reviews-v1"},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr(replicas),
				Selector: &metav1.LabelSelector{MatchLabels: lbl},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: lbl},
					Spec: corev1.PodSpec{NodeSelector: map[string]string{"disk": "ssd"},
						Containers: []corev1.Container{{Name: "reviews", Command: []string{"sleep", "1"}}}},
				},
			},
		}
		for _, m := range mods {
			m(d)
		}
		return d
	}
	tests := []struct {
		name      string
		d         *appsv1.Deployment
		wantPods  int
		wantField string // error
	}{
		{"three replicas", dep(3), 3, ""},
		{"replicas unset: one", dep(1, func(d *appsv1.Deployment) { d.Spec.Replicas = nil }), 1, ""},
		{"zero replicas", dep(0), 0, ""},
		{"selector does not match the template", dep(1, func(d *appsv1.Deployment) { d.Spec.Selector.MatchLabels = map[string]string{"app": "x"} }), 0, "spec.template.metadata.labels"},
		{"no selector", dep(1, func(d *appsv1.Deployment) { d.Spec.Selector = nil }), 0, "spec.selector"},
		{"no containers", dep(1, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers = nil }), 0, "spec.template.spec.containers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pods, err := DeploymentPods(tt.d)
			if tt.wantField != "" {
				if err == nil || fieldOf(err) != tt.wantField {
					t.Fatalf("err %v (field %q), want an error on %s", err, fieldOf(err), tt.wantField)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(pods) != tt.wantPods {
				t.Fatalf("%d pods, want %d", len(pods), tt.wantPods)
			}
			hash := PodTemplateHash(&tt.d.Spec.Template)
			names := map[string]bool{}
			for _, p := range pods {
				prefix := "reviews-v1-" + hash + "-"
				if !strings.HasPrefix(p.Name, prefix) || len(p.Name) != len(prefix)+5 || names[p.Name] {
					t.Errorf("pod name %q: want %s<5 characters>, distinct", p.Name, prefix)
				}
				names[p.Name] = true
				want := map[string]string{"app": "reviews", "version": "v1", LabelPodTemplateHash: hash}
				if d := cmp.Diff(want, p.Labels); d != "" || p.Namespace != "prod" {
					t.Errorf("pod %s/%s labels (-want +got):\n%s", p.Namespace, p.Name, d)
				}
				if p.Spec.NodeSelector["disk"] != "ssd" || p.Spec.Containers[0].Name != "reviews" {
					t.Errorf("pod spec is not the template's: %+v", p.Spec)
				}
				if len(p.OwnerReferences) != 1 || p.OwnerReferences[0].Kind != "ReplicaSet" || p.OwnerReferences[0].Name != "reviews-v1-"+hash {
					t.Errorf("owner %+v, want ReplicaSet reviews-v1-%s", p.OwnerReferences, hash)
				}
			}
			again, _ := DeploymentPods(tt.d)
			for i := range pods {
				if pods[i].Name != again[i].Name {
					t.Errorf("pod names are not stable: %s then %s", pods[i].Name, again[i].Name)
				}
			}
		})
	}
	// A changed template is a new ReplicaSet: new pod names.
	a, _ := DeploymentPods(dep(1))
	b, _ := DeploymentPods(dep(1, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Command = []string{"sleep", "2"} }))
	if a[0].Name == b[0].Name {
		t.Errorf("a changed template kept pod name %s", a[0].Name)
	}
}

func twoNodes() []NodePlan {
	return []NodePlan{
		{Name: "node1", Index: 1, InternalIP: netip.MustParseAddr("10.100.0.1"), PodCIDR: netip.MustParsePrefix("10.200.1.0/24"), Labels: map[string]string{LabelHostname: "node1", "disk": "ssd"}},
		{Name: "node2", Index: 2, InternalIP: netip.MustParseAddr("10.100.0.2"), PodCIDR: netip.MustParsePrefix("10.200.2.0/24"), Labels: map[string]string{LabelHostname: "node2"}},
	}
}

func placed(s *Scheduled) map[string]string {
	out := map[string]string{}
	for _, p := range s.Pods {
		out[PodKey(p)] = p.Spec.NodeName + " " + p.Status.PodIP
	}
	return out
}

func TestSchedule(t *testing.T) {
	tests := []struct {
		name        string
		pods        []*corev1.Pod
		want        map[string]string
		wantPending []string
		wantErr     []string // substrings, one per error
	}{{
		name: "spread over the nodes, IPs from .11",
		pods: []*corev1.Pod{pod("p", "a", nil), pod("p", "b", nil), pod("p", "c", nil)},
		want: map[string]string{"p/a": "node1 10.200.1.11", "p/b": "node2 10.200.2.11", "p/c": "node1 10.200.1.12"},
	}, {
		name: "nodeName and nodeSelector",
		pods: []*corev1.Pod{
			pod("p", "a", nil, func(p *corev1.Pod) { p.Spec.NodeName = "node2" }),
			pod("p", "b", nil, func(p *corev1.Pod) { p.Spec.NodeSelector = map[string]string{"disk": "ssd"} }),
			pod("p", "c", nil, func(p *corev1.Pod) { p.Spec.NodeName = "node2" }),
		},
		want: map[string]string{"p/a": "node2 10.200.2.11", "p/b": "node1 10.200.1.11", "p/c": "node2 10.200.2.12"},
	}, {
		name: "status.podIP kept; the allocator skips it",
		pods: []*corev1.Pod{
			pod("p", "a", nil),
			pod("p", "b", nil, func(p *corev1.Pod) { p.Status.PodIP = "10.200.1.11" }),
		},
		want: map[string]string{"p/a": "node2 10.200.2.11", "p/b": "node1 10.200.1.11"},
	}, {
		name: "unschedulable pods are pending",
		pods: []*corev1.Pod{
			pod("p", "a", nil, func(p *corev1.Pod) { p.Spec.NodeName = "node9" }),
			pod("p", "b", nil, func(p *corev1.Pod) { p.Spec.NodeSelector = map[string]string{"gpu": "yes"} }),
		},
		want:        map[string]string{},
		wantPending: []string{"p/a", "p/b"},
	}, {
		name: "bad and duplicate status.podIP are errors",
		pods: []*corev1.Pod{
			pod("p", "a", nil, func(p *corev1.Pod) { p.Status.PodIP = "10.200.1.20" }),
			pod("p", "b", nil, func(p *corev1.Pod) { p.Status.PodIP = "10.200.1.20" }),
			pod("p", "c", nil, func(p *corev1.Pod) { p.Status.PodIP = "not-an-ip" }),
		},
		want:    map[string]string{"p/a": "node1 10.200.1.20"},
		wantErr: []string{"Pod p/b: field status.podIP: 10.200.1.20 is pod p/a's too", "Pod p/c: field status.podIP"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Schedule(&Manifests{Pods: tt.pods}, twoNodes(), NewAllocations())
			if d := cmp.Diff(tt.want, placed(s)); d != "" {
				t.Errorf("placement (-want +got):\n%s", d)
			}
			var pend []string
			for _, p := range s.Pending {
				pend = append(pend, PodKey(p))
				if p.Status.Phase != corev1.PodPending || p.Status.Conditions[0].Message == "" {
					t.Errorf("pending pod %s: status %+v, want Pending with a reason", PodKey(p), p.Status)
				}
			}
			if d := cmp.Diff(tt.wantPending, pend); d != "" {
				t.Errorf("pending (-want +got):\n%s", d)
			}
			if len(s.Errors) != len(tt.wantErr) {
				t.Fatalf("errors %v, want %d", s.Errors, len(tt.wantErr))
			}
			for i, e := range s.Errors {
				if !strings.Contains(e.Error(), tt.wantErr[i]) {
					t.Errorf("error %q, want it to contain %q", e, tt.wantErr[i])
				}
			}
			for _, p := range s.Pods {
				if p.Status.Phase != corev1.PodRunning || len(p.Status.PodIPs) != 1 || p.Status.HostIP == "" {
					t.Errorf("pod %s status %+v: want Running with podIPs and hostIP", PodKey(p), p.Status)
				}
			}
		})
	}
}

// TestScheduleStable: pods keep node and IP across reloads and as others
// come and go; a removed pod's IP is free again; ClusterIPs stay.
func TestScheduleStable(t *testing.T) {
	alloc := NewAllocations()
	m := &Manifests{
		Pods:     []*corev1.Pod{pod("p", "b", nil), pod("p", "c", nil), pod("p", "d", nil)},
		Services: []*corev1.Service{svc("p", "web", nil), svc("p", "fixed", nil, sp("x", 1, intstr.FromInt32(1)))},
	}
	m.Services[1].Spec.ClusterIP = "10.96.0.100" // the allocator's first: it must skip it
	first := Schedule(m, twoNodes(), alloc)
	// A pod that sorts first arrives, one goes: the others stay put.
	m.Pods = []*corev1.Pod{pod("p", "a", nil), pod("p", "b", nil), pod("p", "d", nil)}
	second := Schedule(m, twoNodes(), alloc)
	for _, k := range []string{"p/b", "p/d"} {
		if placed(first)[k] != placed(second)[k] {
			t.Errorf("%s moved: %s -> %s", k, placed(first)[k], placed(second)[k])
		}
	}
	if got, was := placed(second)["p/a"], placed(first)["p/c"]; got != was {
		t.Errorf("p/a got %s, want p/c's freed %s (least loaded node, lowest free IP)", got, was)
	}
	// Through JSON, as the kubelet keeps it, and again.
	third := Schedule(m, twoNodes(), roundTrip(t, alloc))
	if d := cmp.Diff(placed(second), placed(third)); d != "" {
		t.Errorf("placement after reload (-before +after):\n%s", d)
	}
	ips := map[string]string{}
	for _, s := range third.Services {
		ips[s.Name] = s.Spec.ClusterIP
		if len(s.Spec.ClusterIPs) != 1 || s.Spec.ClusterIPs[0] != s.Spec.ClusterIP || s.Spec.Type != corev1.ServiceTypeClusterIP {
			t.Errorf("service %s: clusterIPs %v type %s", s.Name, s.Spec.ClusterIPs, s.Spec.Type)
		}
	}
	if d := cmp.Diff(map[string]string{"web": "10.96.0.101", "fixed": "10.96.0.100"}, ips); d != "" {
		t.Errorf("cluster IPs (-want +got):\n%s", d)
	}
	// The manifests are untouched.
	if m.Services[0].Spec.ClusterIP != "" || m.Pods[0].Spec.NodeName != "" || m.Pods[0].Status.PodIP != "" {
		t.Errorf("Schedule wrote into the manifests")
	}
}

func roundTrip(t *testing.T, a *Allocations) *Allocations {
	t.Helper()
	path := filepath.Join(t.TempDir(), "alloc.json")
	b, err := jsonMarshal(a)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out := NewAllocations()
	b, _ = os.ReadFile(path)
	if err := jsonUnmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPlanNodes(t *testing.T) {
	tests := []struct {
		name  string
		m     *Manifests
		count int
		want  []string // "name index ip cidr"
		err   string
	}{{
		name:  "no Node objects: node1..N and the pods' nodeNames",
		m:     &Manifests{Pods: []*corev1.Pod{pod("p", "a", nil, func(p *corev1.Pod) { p.Spec.NodeName = "worker-a" }), pod("p", "b", nil, func(p *corev1.Pod) { p.Spec.NodeName = "node5" })}},
		count: 2,
		want:  []string{"node1 1 10.100.0.1 10.200.1.0/24", "node2 2 10.100.0.2 10.200.2.0/24", "worker-a 3 10.100.0.3 10.200.3.0/24", "node5 5 10.100.0.5 10.200.5.0/24"},
	}, {
		name: "Node objects: theirs, with defaults for what they leave out",
		m: &Manifests{Nodes: []*corev1.Node{
			{ObjectMeta: metav1.ObjectMeta{Name: "alpha"}, Spec: corev1.NodeSpec{PodCIDR: "10.50.0.0/24"},
				Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.100.0.50"}}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "beta"}},
		}},
		count: 5,
		want:  []string{"alpha 1 10.100.0.50 10.50.0.0/24", "beta 2 10.100.0.2 10.200.2.0/24"},
	}, {
		name: "overlapping pod CIDRs",
		m: &Manifests{Nodes: []*corev1.Node{
			{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: corev1.NodeSpec{PodCIDR: "10.200.2.0/23"}},
			{ObjectMeta: metav1.ObjectMeta{Name: "b"}},
		}},
		err: "Node b: field spec.podCIDR: 10.200.2.0/24 overlaps",
	}, {
		name: "bad pod CIDR",
		m:    &Manifests{Nodes: []*corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: corev1.NodeSpec{PodCIDR: "10.1.0.0"}}}},
		err:  "Node a: field spec.podCIDR",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plans, err := PlanNodes(tt.m, tt.count)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range plans {
				got = append(got, p.Name+" "+itoa(p.Index)+" "+p.InternalIP.String()+" "+p.PodCIDR.String())
				if p.Labels[LabelHostname] != p.Name {
					t.Errorf("node %s: no hostname label", p.Name)
				}
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("nodes (-want +got):\n%s", d)
			}
		})
	}
}

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestLoad: a directory with a broken object and a Deployment: the broken
// ones are reported (file, document, field) and left out, the rest kept.
func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.yaml", `apiVersion: v1
kind: Pod
metadata: {name: good, namespace: prod, labels: {app: web}}
spec:
  containers: [{name: c, command: [sleep, "100"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: typo}
spec:
  containers: [{name: c, comand: [sleep]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: prod}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, command: [sleep, "1"]}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: bad, namespace: prod}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, imagePullPolicy: Always, args: [x], tty: "yes"}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: mismatch, namespace: prod}
spec:
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: b}}
    spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: prod}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: prod}
spec: {hosts: [web], http: [{route: [{destination: {host: web}}]}]}
`)
	m, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	var pods []string
	for _, p := range m.Pods {
		pods = append(pods, PodKey(p))
	}
	if len(pods) != 3 || pods[0] != "prod/good" || !strings.HasPrefix(pods[1], "prod/web-") || !strings.HasPrefix(pods[2], "prod/web-") {
		t.Errorf("pods %v, want prod/good and two prod/web-<hash>-<suffix>", pods)
	}
	wantErrs := []string{
		"a.yaml (document 2): Pod typo: field spec.containers[0].comand: unknown field",
		"a.yaml (document 4): Deployment prod/bad: field spec.template.spec.containers.tty: wrong type: got string, want bool",
		"a.yaml (document 5): Deployment prod/mismatch: field spec.template.metadata.labels",
	}
	if len(m.Errors) != len(wantErrs) {
		t.Fatalf("errors %v, want %d", m.Errors, len(wantErrs))
	}
	for _, want := range wantErrs {
		found := false
		for _, e := range m.Errors {
			found = found || strings.Contains(e.Error(), want)
		}
		if !found {
			t.Errorf("no error contains %q: %v", want, m.Errors)
		}
	}
	var de *config.DecodeError
	if !errors.As(m.Errors[0], &de) && !errors.As(m.Errors[1], &de) {
		t.Errorf("decode errors are not *config.DecodeError: %v", m.Errors)
	}
	if len(m.Services) != 1 {
		t.Errorf("services %v", m.Services)
	}
	kinds := map[string]bool{}
	for _, o := range m.Others {
		kinds[o.Kind] = true
		if o.Kind == "VirtualService" && !strings.Contains(string(o.YAML), "hosts: [web]") {
			t.Errorf("the VirtualService is not kept as written: %s", o.YAML)
		}
	}
	if !kinds["VirtualService"] || !kinds["Deployment"] {
		t.Errorf("others hold %v, want the VirtualService and the Deployments", kinds)
	}
}

// TestRenderExamples: examples/ rendered as the lab renders it decodes
// with controller/config, without errors, and holds what the apiserver
// would report: Pods with IPs, Services with ClusterIPs, derived slices.
func TestRenderExamples(t *testing.T) {
	m, err := Load("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Errors) > 0 {
		t.Fatalf("examples/ has errors: %v", m.Errors)
	}
	nodes, err := PlanNodes(m, 2)
	if err != nil {
		t.Fatal(err)
	}
	s := Schedule(m, nodes, NewAllocations())
	v := &View{Pods: s.Pods, Services: s.Services, EndpointSlices: EndpointSlices(s.Services, s.Pods), Others: m.Others}
	for _, n := range nodes {
		v.Nodes = append(v.Nodes, NodeObject(n, map[string]string{"fibmesh.io/netns": "fm-" + n.Name}))
	}
	files, err := Render(v)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if n, err := WriteDir(dir, files); err != nil || n != len(files) {
		t.Fatalf("WriteDir: %d written, %v; want %d", n, err, len(files))
	}
	if n, err := WriteDir(dir, files); err != nil || n != 0 {
		t.Errorf("WriteDir of the same files: %d written, %v; want none", n, err)
	}
	snap, err := config.LoadDir(dir)
	if err != nil {
		t.Fatalf("the rendered view does not decode: %v", err)
	}
	count := map[string]int{}
	for _, r := range snap.Resources {
		count[r.GVK.Kind]++
		switch o := r.Object.(type) {
		case *corev1.Pod:
			if o.Status.PodIP == "" || o.Spec.NodeName == "" || o.Status.Phase != corev1.PodRunning {
				t.Errorf("pod %s: ip %q node %q phase %q", r.Name, o.Status.PodIP, o.Spec.NodeName, o.Status.Phase)
			}
		case *corev1.Service:
			if !ServiceCIDR.Contains(netip.MustParseAddr(o.Spec.ClusterIP)) {
				t.Errorf("service %s: clusterIP %q", r.Name, o.Spec.ClusterIP)
			}
		case *discoveryv1.EndpointSlice:
			if len(o.Endpoints) == 0 || len(o.Ports) != 1 || *o.Ports[0].Port == 0 {
				t.Errorf("slice %s: %+v", r.Name, o)
			}
		}
	}
	want := map[string]int{"Pod": 6, "Service": 3, "EndpointSlice": 3, "Node": 2, "Namespace": 3, "ServiceAccount": 3,
		"VirtualService": 2, "DestinationRule": 2, "ServiceEntry": 1, "PeerAuthentication": 2, "AuthorizationPolicy": 1}
	if d := cmp.Diff(want, count); d != "" {
		t.Errorf("objects in the view (-want +got):\n%s", d)
	}
	// README.md and docs/lab.md show commands with this pod's name:
	// change them with the frontend's template.
	if _, ok := files["pod_production_frontend-59bb89777b-64b87.yaml"]; !ok {
		t.Errorf("no pod production/frontend-59bb89777b-64b87, which README.md and docs/lab.md name")
	}
	// A pod goes: its file goes, the others stay untouched.
	delete(files, "pod_production_client.yaml")
	if n, err := WriteDir(dir, files); err != nil || n != 1 {
		t.Errorf("WriteDir after removing one pod: %d changed, %v; want 1", n, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "pod_production_client.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the removed pod's file is still there: %v", err)
	}
}
