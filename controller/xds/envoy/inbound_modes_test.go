package envoy

import (
	"net/netip"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/slowpath/xdsconf"
)

// TestInboundPortModesShared: the inbound listeners are shared by every
// pod of a node, and a listener picks a chain by port before address.
// What each pod accepts on each port must be exactly its mode for that
// port, whatever chains other pods have. The listeners are fed through
// slowpath/xdsconf (Envoy's match order) and the decision read back.
func TestInboundPortModesShared(t *testing.T) {
	type conn struct {
		mtls      bool   // inbound (15008) or inbound-plaintext (15006)
		dst, src  string // addr:port
		allow     bool
		wantChain string // when allowed: the chain that serves it
	}
	const a, b = "10.0.0.1", "10.0.0.2"
	onlyFrom := &model.AuthzPolicy{Name: "p", Namespace: "ns", Workloads: []string{"ns/a"}, Action: "ALLOW",
		Rules: []model.AuthzRule{{From: []model.AuthzSource{{IPBlocks: []string{"10.9.0.0/16"}}}}}}
	for _, tc := range []struct {
		name         string
		aMode, bMode model.Mode
		aPorts       map[uint32]model.Mode
		bServes      []model.Port // a service whose endpoint is b
		policies     []*model.AuthzPolicy
		conns        []conn
	}{{
		name:  "STRICT port under PERMISSIVE default, no other pod on the port",
		aMode: model.ModePermissive, bMode: model.ModeStrict,
		aPorts: map[uint32]model.Mode{9000: model.ModeStrict},
		conns: []conn{
			{dst: a + ":9000", src: "10.9.0.5:1000", allow: false},
			{mtls: true, dst: a + ":9000", src: "10.9.0.5:1000", allow: true, wantChain: "ns/a|9000"},
			{dst: a + ":8080", src: "10.9.0.5:1000", allow: true, wantChain: "ns/a|*"},
			{dst: b + ":9000", src: "10.9.0.5:1000", allow: false},
			{mtls: true, dst: b + ":9000", src: "10.9.0.5:1000", allow: true, wantChain: "ns/b|9000"},
		},
	}, {
		name:  "STRICT port under PERMISSIVE default, another PERMISSIVE pod serves it",
		aMode: model.ModePermissive, bMode: model.ModePermissive,
		aPorts:  map[uint32]model.Mode{9000: model.ModeStrict},
		bServes: []model.Port{tcpPort(9000)},
		conns: []conn{
			{dst: a + ":9000", src: "10.9.0.5:1000", allow: false},
			{dst: b + ":9000", src: "10.9.0.5:1000", allow: true, wantChain: "ns/b|9000"},
			{mtls: true, dst: a + ":9000", src: "10.9.0.5:1000", allow: true, wantChain: "ns/a|9000"},
		},
	}, {
		name:  "PERMISSIVE pod without a service on a port another pod serves",
		aMode: model.ModePermissive, bMode: model.ModePermissive,
		bServes:  []model.Port{tcpPort(8080)},
		policies: []*model.AuthzPolicy{onlyFrom},
		conns: []conn{
			{dst: a + ":8080", src: "10.9.0.5:1000", allow: true, wantChain: "ns/a|8080"},
			{mtls: true, dst: a + ":8080", src: "10.9.0.5:1000", allow: true, wantChain: "ns/a|8080"},
			{dst: a + ":8080", src: "10.8.0.5:1000", allow: false}, // a's RBAC applies
			{dst: b + ":8080", src: "10.8.0.5:1000", allow: true, wantChain: "ns/b|8080"},
		},
	}, {
		name:  "PERMISSIVE pod without a service on a port a STRICT pod serves",
		aMode: model.ModePermissive, bMode: model.ModeStrict,
		bServes:  []model.Port{tcpPort(8080)},
		policies: []*model.AuthzPolicy{onlyFrom},
		conns: []conn{
			// b has no plaintext chain (STRICT), so a's catch-all serves
			// plaintext; over mTLS b's chain names 8080, and a has its own.
			{dst: a + ":8080", src: "10.9.0.5:1000", allow: true, wantChain: "ns/a|*"},
			{mtls: true, dst: a + ":8080", src: "10.9.0.5:1000", allow: true, wantChain: "ns/a|8080"},
			{mtls: true, dst: a + ":8080", src: "10.8.0.5:1000", allow: false}, // a's RBAC applies
			{dst: b + ":8080", src: "10.9.0.5:1000", allow: false},
			{mtls: true, dst: b + ":8080", src: "10.8.0.5:1000", allow: true, wantChain: "ns/b|8080"},
		},
	}, {
		name:  "DISABLE port under STRICT default",
		aMode: model.ModeStrict, bMode: model.ModePermissive,
		aPorts: map[uint32]model.Mode{7000: model.ModeDisable},
		conns: []conn{
			{mtls: true, dst: a + ":7000", src: "10.9.0.5:1000", allow: false},
			{dst: a + ":7000", src: "10.9.0.5:1000", allow: true, wantChain: "ns/a|7000"},
			{dst: a + ":7001", src: "10.9.0.5:1000", allow: false},
			{mtls: true, dst: a + ":7001", src: "10.9.0.5:1000", allow: true, wantChain: "ns/a|*"},
			{dst: b + ":7000", src: "10.9.0.5:1000", allow: true, wantChain: "ns/b|7000"},
			{mtls: true, dst: b + ":7000", src: "10.9.0.5:1000", allow: true, wantChain: "ns/b|7000"},
		},
	}, {
		name:  "DISABLE port under PERMISSIVE default",
		aMode: model.ModePermissive, bMode: model.ModeStrict,
		aPorts: map[uint32]model.Mode{7000: model.ModeDisable},
		conns: []conn{
			{mtls: true, dst: a + ":7000", src: "10.9.0.5:1000", allow: false},
			{dst: a + ":7000", src: "10.9.0.5:1000", allow: true, wantChain: "ns/a|7000"},
			{mtls: true, dst: b + ":7000", src: "10.9.0.5:1000", allow: true, wantChain: "ns/b|7000"},
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			wa, wb := workload("a", a, tc.aMode), workload("b", b, tc.bMode)
			wa.PortModes = tc.aPorts
			var svcs []*model.Service
			if tc.bServes != nil {
				svcs = append(svcs, service("b", []string{"10.1.0.2"}, tc.bServes, wb))
			}
			m := mesh(svcs, []*model.Workload{wa, wb}, nil, nil, tc.policies)
			ls := nodeListeners(t, m, "n1")
			res := map[string]proto.Message{}
			for _, l := range ls {
				res[l.Name] = l
			}
			s := xdsconf.NewStore()
			if err := s.Update(resource.ListenerType, res, "1"); err != nil {
				t.Fatalf("xdsconf refuses the listeners: %v", err)
			}
			snap := s.Snapshot()
			for _, c := range tc.conns {
				l := snap.InboundPlaintext
				if c.mtls {
					l = snap.Inbound
				}
				dst, src := netip.MustParseAddrPort(c.dst), netip.MustParseAddrPort(c.src)
				fc := l.Match(xdsconf.MatchInput{Destination: dst, Source: src})
				allowed, name := false, ""
				if fc != nil {
					name = fc.Name
					allowed = fc.RBAC.Evaluate(xdsconf.AuthzInput{Source: src, Destination: dst}).Allowed
				}
				if allowed != c.allow || (c.allow && name != c.wantChain) {
					t.Errorf("mtls=%v %s from %s: chain %q allowed %v; want allowed %v by %q", c.mtls, c.dst, c.src, name, allowed, c.allow, c.wantChain)
				}
			}
		})
	}
}
