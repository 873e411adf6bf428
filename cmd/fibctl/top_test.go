package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fibmesh/fibmesh/agent/admin"
)

func TestRate(t *testing.T) {
	tests := []struct {
		cur, prev uint64
		dt, want  float64
	}{
		{2000, 1000, 2, 500},
		{1000, 1000, 2, 0},
		{500, 1000, 2, 0}, // the counter went back: an agent restart
		{1000, 0, 0, 0},   // no time passed
		{1000, 0, -1, 0},
	}
	for _, tt := range tests {
		if got := rate(tt.cur, tt.prev, tt.dt); got != tt.want {
			t.Errorf("rate(%d, %d, %v) = %v, want %v", tt.cur, tt.prev, tt.dt, got, tt.want)
		}
	}
}

// topConnRow is what TestComputeTop compares of a connection.
type topConnRow struct {
	ID                 uint64
	Out, In, XDPPkts   float64
	State, Offload     string
	AgeSeconds, XDPBps float64
}

func TestComputeTop(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 17, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	conn := func(id uint64, state, offload string, out, in uint64, start, end float64) admin.Connection {
		c := admin.Connection{ID: id, Direction: "outbound", Pod: "ns/p", State: state, Offload: offload,
			BytesOut: out, BytesIn: in, Start: at(start)}
		if end != 0 {
			c.End = at(end)
		}
		return c
	}
	flow := func(id uint64, pkts, bytes uint64, installed float64) admin.OffloadFlow {
		return admin.OffloadFlow{ConnID: id, Pod: "ns/p", State: "offloaded", Packets: pkts, Bytes: bytes, Installed: at(installed)}
	}
	prev := topRead{at: at(10), conns: []admin.Connection{
		conn(1, "established", "userspace", 1000, 1000, 0, 0),
		conn(2, "offloaded", "splice", 10000, 0, 0, 0),
		conn(3, "l7", "", 0, 0, 0, 0),
		conn(5, "closed", "", 50, 50, 0, 5),
	}, flows: []admin.OffloadFlow{flow(2, 100, 10000, 1)}}
	cur := topRead{at: at(12), conns: []admin.Connection{
		conn(1, "established", "userspace", 3000, 2000, 0, 0), // 1000 B/s out, 500 in
		conn(2, "offloaded", "splice", 30000, 0, 0, 0),        // 10000 B/s out
		conn(3, "l7", "", 0, 0, 0, 0),                         // idle
		conn(4, "established", "userspace", 400, 0, 11, 0),    // new: 400 B over its 1 s
		conn(5, "closed", "", 50, 50, 0, 5),                   // closed before prev: left out
		conn(6, "closed", "", 300, 300, 10.5, 11),             // closed within: 600 B over 0.5 s
	}, flows: []admin.OffloadFlow{flow(2, 300, 30000, 1), flow(7, 50, 5000, 11.5)}}

	tests := []struct {
		name      string
		prev      *topRead
		opts      topOptions
		wantConns []topConnRow
		wantFlows []uint64
		wantSum   TopSummary
	}{
		{
			name: "by rate", prev: &prev, opts: topOptions{sort: "rate"},
			wantConns: []topConnRow{
				{ID: 2, Out: 10000, State: "offloaded", Offload: "splice", AgeSeconds: 12, XDPPkts: 100, XDPBps: 10000},
				{ID: 1, Out: 1000, In: 500, State: "established", Offload: "userspace", AgeSeconds: 12},
				{ID: 6, Out: 600, In: 600, State: "closed", AgeSeconds: 0.5},
				{ID: 4, Out: 400, State: "established", Offload: "userspace", AgeSeconds: 1},
				{ID: 3, State: "l7", AgeSeconds: 12},
			},
			wantFlows: []uint64{2, 7},
			wantSum: TopSummary{Connections: 5, ByState: map[string]int{"closed": 1, "established": 2, "l7": 1, "offloaded": 1},
				ByOffload: map[string]int{"splice": 1, "userspace": 2}, BytesPerSec: 13100, OffloadedFlows: 2,
				XDPPacketsPerSec: 200, XDPBytesPerSec: 20000, OffloadedBytesRatio: 10000.0 / 13100},
		},
		{
			name: "by bytes, closed kept", prev: &prev, opts: topOptions{sort: "bytes", all: true},
			wantConns: []topConnRow{
				{ID: 2, Out: 10000, State: "offloaded", Offload: "splice", AgeSeconds: 12, XDPPkts: 100, XDPBps: 10000},
				{ID: 1, Out: 1000, In: 500, State: "established", Offload: "userspace", AgeSeconds: 12},
				{ID: 6, Out: 600, In: 600, State: "closed", AgeSeconds: 0.5},
				{ID: 4, Out: 400, State: "established", Offload: "userspace", AgeSeconds: 1},
				{ID: 5, State: "closed", AgeSeconds: 5}, // closed before prev: no rate
				{ID: 3, State: "l7", AgeSeconds: 12},
			},
			wantFlows: []uint64{2, 7},
		},
		{
			name: "by age", prev: &prev, opts: topOptions{sort: "age"},
			wantConns: []topConnRow{
				{ID: 1, Out: 1000, In: 500, State: "established", Offload: "userspace", AgeSeconds: 12},
				{ID: 2, Out: 10000, State: "offloaded", Offload: "splice", AgeSeconds: 12, XDPPkts: 100, XDPBps: 10000},
				{ID: 3, State: "l7", AgeSeconds: 12},
				{ID: 4, Out: 400, State: "established", Offload: "userspace", AgeSeconds: 1},
				{ID: 6, Out: 600, In: 600, State: "closed", AgeSeconds: 0.5},
			},
			wantFlows: []uint64{2, 7},
		},
		{
			// The first read: everything over its own lifetime; closed
			// connections are left out (none closed "since the last
			// read"). Flow 7 (5000 B in 0.5 s) beats flow 2 (30000 B
			// in 11 s).
			name: "first read", prev: nil, opts: topOptions{sort: "rate"},
			wantConns: []topConnRow{
				{ID: 2, Out: 2500, State: "offloaded", Offload: "splice", AgeSeconds: 12, XDPPkts: 300.0 / 11, XDPBps: 30000.0 / 11},
				{ID: 1, Out: 250, In: 2000.0 / 12, State: "established", Offload: "userspace", AgeSeconds: 12},
				{ID: 4, Out: 400, State: "established", Offload: "userspace", AgeSeconds: 1},
				{ID: 3, State: "l7", AgeSeconds: 12},
			},
			wantFlows: []uint64{7, 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := computeTop("fm-node1", tt.prev, cur, tt.opts)
			var got []topConnRow
			for _, c := range s.Connections {
				got = append(got, topConnRow{ID: c.ID, Out: c.OutPerSec, In: c.InPerSec, State: c.State, Offload: c.Offload,
					AgeSeconds: c.AgeSeconds, XDPPkts: c.XDPPacketsPerSec, XDPBps: c.XDPBytesPerSec})
			}
			approx := cmp.Comparer(func(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 })
			if diff := cmp.Diff(tt.wantConns, got, approx); diff != "" {
				t.Errorf("connections (-want +got):\n%s", diff)
			}
			var flows []uint64
			for _, f := range s.Flows {
				flows = append(flows, f.ConnID)
			}
			if diff := cmp.Diff(tt.wantFlows, flows); diff != "" {
				t.Errorf("flow order (-want +got):\n%s", diff)
			}
			for i := 1; tt.opts.sort == "rate" && i < len(s.Connections); i++ {
				if s.Connections[i].BytesPerSec > s.Connections[i-1].BytesPerSec {
					t.Errorf("row %d (%v B/s) after row %d (%v B/s): not by rate", i, s.Connections[i].BytesPerSec, i-1, s.Connections[i-1].BytesPerSec)
				}
			}
			if tt.wantSum.ByState != nil {
				if diff := cmp.Diff(tt.wantSum, s.Summary, approx); diff != "" {
					t.Errorf("summary (-want +got):\n%s", diff)
				}
			}
			if tt.prev != nil && s.IntervalSeconds != 2 {
				t.Errorf("interval %v s, want 2", s.IntervalSeconds)
			}
		})
	}
}

func TestShortReason(t *testing.T) {
	tests := []struct{ in, want string }{
		{"no kTLS", "no kTLS"},
		{"kernel 6.18.44 has no kTLS (no tls in tcp_available_ulp): the kernel has no tls ULP", "kernel 6.18.44 has no kTLS"},
		{"offload off: --offload=off", "offload off"},
		{strings.Repeat("x", 50), strings.Repeat("x", 39) + "…"},
	}
	for _, tt := range tests {
		if got := shortReason(tt.in); got != tt.want {
			t.Errorf("shortReason(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRenderTop(t *testing.T) {
	s := TopSnapshot{Node: "fm-node1", Time: time.Date(2026, 12, 3, 17, 0, 0, 0, time.Local), IntervalSeconds: 2,
		Summary: TopSummary{Connections: 3, ByState: map[string]int{"offloaded": 1, "established": 1, "l7": 1},
			ByOffload: map[string]int{"splice": 1, "userspace": 1}, BytesPerSec: 3 << 20, OffloadedFlows: 1,
			XDPPacketsPerSec: 2500, XDPBytesPerSec: 2 << 20, OffloadedBytesRatio: 2.0 / 3},
		Connections: []TopConnection{
			{Connection: admin.Connection{ID: 7, Direction: "outbound", Pod: "bank/teller", PeerIdentity: "spiffe://cluster.local/ns/bank/sa/vault",
				State: "offloaded", Offload: "splice", BytesOut: 64 << 20}, OutPerSec: 2 << 20, AgeSeconds: 61, XDPPacketsPerSec: 2500},
			{Connection: admin.Connection{ID: 3, Direction: "inbound", Pod: "bank/vault", Destination: netip.MustParseAddrPort("10.200.2.11:9000"),
				State: "established", Offload: "userspace", OffloadReason: "no kTLS", BytesIn: 1 << 20}, InPerSec: 1 << 20, AgeSeconds: 2},
			{Connection: admin.Connection{ID: 9, Direction: "outbound", Pod: "bank/teller", State: "l7"}},
		},
		Flows: []TopFlow{{OffloadFlow: admin.OffloadFlow{ConnID: 7, Pod: "bank/teller", Local: netip.MustParseAddrPort("10.200.1.11:40000"),
			Remote: netip.MustParseAddrPort("10.200.2.11:15008"), State: "offloaded", Packets: 90000, Bytes: 64 << 20}, PacketsPerSec: 2500, BytesPerSec: 2 << 20}},
	}
	tests := []struct {
		name   string
		limit  int
		want   []string // lines, in order, each a substring of one line
		absent []string
	}{
		{"all", 0, []string{
			"fibctl top: node fm-node1, 17:00:00, rates over 2s",
			"connections 3: established 1, l7 1, offloaded 1; offload: splice 1, userspace 1; total 3.0MiB/s (offloaded 67%)",
			"offloaded flows 1: XDP 2.5k pkt/s, 2.0MiB/s",
			"ID  DIR       POD          PEER",
			"7   outbound  bank/teller  spiffe://cluster.local/ns/bank/sa/vault  offloaded    splice xdp 2.5k pkt/s  2.0MiB/s  0B/s      64.0MiB  1m1s",
			"3   inbound   bank/vault   10.200.2.11:9000                         established  userspace (no kTLS)    0B/s      1.0MiB/s  1.0MiB   2s",
			"9   outbound  bank/teller  -                                        l7           -",
			"CONN  POD          TUNNEL",
			"7     bank/teller  10.200.1.11:40000 <-> 10.200.2.11:15008  offloaded  2.5k   2.0MiB/s  90000    64.0MiB",
		}, nil},
		{"limit 1", 1, []string{"7   outbound", "... 2 more (--limit)", "CONN"}, []string{"3   inbound"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			renderTop(&b, s, tt.limit)
			lines := strings.Split(b.String(), "\n")
			i := 0
			for _, w := range tt.want {
				for i < len(lines) && !strings.Contains(lines[i], w) {
					i++
				}
				if i == len(lines) {
					t.Errorf("no line with %q (in order) in:\n%s", w, b.String())
					break
				}
			}
			for _, a := range tt.absent {
				if strings.Contains(b.String(), a) {
					t.Errorf("%q in:\n%s", a, b.String())
				}
			}
		})
	}
}

// growingAgent is an admin API whose connection 1 sends 1 MiB per read
// and whose flow for it counts 1000 packets per read.
type growingAgent struct {
	mu    sync.Mutex
	reads int
	start time.Time
	pods  []string // the pod query of each /connections read
}

func (g *growingAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch r.URL.Path {
	case "/connections":
		g.reads++
		g.pods = append(g.pods, r.URL.Query().Get("pod"))
		json.NewEncoder(w).Encode([]admin.Connection{
			{ID: 1, Direction: "outbound", Pod: "bank/teller", State: "offloaded", Offload: "splice",
				PeerIdentity: "spiffe://cluster.local/ns/bank/sa/vault", BytesOut: uint64(g.reads) << 20, Start: g.start},
			{ID: 2, Direction: "outbound", Pod: "bank/teller", State: "l7", Start: g.start},
		})
	case "/offload/flows":
		json.NewEncoder(w).Encode([]admin.OffloadFlow{{ConnID: 1, Pod: "bank/teller", State: "offloaded",
			Packets: uint64(g.reads) * 1000, Bytes: uint64(g.reads) << 20, Installed: g.start}})
	default:
		http.NotFound(w, r)
	}
}

// TestTopJSON runs fibctl top -o json against a fake agent: one
// snapshot, two reads --interval apart, rates between them.
func TestTopJSON(t *testing.T) {
	g := &growingAgent{start: time.Now().Add(-time.Minute)}
	srv := httptest.NewServer(g)
	defer srv.Close()
	var stdout, stderr bytes.Buffer
	addr := strings.TrimPrefix(srv.URL, "http://")
	start := time.Now()
	code := runTop(context.Background(), []string{"--admin", addr, "-o", "json", "--interval", "200ms", "--pod", "bank/teller"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("took %v: want two reads 200ms apart", took)
	}
	var s TopSnapshot
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
		t.Fatalf("-o json: %v\n%s", err, stdout.String())
	}
	if g.reads != 2 {
		t.Errorf("%d reads of /connections, want 2", g.reads)
	}
	// The field names scripts read: the /connections and /offload/flows
	// rows' own, flat, beside the rates.
	var raw struct {
		Connections []map[string]any `json:"connections"`
		Flows       []map[string]any `json:"flows"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &raw); err != nil || len(raw.Connections) == 0 || len(raw.Flows) == 0 {
		t.Fatalf("-o json: %v, %d connections, %d flows\n%s", err, len(raw.Connections), len(raw.Flows), stdout.String())
	}
	for _, tc := range []struct {
		what string
		row  map[string]any
		keys []string
	}{
		{"connections[0]", raw.Connections[0], []string{"id", "direction", "listener", "pod", "peerIdentity", "state", "offload", "bytesOut", "bytesIn",
			"start", "outPerSec", "inPerSec", "bytesPerSec", "xdpPacketsPerSec", "xdpBytesPerSec", "ageSeconds"}},
		{"flows[0]", raw.Flows[0], []string{"connID", "pod", "local", "remote", "state", "packets", "bytes", "entries", "installed",
			"packetsPerSec", "bytesPerSec"}},
	} {
		for _, k := range tc.keys {
			if _, ok := tc.row[k]; !ok {
				t.Errorf("-o json: %s has no %q: %v", tc.what, k, tc.row)
			}
		}
	}
	if diff := cmp.Diff([]string{"bank/teller", "bank/teller"}, g.pods); diff != "" {
		t.Errorf("pod queries (-want +got):\n%s", diff)
	}
	if s.IntervalSeconds < 0.2 || s.IntervalSeconds > 5 {
		t.Errorf("intervalSeconds %v, want about 0.2", s.IntervalSeconds)
	}
	if len(s.Connections) != 2 || s.Connections[0].ID != 1 || s.Connections[1].ID != 2 {
		t.Fatalf("connections %+v, want 1 (busy) then 2 (idle)", s.Connections)
	}
	// 1 MiB between the reads.
	wantRate := float64(1<<20) / s.IntervalSeconds
	if c := s.Connections[0]; c.OutPerSec != wantRate || c.BytesPerSec != wantRate || c.XDPPacketsPerSec != 1000/s.IntervalSeconds {
		t.Errorf("connection 1: out %v B/s, total %v B/s, xdp %v pkt/s; want %v, %v, %v", c.OutPerSec, c.BytesPerSec, c.XDPPacketsPerSec,
			wantRate, wantRate, 1000/s.IntervalSeconds)
	}
	if s.Connections[1].BytesPerSec != 0 {
		t.Errorf("connection 2: %v B/s, want 0", s.Connections[1].BytesPerSec)
	}
	if s.Summary.OffloadedFlows != 1 || s.Summary.ByOffload["splice"] != 1 || s.Summary.ByState["l7"] != 1 {
		t.Errorf("summary %+v", s.Summary)
	}
}

// TestTopLive runs the live view twice (--count 2) into a buffer: not a
// terminal, so no ANSI codes, one view after the other.
func TestTopLive(t *testing.T) {
	g := &growingAgent{start: time.Now().Add(-time.Minute)}
	srv := httptest.NewServer(g)
	defer srv.Close()
	var stdout, stderr bytes.Buffer
	code := runTop(context.Background(), []string{"--admin", strings.TrimPrefix(srv.URL, "http://"), "--interval", "50ms", "--count", "2"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	out := stdout.String()
	if strings.Contains(out, "\x1b[") {
		t.Errorf("ANSI codes written to a non-terminal:\n%q", out)
	}
	if n := strings.Count(out, "fibctl top: node"); n != 2 {
		t.Errorf("%d views, want 2:\n%s", n, out)
	}
	if !strings.Contains(out, "first read") || !strings.Contains(out, "rates over") {
		t.Errorf("want the first view rated over lifetimes and the second over the interval:\n%s", out)
	}
}

func TestTopFlags(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--interval", "0s"}, 2, "--interval"},
		{[]string{"--interval", "soon"}, 2, "--interval"},
		{[]string{"--sort", "name"}, 2, "--sort"},
		{[]string{"--count", "-1"}, 2, "--count"},
		{[]string{"--limit", "x"}, 2, "--limit"},
		{[]string{"-o", "xml"}, 2, "-o"},
		{[]string{"--node", "a/b"}, 2, "--node"},
		{[]string{"extra"}, 2, "too many arguments"},
		{[]string{"--help"}, 0, "Usage:"},
		{[]string{"--admin", "127.0.0.1:1", "-o", "json"}, 1, "agent admin API"},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		code := runTop(context.Background(), tt.args, &stdout, &stderr)
		if code != tt.code || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("fibctl top %q: exit %d, stderr %q; want exit %d and %q", tt.args, code, stderr.String(), tt.code, tt.want)
		}
	}
}
