package l4bench

import (
	"strings"
	"testing"
	"time"

	"github.com/fibmesh/fibmesh/perf/benchlab"
)

func TestCheckTunnel(t *testing.T) {
	top := DefaultTopology()
	t0 := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	clientID, serverID := top.SpiffeID("bench", "client"), top.SpiffeID("bench", "server")
	want := TunnelWant{ClientPod: "bench/client", ServerPod: "bench/server", Destination: "10.96.0.200:5201", ServerPort: 5201,
		ClientID: clientID, ServerID: serverID, Bytes: 1_000_000, Since: t0}
	out := func(mod func(*benchlab.AgentConn)) benchlab.AgentConn {
		c := benchlab.AgentConn{ID: 1, Direction: "outbound", Pod: "bench/client", Source: "10.200.1.11:40000", Destination: "10.96.0.200:5201",
			Upstream: "10.200.2.11:15008", LocalIdentity: clientID, PeerIdentity: serverID, Mode: "tunnel", TLSVersion: "TLS 1.3", TLSCipher: "TLS_AES_128_GCM_SHA256",
			State: "closed", BytesOut: 1_000_037, BytesIn: 10, Start: t0.Add(10 * time.Millisecond)}
		if mod != nil {
			mod(&c)
		}
		return c
	}
	in := func(mod func(*benchlab.AgentConn)) benchlab.AgentConn {
		c := benchlab.AgentConn{ID: 7, Direction: "inbound", Pod: "bench/server", Source: "10.200.1.11:40000", Destination: "10.200.2.11:5201",
			Upstream: "10.200.2.11:5201", LocalIdentity: serverID, PeerIdentity: clientID, Mode: "app", TLSVersion: "TLS 1.3", TLSCipher: "TLS_AES_128_GCM_SHA256",
			State: "closed", BytesOut: 10, BytesIn: 1_000_037, Start: t0.Add(12 * time.Millisecond)}
		if mod != nil {
			mod(&c)
		}
		return c
	}
	control := func(c *benchlab.AgentConn) { c.ID += 100; c.BytesOut, c.BytesIn = 37, 37 } // iperf3's control connection
	log := func(cs ...benchlab.AgentConn) benchlab.ConnLog { l := benchlab.ConnLog{}; l.Add(cs); return l }
	for _, tc := range []struct {
		name           string
		client, server benchlab.ConnLog
		wantErr        string
	}{
		{name: "carried", client: log(out(nil), out(control)), server: log(in(nil), in(control))},
		{name: "split over two streams", client: log(out(func(c *benchlab.AgentConn) { c.BytesOut = 500_000 }), out(func(c *benchlab.AgentConn) { c.ID = 2; c.BytesOut = 500_000 })),
			server: log(in(func(c *benchlab.AgentConn) { c.BytesIn = 999_000 }))},
		{name: "no agent tables", client: benchlab.ConnLog{}, server: benchlab.ConnLog{},
			wantErr: "the client's agent lists no mTLS connection of bench/client to 10.96.0.200:5201"},
		{name: "plaintext", client: log(out(func(c *benchlab.AgentConn) {
			c.TLSVersion, c.TLSCipher, c.PeerIdentity, c.Mode = "", "", "", "plaintext"
		})), server: log(in(nil)),
			wantErr: `seen instead: client side 10.200.1.11:40000 -> 10.96.0.200:5201 mode "plaintext" upstream 10.200.2.11:15008 tls="" peer=""`},
		{name: "wrong peer", client: log(out(nil)), server: log(in(func(c *benchlab.AgentConn) { c.PeerIdentity = top.SpiffeID("other", "x") })),
			wantErr: "the server's agent lists no mTLS connection to bench/server port 5201"},
		{name: "too few bytes", client: log(out(func(c *benchlab.AgentConn) { c.BytesOut = 100 })), server: log(in(nil)),
			wantErr: "the client's agent relayed 100 bytes of the 1000000 received"},
		{name: "an earlier round's", client: log(out(func(c *benchlab.AgentConn) { c.Start = t0.Add(-time.Minute) })), server: log(in(nil)),
			wantErr: "the client's agent lists no mTLS connection"},
		{name: "another pod's", client: log(out(nil)), server: log(in(func(c *benchlab.AgentConn) { c.Pod = "bench/other" })),
			wantErr: "the server's agent lists no mTLS connection"},
		{name: "inbound counted as outbound", client: log(out(func(c *benchlab.AgentConn) { c.Direction = "inbound" })), server: log(in(nil)),
			wantErr: "the client's agent lists no mTLS connection"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tunnel, err := CheckTunnel(tc.client, tc.server, want)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if tunnel != "TLS 1.3 TLS_AES_128_GCM_SHA256" {
					t.Errorf("tunnel = %q", tunnel)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v\nwant it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestParseConnectionsAndBypassed(t *testing.T) {
	body := `[{"id":3,"direction":"outbound","pod":"bench-plain/client-plain","source":"10.200.1.12:1","destination":"10.200.2.12:5201",
	  "state":"established","bytesOut":9,"bytesIn":0,"start":"2026-12-03T09:00:05Z","cluster":"x","chain":"y"}]`
	cs, err := benchlab.ParseConnections([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	l := benchlab.ConnLog{}
	l.Add(cs)
	t0 := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	if got := Bypassed(l, "bench-plain/client-plain", t0); len(got) != 1 || got[0].Destination != "10.200.2.12:5201" {
		t.Errorf("Bypassed = %+v, want the one connection", got)
	}
	if got := Bypassed(l, "bench-plain/client-plain", t0.Add(time.Minute)); len(got) != 0 {
		t.Errorf("a connection from before the run counted: %+v", got)
	}
	if got := Bypassed(l, "bench-plain/server-plain", t0); len(got) != 0 {
		t.Errorf("another pod's connection counted: %+v", got)
	}
	if _, err := benchlab.ParseConnections([]byte("404 page not found")); err == nil || !strings.Contains(err.Error(), "/connections") {
		t.Errorf("not JSON: err = %v", err)
	}
}
