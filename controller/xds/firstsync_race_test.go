package xds

import (
	"fmt"
	"slices"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// cla is a load assignment of name with n endpoints; gen makes its
// version differ (the port of the first endpoint).
func cla(t *testing.T, name string, n, gen int) *entry {
	t.Helper()
	m := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	lle := &endpointv3.LocalityLbEndpoints{}
	for i := range n {
		port := uint32(8080)
		if i == 0 {
			port += uint32(gen)
		}
		lle.LbEndpoints = append(lle.LbEndpoints, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
				Address: fmt.Sprintf("10.%d.%d.%d", i/65536, i/256%256, i%256), PortSpecifier: &core.SocketAddress_PortValue{PortValue: port}}}}}}})
	}
	m.Endpoints = []*endpointv3.LocalityLbEndpoints{lle}
	e, err := newEntry(resource.EndpointType, name, m, false)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// deltaDriver plays one delta stream by hand: the server's send loop
// (build when the type's sub is ready, as serve does) and an
// agent-like client that applies and ACKs each response.
type deltaDriver struct {
	t   *testing.T
	s   *Server
	st  *stream
	typ string
	got map[string]string // name → version the client holds
	out string            // nonce of the response the client has and not yet ACKed
}

func newDeltaDriver(t *testing.T, s *Server, typ string, names []string) *deltaDriver {
	d := &deltaDriver{t: t, s: s, typ: typ, got: map[string]string{},
		st: newStream(-1, true, "")}
	if err := s.handleDelta(d.st, &discovery.DeltaDiscoveryRequest{Node: &core.Node{Id: "node1"}, TypeUrl: typ, ResourceNamesSubscribe: names}); err != nil {
		t.Fatal(err)
	}
	return d
}

// send is one pass of serve's loop for the type: it builds and
// "sends" (the client applies it) when the sub is ready. false: nothing
// to send.
func (d *deltaDriver) send() bool {
	d.st.mu.Lock()
	sb := d.st.subs[d.typ]
	ready := sb != nil && sb.nonce == "" && (sb.dirty.Load() || len(sb.pages) > 0)
	var resp *discovery.DeltaDiscoveryResponse
	if ready {
		resp = d.s.buildDelta(d.st, sb)
	}
	d.st.mu.Unlock()
	if resp == nil {
		return false
	}
	if d.out != "" {
		d.t.Fatalf("two responses outstanding")
	}
	for _, r := range resp.Resources {
		d.got[r.Name] = r.Version
	}
	for _, n := range resp.RemovedResources {
		delete(d.got, n)
	}
	d.out = resp.Nonce
	return true
}

// ack ACKs the response the client holds. false: none.
func (d *deltaDriver) ack() bool {
	if d.out == "" {
		return false
	}
	nonce := d.out
	d.out = ""
	if err := d.s.handleDelta(d.st, &discovery.DeltaDiscoveryRequest{TypeUrl: d.typ, ResponseNonce: nonce}); err != nil {
		d.t.Fatal(err)
	}
	return true
}

// settle runs the protocol until nothing is left to send.
func (d *deltaDriver) settle() {
	for range 1000 {
		sent := d.send()
		acked := d.ack()
		if !sent && !acked {
			return
		}
	}
	d.t.Fatal("the stream never settled")
}

// want is what the client should hold: the scope's resources it
// subscribes to, at their versions.
func (d *deltaDriver) want(wants func(string) bool) map[string]string {
	sc := d.s.store.shared[d.typ]
	sc.mu.RLock()
	defer sc.mu.RUnlock()
	w := map[string]string{}
	for n, e := range sc.res {
		if wants(n) {
			w[n] = e.version
		}
	}
	return w
}

func diffVersions(got, want map[string]string) string {
	var out []string
	for n, v := range want {
		if got[n] != v {
			out = append(out, fmt.Sprintf("%s: has %q, want %q", n, got[n], v))
		}
	}
	for n := range got {
		if _, ok := want[n]; !ok {
			out = append(out, fmt.Sprintf("%s: held, removed on the server", n))
		}
	}
	slices.Sort(out)
	return fmt.Sprint(out)
}

// TestChangeDuringFirstSync: a delta client's first sync of EDS, with a
// change landing at every point of it (before and after each response,
// before and after each ACK): once the stream settles, the client holds
// every resource at its latest version. Run for a state of one page and
// for one of several (pageBytes), for a changed resource in the first
// page and in the last, and for a removal.
func TestChangeDuringFirstSync(t *testing.T) {
	for _, tc := range []struct {
		name      string
		endpoints int // per resource: ~2 kB per 100
		change    string
		remove    bool
	}{
		{"one page, change a0", 10, "a0", false},
		{"one page, change a7", 10, "a7", false},
		{"one page, remove a0", 10, "a0", true},
		{"paged, change a0 (first page)", 1000, "a0", false},
		{"paged, change a7 (last page)", 1000, "a7", false},
		{"paged, remove a0 (first page)", 1000, "a0", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for point := 0; ; point++ {
				s := New(Options{SyncConcurrency: -1})
				sc := s.store.shared[resource.EndpointType]
				var set []*entry
				for i := range 8 {
					set = append(set, cla(t, fmt.Sprintf("a%d", i), tc.endpoints, 0))
				}
				sc.update(set, nil)
				d := newDeltaDriver(t, s, resource.EndpointType, nil)
				// Steps of the first sync: send, ack, send, ack, ...;
				// the change lands before step point.
				changed := false
				for step := 0; ; step++ {
					if step == point {
						if tc.remove {
							sc.update(nil, []string{tc.change})
						} else {
							sc.update([]*entry{cla(t, tc.change, tc.endpoints, 1)}, nil)
						}
						changed = true
					}
					var did bool
					if step%2 == 0 {
						did = d.send()
					} else {
						did = d.ack()
					}
					if !did && step%2 == 0 {
						break
					}
				}
				d.settle()
				if diff := diffVersions(d.got, d.want(func(string) bool { return true })); diff != "[]" {
					t.Errorf("change before step %d: the client ended stale: %s", point, diff)
				}
				if !changed {
					return // point is past the sync's last step
				}
			}
		})
	}
}
