package proxy

import (
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/internal/vmcheck"
	"github.com/fibmesh/fibmesh/slowpath"
	"github.com/fibmesh/fibmesh/slowpath/xdsconf"
)

// wantState is an L4 tunnel connection's state while bytes flow: where
// the kernel has kTLS (make vmtest) it is offloaded, elsewhere relayed in
// userspace.
func (l *lab) wantState() string {
	if l.p.offloadOff != "" {
		return StateEstablished
	}
	return StateOffloaded
}

// wantOffload is an L4 tunnel connection's ConnInfo.Offload.
func (l *lab) wantOffload() string {
	if l.p.offloadOff != "" {
		return OffloadUserspace
	}
	return OffloadSplice
}

// fakeFlows records what the proxy asks of the XDP flow table.
type fakeFlows struct {
	mu      sync.Mutex
	live    map[uint64]*fakeFlow
	all     []*fakeFlow
	failing bool
}

type fakeFlow struct {
	t        *fakeFlows
	f        TunnelFlow
	revoked  time.Time
	released bool
}

func (t *fakeFlows) Install(f TunnelFlow) (FlowHandle, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.failing {
		return nil, errors.New("map full")
	}
	h := &fakeFlow{t: t, f: f}
	if t.live == nil {
		t.live = map[uint64]*fakeFlow{}
	}
	t.live[f.ConnID] = h
	t.all = append(t.all, h)
	return h, nil
}

func (h *fakeFlow) Revoke(pushed time.Time) error {
	h.t.mu.Lock()
	defer h.t.mu.Unlock()
	h.revoked = pushed
	return nil
}

func (h *fakeFlow) Counters() (uint64, uint64) { return 7, 7 << 10 }

func (h *fakeFlow) Release() {
	h.t.mu.Lock()
	defer h.t.mu.Unlock()
	if h.released {
		panic("released twice")
	}
	h.released = true
	delete(h.t.live, h.f.ConnID)
}

func (t *fakeFlows) snapshot() (live int, all []fakeFlow) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, h := range t.all {
		all = append(all, *h)
	}
	return len(t.live), all
}

// TestOffloadDecision: an L4 tunnel connection leaves userspace on both
// sides where the kernel has kTLS (make vmtest), with XDP flow entries
// for both ends' tunnel tuples that are released at the end; on a kernel
// without kTLS, and with the offload off, it stays in userspace and says
// why. The bytes arrive intact either way.
func TestOffloadDecision(t *testing.T) {
	for _, tc := range []struct {
		name string
		off  bool
	}{{"auto", false}, {"off", true}} {
		t.Run(tc.name, func(t *testing.T) {
			flows := &fakeFlows{}
			l := newLab(t, func(c *Config) { c.Offload = Offload{Disabled: tc.off, Flows: flows} })
			if tc.off && !strings.Contains(l.p.offloadOff, "--offload=off") {
				t.Fatalf("offload off: reason %q, want it to name --offload=off", l.p.offloadOff)
			}
			data := make([]byte, 4<<20)
			rand.Read(data)
			c := l.callOutbound(t, vip)
			seen := make(chan []ConnInfo, 1)
			go func() {
				var rows []ConnInfo
				testenv.Until(t, 10*time.Second, "both rows "+l.wantState(), func() bool {
					rows = rows[:0]
					for _, r := range l.p.Connections() {
						if r.State == l.wantState() {
							rows = append(rows, r)
						}
					}
					return len(rows) == 2
				})
				seen <- rows
			}()
			echoData(t, c, data)
			rows := <-seen
			c.Close()
			for _, r := range rows {
				if r.Offload != l.wantOffload() || r.OffloadReason != l.p.offloadOff {
					t.Errorf("%s row: offload %q (%q), want %q (%q)", r.Direction, r.Offload, r.OffloadReason, l.wantOffload(), l.p.offloadOff)
				}
			}
			testenv.Until(t, 10*time.Second, "both rows closed", func() bool {
				n := 0
				for _, r := range l.p.Connections() {
					if r.State == StateClosed && r.Reason == "done" && r.BytesOut == 4<<20 && r.BytesIn == 4<<20 {
						n++
					}
				}
				return n == 2
			})
			live, all := flows.snapshot()
			if live != 0 {
				t.Errorf("%d flow handles not released after both connections closed", live)
			}
			if l.p.offloadOff != "" {
				if len(all) != 0 {
					t.Errorf("%d flow entries installed for connections in userspace", len(all))
				}
				if v := testutil.ToFloat64(l.p.m.offloadDecisions.WithLabelValues(OffloadUserspace)); v != 2 {
					t.Errorf("offload_decisions_total{userspace} = %v, want 2", v)
				}
				return
			}
			// Both ends installed their tunnel's tuple: the client's
			// (A:ephemeral → B:15008) and the server's, reversed.
			if len(all) != 2 {
				t.Fatalf("%d flow installs, want 2 (one per end)", len(all))
			}
			var client, server TunnelFlow
			for _, h := range all {
				if h.f.Pod == "default/client" {
					client = h.f
				} else {
					server = h.f
				}
			}
			if client.Remote != l.pair.B.AddrPort(slowpath.TunnelPort) || client.Local.Addr() != l.pair.A.Addr ||
				server.Local != client.Remote || server.Remote != client.Local {
				t.Errorf("flow tuples: client %v→%v, server %v→%v", client.Local, client.Remote, server.Local, server.Remote)
			}
			if client.LocalIdentity != l.clientID.String() || client.PeerIdentity != l.serverID.String() ||
				server.LocalIdentity != l.serverID.String() || server.PeerIdentity != l.clientID.String() {
				t.Errorf("flow identities: client %+v server %+v", client, server)
			}
			if v := testutil.ToFloat64(l.p.m.offloadedBytes.WithLabelValues(OffloadSplice)); v != 2*8<<20 {
				t.Errorf("offloaded_bytes_total{splice} = %v, want %d (both ends, both ways)", v, 2*8<<20)
			}
		})
	}
}

// TestRevoke: an established L4 connection that a config change no
// longer allows is reset on both sides, whether the kernel moves its
// bytes or the proxy does, with the XDP entry turned to drop (offloaded),
// the reason in its row and the count; connections the change still
// allows go on.
func TestRevoke(t *testing.T) {
	deny := &xdsconf.RBAC{Deny: &xdsconf.RBACFilter{Policies: []*xdsconf.Policy{{Name: "ns[default]-policy[deny-client]-rule[0]",
		Match: func(in xdsconf.AuthzInput) bool { return in.Principal == "spiffe://cluster.local/ns/default/sa/client" }}}}}
	for _, tc := range []struct {
		name string
		// change returns the new config.
		change func(l *lab) *xdsconf.Snapshot
		why    string // reason label
		detail string // in the row's reason
	}{
		{"rbac", func(l *lab) *xdsconf.Snapshot { return l.snapshot(deny) }, RevokeRBAC, "revoked: rbac ns[default]-policy[deny-client]-rule[0]"},
		{"endpoint removed", func(l *lab) *xdsconf.Snapshot {
			s := l.snapshot(nil)
			s.Clusters["outbound|80||echo.default.svc.cluster.local"].Endpoints = endpoints()
			return s
		}, RevokeEndpointRemoved, "revoked: endpoint " + "%B" + " left cluster outbound|80||echo.default.svc.cluster.local"},
		{"route removed", func(l *lab) *xdsconf.Snapshot {
			s := l.snapshot(nil)
			s.Outbound.Chains = s.Outbound.Chains[1:]
			s.Outbound.Default = nil
			return s
		}, RevokeNoChain, "revoked: no outbound filter chain for 10.96.0.10:80"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			flows := &fakeFlows{}
			l := newLab(t, func(c *Config) { c.Offload = Offload{Flows: flows} })
			c := l.callOutbound(t, vip)
			echo(t, c, 1<<20) // established, then idle but open
			// echo half-closed c: a new one stays open.
			c2 := l.callOutbound(t, vip)
			if _, err := c2.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(c2, buf); err != nil {
				t.Fatal(err)
			}
			testenv.Until(t, 10*time.Second, "2 live rows "+l.wantState(), func() bool {
				n := 0
				for _, r := range l.p.Connections() {
					if r.State == l.wantState() {
						n++
					}
				}
				return n == 2
			})
			if n := l.p.Reevaluate(time.Now()); n != 0 {
				t.Fatalf("Reevaluate of an unchanged config revoked %d connections", n)
			}
			pushed := time.Now()
			l.snap.Store(tc.change(l))
			n := l.p.Reevaluate(pushed)
			// One side decides: the server's agent for its RBAC, the
			// client's for its route and endpoints; the other side's
			// relay ends on the reset.
			want := 1
			if n != want {
				t.Errorf("Reevaluate revoked %d connections, want %d", n, want)
			}
			// The app sees a reset (or at least no clean end) at once.
			c2.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err := c2.Read(buf)
			if err == nil || errors.Is(err, io.EOF) || errors.Is(err, errTimeout) {
				t.Fatalf("the revoked connection's app read %v, want a reset", err)
			}
			var revoked []ConnInfo
			testenv.Until(t, 10*time.Second, "revoked rows closed", func() bool {
				revoked = revoked[:0]
				for _, r := range l.p.Connections() {
					if r.State == StateClosed && strings.HasPrefix(r.Reason, "revoked: ") {
						revoked = append(revoked, r)
					}
				}
				return len(revoked) >= 1
			})
			wantDetail := strings.ReplaceAll(tc.detail, "%B", l.pair.B.Addr.String())
			wantDir := DirectionOutbound
			if tc.why == RevokeRBAC {
				wantDir = DirectionInbound
			}
			if !slices.ContainsFunc(revoked, func(r ConnInfo) bool { return r.Reason == wantDetail && r.Direction == wantDir }) {
				t.Errorf("revoked rows %+v: none with reason %q", revoked, wantDetail)
			}
			where := "userspace"
			if l.p.offloadOff == "" {
				where = "offloaded"
			}
			if v := testutil.ToFloat64(l.p.m.revoked.WithLabelValues(tc.why, where)); v != float64(want) {
				t.Errorf("revocations_total{%s,%s} = %v, want %d", tc.why, where, v, want)
			}
			if where == "offloaded" {
				_, all := flows.snapshot()
				r := 0
				for _, h := range all {
					if !h.revoked.IsZero() {
						r++
						if !h.revoked.Equal(pushed) {
							t.Errorf("flow revoked with pushed %v, want %v", h.revoked, pushed)
						}
					}
				}
				if r != want {
					t.Errorf("%d flow entries turned to drop, want %d", r, want)
				}
			}
			c2.Close()
			c.Close()
			// A new connection now follows the new config.
			if tc.why == RevokeRBAC {
				c3 := l.callOutbound(t, vip)
				expectClosed(t, c3)
			}
		})
	}
}

var errTimeout = fmt.Errorf("i/o timeout: %w", net.ErrClosed)

// TestNICTLS: where both nodes' NICs offload kTLS by the rule, the tunnel
// negotiates TLS 1.2 AES-128-GCM; where the server's rule disagrees, TLS
// 1.3 (never a failed handshake); where the client's says no, TLS 1.3.
func TestNICTLS(t *testing.T) {
	for _, tc := range []struct {
		name           string
		client, server bool
		version        string
		cipher         string
	}{
		{"both", true, true, "TLS 1.2", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"},
		{"server disagrees", true, false, "TLS 1.3", ""},
		{"client says no", false, true, "TLS 1.3", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var l *lab
			l = newLab(t, func(c *Config) {
				c.Offload = Offload{NICTLS: func(peer netip.Addr) bool {
					// The client asks about the server pod, the
					// server about the client pod.
					if peer == l.pair.B.Addr {
						return tc.client
					}
					return tc.server
				}}
			})
			if l.p.userspaceOnly {
				// The NIC choice needs an offload to be worth it:
				// without kTLS the client keeps TLS 1.3.
				tc.version, tc.cipher = "TLS 1.3", ""
			}
			c := l.callOutbound(t, vip)
			echo(t, c, 256<<10)
			c.Close()
			testenv.Until(t, 10*time.Second, "both rows closed", func() bool {
				n := 0
				for _, r := range l.p.Connections() {
					if r.State == StateClosed && r.Reason == "done" {
						n++
						if r.TLSVersion != tc.version || (tc.cipher != "" && r.TLSCipher != tc.cipher) {
							t.Fatalf("%s row: %s %s, want %s %s", r.Direction, r.TLSVersion, r.TLSCipher, tc.version, tc.cipher)
						}
						if r.Offload != l.wantOffload() {
							t.Fatalf("%s row: offload %q, want %q", r.Direction, r.Offload, l.wantOffload())
						}
					}
				}
				return n == 2
			})
		})
	}
}

// TestOffloadManyShort: many short connections through the offload path
// leave no flow entry, socket or goroutine behind (the lab's cleanup
// checks sockets and goroutines, the byte path's among them, once the
// proxy is closed; flow handles are checked here while it still runs).
// Pipes are counted by the e2e test on the agent's process: here the test
// apps' io.Copy keeps Go's own pool of splice pipes in the same process.
func TestOffloadManyShort(t *testing.T) {
	n := 2000
	if testing.Short() || vmcheck.InVM() {
		n = 300 // ~100 ms a connection under qemu TCG
	}
	flows := &fakeFlows{}
	l := newLab(t, func(c *Config) { c.Offload = Offload{Flows: flows} })
	for i := range n {
		// A request and its answer, then the end: the answer comes
		// once both ends are established (and offloaded); a client
		// that half-closes before that may find its tunnel no longer
		// ESTABLISHED at the server, which then stays in userspace.
		c := l.callOutbound(t, vip)
		buf := make([]byte, 4)
		_, err := c.Write([]byte("ping"))
		if err == nil {
			_, err = io.ReadFull(c, buf)
		}
		var b []byte
		if err == nil {
			c.CloseWrite()
			b, err = io.ReadAll(c)
			b = append(buf, b...)
		}
		if err != nil || string(b) != "ping" {
			testenv.Until(t, 10*time.Second, "rows closed", func() bool {
				for _, r := range l.p.Connections() {
					if r.State != StateClosed {
						return false
					}
				}
				return true
			})
			for _, r := range l.p.Connections() {
				t.Logf("row %+v", r)
			}
			l.evMu.Lock()
			for _, e := range l.events {
				t.Logf("event %s %s %v", e.Kind, e.Reason, e.Err)
			}
			l.evMu.Unlock()
			t.Fatalf("connection %d: read %q, %v", i, b, err)
		}
		c.Close()
	}
	testenv.Until(t, 30*time.Second, "every connection closed", func() bool {
		for _, r := range l.p.Connections() {
			if r.State != StateClosed {
				return false
			}
		}
		return true
	})
	live, all := flows.snapshot()
	if live != 0 {
		t.Errorf("%d of %d flow handles still held", live, len(all))
	}
	if l.p.offloadOff == "" && len(all) != 2*n {
		t.Errorf("%d flow installs for %d connections, want %d (both ends)", len(all), n, 2*n)
	}
	if v := testutil.ToFloat64(l.p.m.offloaded.WithLabelValues(OffloadSplice)); v != 0 {
		t.Errorf("offloaded_connections{splice} = %v after every connection ended", v)
	}
}

// TestRevokeDuringSetup: a change that arrives while a connection is being
// set up (Reevaluate skips it then) is applied once it is established.
func TestRevokeDuringSetup(t *testing.T) {
	var (
		l    *lab
		once sync.Once
		n    atomic.Int64 // Reevaluate's count during the setup, +1
	)
	l = newLab(t, func(c *Config) {
		cert := c.Certificate
		c.Certificate = func(ns, pod string) (*tls.Certificate, spiffeid.ID, error) {
			if pod == "client" {
				// The client's tunnel is being set up: its endpoint
				// leaves the cluster now.
				once.Do(func() {
					s := l.snapshot(nil)
					s.Clusters["outbound|80||echo.default.svc.cluster.local"].Endpoints = endpoints()
					l.snap.Store(s)
					n.Store(int64(l.p.Reevaluate(time.Now())) + 1)
				})
			}
			return cert(ns, pod)
		}
	})
	// The reset can come before the dial returns (a loaded machine):
	// dialMaybe gives nil then, the same outcome as a reset read.
	if c := l.callOutbound(t, vip); c != nil {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("ping"))
		if _, err := io.ReadAll(c); err == nil {
			t.Fatal("the connection whose endpoint left during its setup was answered to its end, want a reset")
		}
	}
	if v := n.Load(); v != 1 {
		t.Errorf("Reevaluate during the setup revoked %d connections, want 0 (the connection was not established yet; -1: it did not run)", v-1)
	}
	testenv.Until(t, 10*time.Second, "the outbound row revoked", func() bool {
		for _, r := range l.p.Connections() {
			if r.Direction == DirectionOutbound && r.State == StateClosed && strings.HasPrefix(r.Reason, "revoked: endpoint ") {
				return true
			}
		}
		return false
	})
}

// TestNoRevoke: config changes that still allow a connection leave it
// alone: a route now sending new connections to another cluster (a
// canary shift) while its own cluster and endpoint exist, a readiness
// flap, an RBAC that still allows the caller.
func TestNoRevoke(t *testing.T) {
	allowClient := &xdsconf.RBAC{Allow: &xdsconf.RBACFilter{Policies: []*xdsconf.Policy{{Name: "allow-client",
		Match: func(in xdsconf.AuthzInput) bool { return in.Principal == "spiffe://cluster.local/ns/default/sa/client" }}}}}
	l := newLab(t)
	c := l.callOutbound(t, vip)
	defer c.Close()
	buf := make([]byte, 4)
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		change func(s *xdsconf.Snapshot)
	}{
		{"route to another cluster", func(s *xdsconf.Snapshot) {
			v2 := *s.Clusters["outbound|80||echo.default.svc.cluster.local"]
			v2.Name = "outbound|80|v2|echo.default.svc.cluster.local"
			s.Clusters[v2.Name] = &v2
			s.Outbound.Chains[0].TCP = &xdsconf.TCPProxy{Clusters: []xdsconf.WeightedCluster{{Name: v2.Name, Weight: 1}}}
		}},
		{"endpoint unhealthy", func(s *xdsconf.Snapshot) {
			e := s.Clusters["outbound|80||echo.default.svc.cluster.local"].Endpoints
			e.Hosts[0].Healthy = false
			e.Healthy = nil
		}},
		{"rbac allows", func(s *xdsconf.Snapshot) {
			for _, fc := range s.Inbound.Chains {
				fc.RBAC = allowClient
			}
		}},
	} {
		s := l.snapshot(nil)
		tc.change(s)
		l.snap.Store(s)
		if n := l.p.Reevaluate(time.Now()); n != 0 {
			t.Errorf("%s: %d connections revoked, want none", tc.name, n)
		}
	}
	if _, err := c.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("after the changes: read %q, %v", buf, err)
	}
}
