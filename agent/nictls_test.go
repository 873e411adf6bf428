package agent

import (
	"errors"
	"flag"
	"io"
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	nicprofiles "github.com/fibmesh/fibmesh/nic-profiles"
)

func TestParseNICTLSMode(t *testing.T) {
	tests := []struct {
		in      string
		want    NICTLSMode
		wantErr bool
	}{
		{in: "auto", want: NICTLSAuto},
		{in: "on", want: NICTLSOn},
		{in: "off", want: NICTLSOff},
		{in: "", wantErr: true},
		{in: "ON", wantErr: true},
		{in: "true", wantErr: true},
		{in: "forced", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseNICTLSMode(tt.in)
			// As a flag: the flag package adds its own prefix.
			fs := flag.NewFlagSet("fibmesh-agent", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var m NICTLSMode
			fs.Var(&m, NICTLSFlag, "")
			ferr := fs.Parse([]string{"--" + NICTLSFlag + "=" + tt.in})
			if tt.wantErr {
				for _, e := range []error{err, ferr} {
					if e == nil {
						t.Fatalf("%q accepted; want an error", tt.in)
					}
					for _, s := range []string{"--nic-ktls-offload", `"` + tt.in + `"`, "auto", "on", "off"} {
						if !strings.Contains(e.Error(), s) {
							t.Errorf("error %q does not name %s", e, s)
						}
					}
				}
				return
			}
			if err != nil || ferr != nil {
				t.Fatalf("%q: %v / %v", tt.in, err, ferr)
			}
			if got != tt.want || m != tt.want {
				t.Errorf("%q parsed as %q, as a flag %q; want %q", tt.in, got, m, tt.want)
			}
		})
	}
}

// detection runs the real profile choice (nicprofiles.Choose) on facts
// for driver with the tls-hw-* features given.
func detection(t *testing.T, driver string, tx, rx bool) func(string) (*nicprofiles.Detection, error) {
	return func(ifname string) (*nicprofiles.Detection, error) {
		d, err := nicprofiles.Choose(nicprofiles.Facts{Interface: ifname, Driver: driver, MTU: 1500, Features: map[string]nicprofiles.Feature{
			nicprofiles.FeatureTLSTX: {On: tx, Fixed: !tx}, nicprofiles.FeatureTLSRX: {On: rx, Fixed: !rx},
		}})
		if err != nil {
			t.Fatal(err)
		}
		return d, nil
	}
}

func TestDecideNICTLS(t *testing.T) {
	noDetect := func(string) (*nicprofiles.Detection, error) {
		t.Error("on and off must not detect the NIC")
		return nil, errors.New("called")
	}
	tests := []struct {
		name   string
		mode   NICTLSMode
		detect func(string) (*nicprofiles.Detection, error)
		want   bool
		reason []string
	}{
		{"forced on", NICTLSOn, noDetect, true, []string{"forced by --nic-ktls-offload=on"}},
		{"forced off", NICTLSOff, noDetect, false, []string{"--nic-ktls-offload=off"}},
		{"auto: veth", NICTLSAuto, detection(t, "veth", false, false), false, []string{"NIC eth0 (profile veth) does not offload kTLS"}},
		{"zero mode is auto", "", detection(t, "veth", false, false), false, []string{"does not offload kTLS"}},
		{"auto: mlx5 with crypto", NICTLSAuto, detection(t, "mlx5_core", true, true), true,
			[]string{"NIC eth0 (profile mlx5_core) offloads kTLS TLS 1.2 AES-128-GCM (tx=true rx=true)"}},
		{"auto: mlx5, tx only", NICTLSAuto, detection(t, "mlx5_core", true, false), true, []string{"tx=true rx=false", "tls-hw-rx-offload is off"}},
		{"auto: mlx5 without crypto", NICTLSAuto, detection(t, "mlx5_core", false, false), false,
			[]string{"does not offload kTLS", "tls-hw-tx-offload is off [fixed]"}},
		{"auto: an unknown driver that turns tls-hw-tx-offload on", NICTLSAuto, detection(t, "funeth", true, false), true, []string{"profile generic", "TLS 1.2 AES-128-GCM"}},
		{"auto: NIC missing", NICTLSAuto, func(string) (*nicprofiles.Detection, error) { return nil, errors.New("no such device") },
			false, []string{"NIC eth0 not detected (no such device): no offload"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := DecideNICTLS(tt.mode, "eth0", tt.detect)
			if d.Offload != tt.want {
				t.Errorf("offload %v; want %v (%s)", d.Offload, tt.want, d.Reason)
			}
			for _, r := range tt.reason {
				if !strings.Contains(d.Reason, r) {
					t.Errorf("reason %q does not say %q", d.Reason, r)
				}
			}
		})
	}
}

// The flow tables of node1 in a three-node mesh: node2's agent reported
// an offloading NIC, node3's did not.
func nicTables(node2Offloads bool) map[string]proto.Message {
	return map[string]proto.Message{
		"mesh/0": &fibv1.FlowTable{Node: "mesh/0", Routes: []*fibv1.Route{
			{Prefix: "10.200.1.0/24", NextHop: "10.100.0.1", Node: "node1", NicTlsOffload: true},
			{Prefix: "10.200.1.11/32", NextHop: "10.100.0.1", Node: "node1", IdentityId: 1, NicTlsOffload: true},
			{Prefix: "10.200.2.0/24", NextHop: "10.100.0.2", Node: "node2", NicTlsOffload: node2Offloads},
		}},
		"mesh/1": &fibv1.FlowTable{Node: "mesh/1", Routes: []*fibv1.Route{
			{Prefix: "10.200.2.21/32", NextHop: "10.100.0.2", Node: "node2", IdentityId: 2, NicTlsOffload: node2Offloads},
			{Prefix: "10.201.0.5/32", NextHop: "10.100.0.2", Node: "node2", IdentityId: 2, NicTlsOffload: node2Offloads}, // outside node2's CIDR
			{Prefix: "10.200.3.0/24", NextHop: "10.100.0.3", Node: "node3"},
			{Prefix: "10.200.3.31/32", NextHop: "10.100.0.3", Node: "node3", IdentityId: 3},
		}},
		"node1": &fibv1.FlowTable{Node: "node1", LocalPods: []*fibv1.LocalPod{{Namespace: "prod", Name: "a", Ip: "10.200.1.11", IdentityId: 1}}},
	}
}

func TestNICTLSPeer(t *testing.T) {
	tests := []struct {
		peer string
		want bool // with this node's NIC offloading and node2's too
	}{
		{"10.200.2.21", true},  // a pod on node2 (host route)
		{"10.201.0.5", true},   // a pod on node2 outside its CIDR
		{"10.200.2.99", true},  // an address in node2's CIDR whose pod is not known yet
		{"10.200.3.31", false}, // a pod on node3, whose NIC does not offload
		{"10.200.3.7", false},  // node3's CIDR
		{"10.200.1.11", false}, // a pod on this node: its tunnel never crosses the NIC
		{"10.200.1.12", false}, // this node's CIDR
		{"192.0.2.1", false},   // no route
		{"::ffff:10.200.2.21", true},
		{"fd00::1", false},
	}
	var gen uint64 = 1
	tables := nicTables(true)
	n := &nicTLS{node: "node1", dec: NICTLSDecision{Offload: true},
		gen: func() uint64 { return gen }, tables: func() map[string]proto.Message { return tables }}
	for _, tt := range tests {
		if got := n.peer(netip.MustParseAddr(tt.peer)); got != tt.want {
			t.Errorf("NICTLS(%s) = %v; want %v", tt.peer, got, tt.want)
		}
	}
	if !n.local() {
		t.Error("LocalNICTLS false for an offloading node")
	}
	if md := n.metadata(); md.GetFields()[fibv1.NodeMetadataNICTLS].GetBoolValue() != true {
		t.Errorf("node metadata %v does not report offload", md)
	}

	// node2 stops offloading: the next generation of the tables says so.
	tables = nicTables(false)
	if !n.peer(netip.MustParseAddr("10.200.2.21")) {
		t.Error("the index was rebuilt although the tables' generation did not move")
	}
	gen++
	for _, tt := range tests {
		if got := n.peer(netip.MustParseAddr(tt.peer)); got {
			t.Errorf("NICTLS(%s) = true after node2's NIC stopped offloading", tt.peer)
		}
	}

	// This node's NIC does not offload: never, whatever the peer's.
	tables = nicTables(true)
	gen++
	off := &nicTLS{node: "node1", dec: NICTLSDecision{}, gen: n.gen, tables: n.tables}
	for _, tt := range tests {
		if off.peer(netip.MustParseAddr(tt.peer)) {
			t.Errorf("NICTLS(%s) = true where this node's NIC does not offload", tt.peer)
		}
	}
	if off.local() {
		t.Error("LocalNICTLS true for a node that does not offload")
	}
	if md := off.metadata(); md.GetFields()[fibv1.NodeMetadataNICTLS].GetBoolValue() {
		t.Errorf("node metadata %v reports offload", md)
	}

	// Before any flow table (the xDS client not started yet): false.
	empty := &nicTLS{node: "node1", dec: NICTLSDecision{Offload: true}, gen: func() uint64 { return 0 }, tables: func() map[string]proto.Message { return nil }}
	if empty.peer(netip.MustParseAddr("10.200.2.21")) {
		t.Error("NICTLS true with no flow table")
	}
}

// Two routes of one prefix that disagree (a pod moving between nodes
// while the tables converge) answer no offload.
func TestNICIndexDisagreement(t *testing.T) {
	ix := buildNICIndex("node1", map[string]*fibv1.FlowTable{
		"mesh/0": {Routes: []*fibv1.Route{{Prefix: "10.200.2.21/32", Node: "node2", NicTlsOffload: true}}},
		"mesh/1": {Routes: []*fibv1.Route{{Prefix: "10.200.2.21/32", Node: "node3"}}},
	})
	if ix.offloads(netip.MustParseAddr("10.200.2.21")) {
		t.Error("offload where the two routes of the prefix disagree")
	}
}

func BenchmarkNICTLSPeer(b *testing.B) {
	tables := nicTables(true)
	n := &nicTLS{node: "node1", dec: NICTLSDecision{Offload: true}, gen: func() uint64 { return 1 }, tables: func() map[string]proto.Message { return tables }}
	peer := netip.MustParseAddr("10.200.2.99")
	b.ReportAllocs()
	for b.Loop() {
		n.peer(peer)
	}
}
