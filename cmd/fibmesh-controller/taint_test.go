package main

import (
	"testing"

	xdsapi "github.com/fibmesh/fibmesh/api/xds"
	"github.com/fibmesh/fibmesh/controller/xds"
)

// TestAgentsServing: a node's startup taint is lifted only when its agent
// is connected and has accepted the flow table last sent.
func TestAgentsServing(t *testing.T) {
	fds := func(sent, acked string) xds.TypeStatus {
		return xds.TypeStatus{TypeURL: xdsapi.FlowTableType, Sent: sent, Acked: acked}
	}
	for _, tt := range []struct {
		name string
		st   xds.NodeStatus
		want bool
	}{
		{"flow table accepted", xds.NodeStatus{Node: "n1", InModel: true, Streams: 1, Types: []xds.TypeStatus{fds("v2", "v2")}}, true},
		{"another node", xds.NodeStatus{Node: "n2", InModel: true, Streams: 1, Types: []xds.TypeStatus{fds("v2", "v2")}}, false},
		{"disconnected", xds.NodeStatus{Node: "n1", InModel: true, Streams: 0, Types: []xds.TypeStatus{fds("v2", "v2")}}, false},
		{"not in the model", xds.NodeStatus{Node: "n1", InModel: false, Streams: 1, Types: []xds.TypeStatus{fds("v2", "v2")}}, false},
		{"flow table not acked yet", xds.NodeStatus{Node: "n1", InModel: true, Streams: 1, Types: []xds.TypeStatus{fds("v2", "v1")}}, false},
		{"flow table NACKed", xds.NodeStatus{Node: "n1", InModel: true, Streams: 1, Types: []xds.TypeStatus{{TypeURL: xdsapi.FlowTableType, Sent: "v2", Acked: "v2", NACK: &xds.NACK{Version: "v3"}}}}, false},
		{"only listeners", xds.NodeStatus{Node: "n1", InModel: true, Streams: 1, Types: []xds.TypeStatus{{TypeURL: "type.googleapis.com/envoy.config.listener.v3.Listener", Sent: "v2", Acked: "v2"}}}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := agentsServing([]xds.NodeStatus{tt.st})["n1"]; got != tt.want {
				t.Errorf("agentsServing[n1] = %v, want %v", got, tt.want)
			}
		})
	}
}
