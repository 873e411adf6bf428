package xds

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/fibmesh/fibmesh/agent/xdsclient"
	"github.com/fibmesh/fibmesh/controller/config"
	"github.com/fibmesh/fibmesh/controller/model"
)

// TestRandomEditsConverge: 200 delta and 50 state-of-the-world clients
// on one server receive a stream of random edits (route weights,
// endpoint readiness, mTLS modes, a service and its clusters coming and
// going, a port changing), pushed back to back so that clients see some
// merged and some one by one; each client ends in exactly the state a
// client connecting after the last edit receives. State-of-the-world
// clients keep route configurations and load assignments that a later
// response does not name (as Envoy does: those types are not full-state
// in SotW), so for them those types must hold the fresh client's
// resources, equal, and may hold more.
func TestRandomEditsConverge(t *testing.T) {
	if testing.Short() {
		t.Skip("250 clients: not in -short")
	}
	const deltaClients, sotwClients, edits = 200, 50, 40
	e := newEnv(t)
	nodes := []string{"node1", "node2"}
	type client struct {
		c     *xdsclient.Client
		node  string
		delta bool
	}
	var clients []client
	for i := range deltaClients + sotwClients {
		node := nodes[i%len(nodes)]
		delta := i < deltaClients
		clients = append(clients, client{e.client(node, delta, nil), node, delta})
	}
	for _, c := range clients {
		synced(t, c.c)
	}

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 14))
	db := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: "db"}, Spec: corev1.ServiceSpec{
		ClusterIP: "10.96.0.20", Ports: []corev1.ServicePort{{Name: "http", Port: 5432, Protocol: corev1.ProtocolTCP}}}}
	dbIn := false
	permissive := map[string]bool{}
	kinds := []func() string{
		func() string {
			w := int32(rng.IntN(9)+1) * 10
			vs := e.virtualService("production", "reviews")
			vs.Spec.Http[1].Route[0].Weight, vs.Spec.Http[1].Route[1].Weight = w, 100-w
			return fmt.Sprintf("reviews canary %d/%d", w, 100-w)
		},
		func() string {
			var all []int
			for i, r := range e.snap.Resources {
				if _, ok := r.Object.(*discoveryv1.EndpointSlice); ok {
					all = append(all, i)
				}
			}
			// A changed copy replaces it, as a store does.
			at := all[rng.IntN(len(all))]
			es := e.snap.Resources[at].Object.(*discoveryv1.EndpointSlice).DeepCopy()
			e.snap.Resources[at].Object = es
			ep := &es.Endpoints[rng.IntN(len(es.Endpoints))]
			ready := ep.Conditions.Ready == nil || !*ep.Conditions.Ready
			ep.Conditions.Ready = &ready
			return fmt.Sprintf("endpoint %s of %s ready=%v", ep.Addresses[0], es.Name, ready)
		},
		func() string {
			app := []string{"ratings", "frontend", "reviews"}[rng.IntN(3)]
			if permissive[app] {
				e.snap.Resources = slices.DeleteFunc(e.snap.Resources, func(r config.Resource) bool {
					pa, ok := r.Object.(*securityv1.PeerAuthentication)
					return ok && pa.Namespace == "production" && pa.Name == app
				})
			} else {
				addPermissive(e.snap, "production", app)
			}
			permissive[app] = !permissive[app]
			return fmt.Sprintf("%s PERMISSIVE=%v", app, permissive[app])
		},
		func() string {
			if dbIn {
				e.snap.Resources = slices.DeleteFunc(e.snap.Resources, func(r config.Resource) bool { return r.Object == db })
			} else {
				e.snap.Resources = append(e.snap.Resources, config.Resource{GVK: schema.GroupVersionKind{Version: "v1", Kind: "Service"},
					Namespace: db.Namespace, Name: db.Name, Object: db})
			}
			dbIn = !dbIn
			return fmt.Sprintf("service db present=%v", dbIn)
		},
		func() string {
			c := db.DeepCopy() // a changed copy replaces it, as a store does
			c.Spec.Ports[0].Port = int32(5432 + rng.IntN(3))
			for i, r := range e.snap.Resources {
				if r.Object == db {
					e.snap.Resources[i].Object = c
				}
			}
			db = c
			return fmt.Sprintf("db port %d (present=%v)", db.Spec.Ports[0].Port, dbIn)
		},
	}
	for i := range edits {
		what := kinds[rng.IntN(len(kinds))]()
		t.Logf("edit %d: %s", i, what)
		if rng.IntN(3) == 0 {
			// Push without waiting: the next edit may merge with it.
			m, err := buildNext(e)
			if err != nil {
				t.Fatal(err)
			}
			e.srv.Update(m)
			continue
		}
		e.push()
	}
	e.push() // and wait for the last

	fresh := map[string]map[bool]*xdsclient.Client{}
	for _, n := range nodes {
		fresh[n] = map[bool]*xdsclient.Client{true: e.client(n, true, nil), false: e.client(n, false, nil)}
		synced(t, fresh[n][true])
		synced(t, fresh[n][false])
	}
	deadline := time.Now().Add(30 * time.Second)
	for i, c := range clients {
		want := fresh[c.node][c.delta]
		for {
			diff := stateDiff(c.c, want, c.delta)
			if diff == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("client %d (node %s, delta=%v) did not converge to a fresh client's state: %s", i, c.node, c.delta, diff)
			}
			time.Sleep(10 * time.Millisecond) // polling the client's state
		}
	}
}

// stateDiff says how got's resources differ from want's ("" when they
// are the same; for SotW, see TestRandomEditsConverge).
func stateDiff(got, want *xdsclient.Client, delta bool) string {
	for _, typ := range Types {
		g, w := got.Resources(typ), want.Resources(typ)
		exact := delta || cache.ResourceRequiresFullStateInSotw(typ)
		if exact && len(g) != len(w) {
			return fmt.Sprintf("%s: %d resources, want %d", ShortType(typ), len(g), len(w))
		}
		for name, wr := range w {
			gr, ok := g[name]
			if !ok {
				return fmt.Sprintf("%s: no %s", ShortType(typ), name)
			}
			if !proto.Equal(gr, wr) {
				return fmt.Sprintf("%s: %s differs", ShortType(typ), name)
			}
		}
	}
	return ""
}

// buildNext builds the next model of e.snap without pushing it.
func buildNext(e *env) (*model.Model, error) {
	m, err := model.Build(e.snap, e.m, model.Options{})
	if err != nil {
		return nil, err
	}
	e.m = m
	return m, nil
}
