package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fibmesh/fibmesh/agent/admin"
	"github.com/fibmesh/fibmesh/internal/netns"
	"github.com/fibmesh/fibmesh/internal/testenv"
)

// fakeAgent is an agent's admin API with fixed answers.
type fakeAgent struct{}

func (fakeAgent) ConfigDump() admin.ConfigDump {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return admin.ConfigDump{Configs: []admin.TypeConfig{
		{Type: "CDS", TypeURL: "type.googleapis.com/envoy.config.cluster.v3.Cluster", VersionInfo: "CDS-3", LastUpdated: &at,
			Resources: []admin.Resource{{Name: "outbound|80||a.default.svc.cluster.local", Resource: json.RawMessage(`{"@type":"type.googleapis.com/envoy.config.cluster.v3.Cluster","name":"outbound|80||a.default.svc.cluster.local"}`)}}},
		{Type: "FDS", TypeURL: "type.googleapis.com/fibmesh.fib.v1.FlowTable", VersionInfo: "FDS-7", LastUpdated: &at,
			Resources: []admin.Resource{
				{Name: "mesh", Resource: json.RawMessage(`{"@type":"type.googleapis.com/fibmesh.fib.v1.FlowTable"}`)},
				{Name: "node1", Resource: json.RawMessage(`{"@type":"type.googleapis.com/fibmesh.fib.v1.FlowTable","node":"node1"}`)},
			},
			ErrorState: &admin.UpdateFailure{VersionInfo: "FDS-8", Details: `flow table "mesh": routes[0].prefix "10.200.2.0/33"`, At: at}},
	}}
}

func (fakeAgent) Pods() []admin.PodInfo {
	return []admin.PodInfo{
		{Namespace: "default", Name: "a", Identity: "spiffe://cluster.local/ns/default/sa/a", Netns: "/run/netns/fm-node1-pod1",
			SVID: &admin.SVIDInfo{SpiffeID: "spiffe://cluster.local/ns/default/sa/a", Serial: "1f2e", NotAfter: time.Now().Add(time.Hour)}},
		{Namespace: "default", Name: "b", Netns: "/run/netns/fm-node1-pod2", Error: "rpc error: code = PermissionDenied"},
	}
}

func (fakeAgent) FIBSummary() (admin.FIB, error) { return admin.FIB{}, nil }

func (fakeAgent) Connections() []admin.Connection {
	start := time.Now().Add(-time.Minute)
	return []admin.Connection{
		{ID: 1, Direction: "outbound", Listener: "outbound", Pod: "bank/teller",
			Source: netip.MustParseAddrPort("10.200.1.11:40000"), Destination: netip.MustParseAddrPort("10.96.90.9:9000"),
			Upstream: netip.MustParseAddrPort("10.200.2.11:15008"), Mode: "tunnel", Cluster: "outbound|9000||vault.bank.svc.cluster.local",
			LocalIdentity: "spiffe://cluster.local/ns/bank/sa/teller", PeerIdentity: "spiffe://cluster.local/ns/bank/sa/vault",
			TLSVersion: "TLS 1.3", TLSCipher: "TLS_AES_128_GCM_SHA256", State: "established", BytesOut: 3 << 20, BytesIn: 2048, Start: start},
		{ID: 2, Direction: "inbound", Listener: "inbound-plaintext", Pod: "bank/vault", State: "closed", Reason: "no-chain", Start: start, End: start.Add(time.Millisecond)},
	}
}

// OffloadFlows: connection 1's tunnel, offloaded then revoked (its
// entry toward the pod drops), and connection 3, offloaded.
func (fakeAgent) OffloadFlows() ([]admin.OffloadFlow, error) {
	at := time.Now().Add(-time.Second)
	local, remote := netip.MustParseAddrPort("10.200.1.11:40000"), netip.MustParseAddrPort("10.200.2.11:15008")
	return []admin.OffloadFlow{
		{ConnID: 1, Pod: "bank/teller", Local: local, Remote: remote,
			LocalIdentity: "spiffe://cluster.local/ns/bank/sa/teller", PeerIdentity: "spiffe://cluster.local/ns/bank/sa/vault",
			LocalIdentityID: 3, PeerIdentityID: 4, State: "revoked", Packets: 50000, Bytes: 70 << 20, Installed: at,
			Entries: []admin.OffloadFlowEntry{
				{Direction: "out", Src: local, Dst: remote, Action: "forward", SrcID: 3, DstID: 4, Packets: 30000, Bytes: 40 << 20},
				{Direction: "in", Src: remote, Dst: local, Action: "drop", SrcID: 4, DstID: 3, Packets: 2, Bytes: 132},
			},
			Revocation: &admin.Revocation{Pushed: at, RevokedAt: at, State: "dropped", FirstDropMs: 1.234, Dropped: 2}},
		{ConnID: 3, Pod: "bank/vault", Local: netip.MustParseAddrPort("10.200.1.12:15008"), Remote: netip.MustParseAddrPort("10.200.2.12:41000"),
			State: "offloaded", Packets: 10, Bytes: 1000, Installed: at,
			Entries: []admin.OffloadFlowEntry{
				{Direction: "out", Action: "forward", Packets: 5, Bytes: 500},
				{Direction: "in", Action: "forward", Packets: 5, Bytes: 500},
			}},
	}, nil
}

func (fakeAgent) Ready() (bool, string) { return true, "" }

func TestConfigDumpAndCerts(t *testing.T) {
	srv := httptest.NewServer(admin.Handler(fakeAgent{}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	for _, tt := range []struct {
		name     string
		cmd      func(args []string, stdout, stderr *bytes.Buffer) int
		args     []string
		code     int
		contains []string
	}{
		{"dump table", dumpCmd, []string{"--admin", u.Host}, 0, []string{
			"TYPE  VERSION  RESOURCES  UPDATED", "CDS   CDS-3    1", "FDS   FDS-7    2", "FDS-8",
			`FDS FDS-8 refused: flow table "mesh": routes[0].prefix "10.200.2.0/33"`}},
		{"dump one type", dumpCmd, []string{"--admin", u.Host, "fds"}, 0, []string{"FDS   FDS-7    mesh", "FDS   FDS-7    node1"}},
		{"dump json, flags after TYPE", dumpCmd, []string{"FDS", "--admin", u.Host, "-o", "json"}, 0, []string{`"version_info": "FDS-7"`, `"node": "node1"`}},
		{"dump yaml", dumpCmd, []string{"--admin", u.Host, "-o", "yaml"}, 0, []string{"version_info: CDS-3", "type: FDS"}},
		{"unknown type", dumpCmd, []string{"--admin", u.Host, "XDS"}, 1, []string{`type "XDS": not subscribed`}},
		{"two types", dumpCmd, []string{"--admin", u.Host, "CDS", "FDS"}, 2, []string{"too many arguments"}},
		{"bad -o", dumpCmd, []string{"--admin", u.Host, "-o", "xml"}, 2, []string{`-o "xml": want table, json or yaml`}},
		{"no agent", dumpCmd, []string{"--admin", "127.0.0.1:1"}, 1, []string{"agent admin API at 127.0.0.1:1 in the current network namespace", "is fibmesh-agent running there"}},
		{"missing netns", dumpCmd, []string{"--node", "fm-does-not-exist", "--admin", u.Host}, 1, []string{"--node fm-does-not-exist", "ip netns"}},
		{"netns path", dumpCmd, []string{"--node", "/run/netns/fm-node1"}, 2, []string{"want a network namespace name"}},
		{"certs", certsCmd, []string{"--admin", u.Host}, 0, []string{"POD        IDENTITY", "default/a  spiffe://cluster.local/ns/default/sa/a  1f2e", "default/b  -", "no SVID: rpc error: code = PermissionDenied"}},
		{"certs json", certsCmd, []string{"--admin", u.Host, "-o", "json"}, 0, []string{`"serial": "1f2e"`}},
		{"certs takes no args", certsCmd, []string{"--admin", u.Host, "x"}, 2, []string{"too many arguments"}},
		{"conns", connsCmd, []string{"--admin", u.Host}, 0, []string{"DIR", "bank/teller", "10.96.90.9:9000", "10.200.2.11:15008 (tunnel)",
			"spiffe://cluster.local/ns/bank/sa/vault", "TLS 1.3 TLS_AES_128_GCM_SHA256", "3.0MiB", "2.0KiB", "closed (no-chain)"}},
		{"conns by pod", connsCmd, []string{"--admin", u.Host, "--pod", "bank/vault", "-o", "json"}, 0, []string{`"pod": "bank/vault"`, `"reason": "no-chain"`}},
		{"conns state", connsCmd, []string{"--state=established", "--admin", u.Host}, 0, []string{"bank/teller"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := tt.cmd(tt.args, &out, &errb)
			all := out.String() + errb.String()
			if code != tt.code {
				t.Errorf("exit %d, want %d\n%s", code, tt.code, all)
			}
			for _, c := range tt.contains {
				if !strings.Contains(all, c) {
					t.Errorf("output lacks %q:\n%s", c, all)
				}
			}
		})
	}
}

func dumpCmd(args []string, stdout, stderr *bytes.Buffer) int {
	return configDump(args, stdout, stderr)
}
func certsCmd(args []string, stdout, stderr *bytes.Buffer) int {
	return certsCommand(args, stdout, stderr)
}
func connsCmd(args []string, stdout, stderr *bytes.Buffer) int {
	return connsCommand(args, stdout, stderr)
}

// The dispatch hook: fibctl config dump and fibctl certs reach dump.go.
func TestDispatchDumpAndCerts(t *testing.T) {
	for _, args := range [][]string{{"config", "dump", "--help"}, {"certs", "--help"}} {
		var out, errb bytes.Buffer
		code, ok := dispatch(args, &out, &errb)
		if !ok || code != 0 || !strings.Contains(errb.String(), "admin API") {
			t.Errorf("%v: ok %v code %d\n%s%s", args, ok, code, out.String(), errb.String())
		}
	}
}

// --node: the admin API is reached from inside the node's netns (its
// 127.0.0.1:15000 is not the caller's).
func TestConfigDumpInNetns(t *testing.T) {
	testenv.NeedRoot(t)
	name := fmt.Sprintf("fm-fc-dump-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	var ln net.Listener
	if err := netns.DoPath("/run/netns/"+name, func() (err error) {
		ln, err = net.Listen("tcp", admin.DefaultListen)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: admin.Handler(fakeAgent{})}
	go srv.Serve(ln)
	defer srv.Close()
	var out, errb bytes.Buffer
	if code := configDump([]string{"--node", name}, &out, &errb); code != 0 || !strings.Contains(out.String(), "FDS-7") {
		t.Errorf("config dump --node %s: exit %d\n%s%s", name, code, out.String(), errb.String())
	}
	out.Reset()
	if code := certsCommand([]string{"--node", name, "-o", "json"}, &out, &errb); code != 0 || !strings.Contains(out.String(), `"serial": "1f2e"`) {
		t.Errorf("certs --node %s: exit %d\n%s%s", name, code, out.String(), errb.String())
	}
}
