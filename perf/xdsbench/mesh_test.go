package xdsbench

import (
	"testing"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// The snapshot holds every object once, in a slice sized for them, and
// an edit replaces the edited object in place.
func TestMeshEdits(t *testing.T) {
	for _, tc := range []struct{ services, pods, nodes int }{{1000, 10000, 1000}, {25, 103, 7}, {1, 1, 1}} {
		m, err := New(tc.services, tc.pods, tc.nodes)
		if err != nil {
			t.Fatal(err)
		}
		rs := m.Snapshot.Resources
		if len(rs) != cap(rs) {
			t.Errorf("%v: %d resources in a slice of capacity %d", tc, len(rs), cap(rs))
		}
		m.SetCanary(0, 70)
		vs, ok := rs[m.vsAt[0]].Object.(*networkingv1.VirtualService)
		if !ok || vs.Name != "svc0" || vs.Spec.Http[0].Route[0].Weight != 70 {
			t.Errorf("%v: after SetCanary(0, 70) the snapshot has %#v", tc, rs[m.vsAt[0]].Object)
		}
		last := tc.pods - 1
		s := PodService(last, tc.pods, tc.services)
		m.SetReady(last, false)
		es, ok := rs[m.sliceAt[s]].Object.(*discoveryv1.EndpointSlice)
		if !ok || es != m.slices[s] {
			t.Fatalf("%v: service %d's slice is not where sliceAt says", tc, s)
		}
		if r := es.Endpoints[len(es.Endpoints)-1].Conditions.Ready; r == nil || *r {
			t.Errorf("%v: pod %d's endpoint ready = %v after SetReady(false)", tc, last, r)
		}
	}
}
