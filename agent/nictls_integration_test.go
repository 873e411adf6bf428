package agent_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/fibmesh/fibmesh/agent/admin"
	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	"github.com/fibmesh/fibmesh/lab"
)

// routeMarks reads the flow tables n's agent holds (/config_dump) and
// returns the nodes whose routes are marked nic_tls_offload, and those
// whose routes are not.
func routeMarks(t *testing.T, n *lab.Node) (on, off []string) {
	t.Helper()
	var d admin.ConfigDump
	adminJSON(t, n, "/config_dump", &d)
	for _, tc := range d.Configs {
		if tc.Type != "FDS" {
			continue
		}
		for _, r := range tc.Resources {
			var a anypb.Any
			if err := protojson.Unmarshal(r.Resource, &a); err != nil {
				t.Fatalf("flow table %s: %v", r.Name, err)
			}
			var ft fibv1.FlowTable
			if err := a.UnmarshalTo(&ft); err != nil {
				t.Fatalf("flow table %s: %v", r.Name, err)
			}
			for _, rt := range ft.GetRoutes() {
				if rt.GetNicTlsOffload() {
					on = append(on, rt.GetNode())
				} else {
					off = append(off, rt.GetNode())
				}
			}
		}
	}
	slices.Sort(on)
	slices.Sort(off)
	return slices.Compact(on), slices.Compact(off)
}

// Real agents on the lab's veths: node1's forced on, node2's auto (a
// veth has no kTLS offload). Each says its decision once at start-up,
// reports it to the controller, and both hold flow tables whose routes
// to node1 are marked and to node2 are not. The controller takes reports
// from authenticated streams only, as fibmesh-controller's TLS listener
// has them: it is restarted so, and the agents report again on
// reconnecting.
func TestNICTLSReportedToFlowTables(t *testing.T) {
	e := setupPerNode(t, []string{"--nic-ktls-offload=on"}, nil)
	e.ctl.stop()
	e.ctl.requireNode = true
	e.ctl.start(t)
	for i, want := range []string{
		`msg="NIC kTLS offload" offload=true mode=on reason="forced by --nic-ktls-offload=on"`,
		`msg="NIC kTLS offload" offload=false mode=auto reason="NIC ` + e.nodes[1].NIC + ` (profile veth) does not offload kTLS`,
	} {
		if log := e.agents[i].log.String(); !strings.Contains(log, want) {
			t.Errorf("agent %s did not log %s:\n%s", e.nodes[i].Name, want, log)
		}
	}
	for _, n := range e.nodes {
		deadline := time.Now().Add(10 * time.Second)
		for {
			on, off := routeMarks(t, n)
			if slices.Equal(on, []string{"node1"}) && slices.Equal(off, []string{"node2"}) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("agent %s holds routes marked nic_tls_offload to %v, unmarked to %v; want [node1] and [node2]", n.Name, on, off)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
