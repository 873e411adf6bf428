package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	xdsapi "github.com/fibmesh/fibmesh/api/xds"
	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/slowpath"
	"github.com/fibmesh/fibmesh/slowpath/proxyproto"
)

// TestRequestTelemetry checks what the Requests hook says of a request
// through the tunnel, on both sides: the workloads the two agents
// exchange (and that neither app sees the exchange, nor can forge it),
// the peers' identities, mTLS, and the sizes.
func TestRequestTelemetry(t *testing.T) {
	var mu sync.Mutex
	var reqs []RequestInfo
	meta := func(ns, pod string) WorkloadMeta {
		return WorkloadMeta{Name: pod + "-v1", Namespace: ns, App: pod, Version: "v1", Cluster: "Kubernetes"}
	}
	l := newL7Lab(t, func(c *Config) {
		c.Workload = meta
		c.Requests = func(ri RequestInfo) {
			mu.Lock()
			reqs = append(reqs, ri)
			mu.Unlock()
		}
	})
	forged := WorkloadMeta{Name: "admin", Namespace: "kube-system"}.encode()
	body := strings.Repeat("x", 1000)
	req, _ := http.NewRequest(http.MethodPost, "http://"+webVIP.String()+"/", strings.NewReader(body))
	req.Header.Set(hdrPeer, forged)
	req.Header.Set("User-Agent", "telemetry-test")
	resp, err := l.transport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(got) != "hello HTTP/1.1" {
		t.Fatalf("status %d body %q", resp.StatusCode, got)
	}
	if v := resp.Header.Get(hdrPeer); v != "" {
		t.Errorf("the client app got the peer metadata header %q", v)
	}
	if h := l.lastHdr.Load(); h == nil || h.Get(hdrPeer) != "" {
		t.Errorf("the server app got the peer metadata header: %v", h)
	}
	var out, in RequestInfo
	testenv.Eventually(t, 10*time.Second, "both sides' RequestInfo", func() error {
		mu.Lock()
		defer mu.Unlock()
		out, in = RequestInfo{}, RequestInfo{}
		for _, r := range reqs {
			if r.Direction == DirectionOutbound {
				out = r
			} else {
				in = r
			}
		}
		if out.Pod == "" || in.Pod == "" {
			return fmt.Errorf("%d requests reported", len(reqs))
		}
		return nil
	})
	clientMeta, serverMeta := meta("default", "client"), meta("default", "server")
	// What the controller's EDS says of the server pod (labels {app:
	// server}, no version).
	serverEDS := WorkloadMeta{Name: "server", Namespace: "default", App: "server", CanonicalService: "server", CanonicalRevision: "latest"}
	type view struct {
		Pod, Peer                                 string
		Workload, PeerWorkload, EndpointWorkload  WorkloadMeta
		MTLS                                      bool
		Code                                      int
		BytesReceived, BytesSent                  int64
		UserAgent, RequestID                      string
		HasHeads, HasDestination, HasSource, GRPC bool
	}
	v := func(r RequestInfo) view {
		return view{Pod: r.Pod, Peer: r.Peer, Workload: r.Workload, PeerWorkload: r.PeerWorkload, EndpointWorkload: r.EndpointWorkload, MTLS: r.MTLS, Code: r.Code,
			BytesReceived: r.BytesReceived, BytesSent: r.BytesSent, UserAgent: r.UserAgent, RequestID: r.RequestID,
			HasHeads: r.RequestHeaderBytes > 50 && r.ResponseHeaderBytes > 20, HasDestination: r.Destination.IsValid(),
			HasSource: r.Source.IsValid(), GRPC: r.GRPC}
	}
	for _, tc := range []struct {
		name string
		got  RequestInfo
		want view
	}{
		{"outbound", out, view{Pod: "default/client", Peer: l.serverID.String(), Workload: clientMeta, PeerWorkload: serverMeta, EndpointWorkload: serverEDS,
			MTLS: true, Code: 200, BytesReceived: 1000, BytesSent: int64(len(got)), UserAgent: "telemetry-test", RequestID: out.RequestID,
			HasHeads: true, HasDestination: true, HasSource: true}},
		{"inbound", in, view{Pod: "default/server", Peer: l.clientID.String(), Workload: serverMeta, PeerWorkload: clientMeta,
			MTLS: true, Code: 200, BytesReceived: 1000, BytesSent: int64(len(got)), UserAgent: "telemetry-test", RequestID: out.RequestID,
			HasHeads: true, HasDestination: true, HasSource: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, v(tc.got)); diff != "" {
				t.Errorf("RequestInfo (-want +got):\n%s", diff)
			}
		})
	}
	if out.RequestID == "" {
		t.Error("no request id")
	}
}

func TestWorkloadMetaHeader(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want WorkloadMeta
	}{
		{"round trip", WorkloadMeta{Name: "reviews-v1", Namespace: "production", App: "reviews", Version: "v1", Cluster: "Kubernetes"}.encode(),
			WorkloadMeta{Name: "reviews-v1", Namespace: "production", App: "reviews", Version: "v1", Cluster: "Kubernetes"}},
		{"partial", "name=client&namespace=default", WorkloadMeta{Name: "client", Namespace: "default"}},
		{"empty", "", WorkloadMeta{}},
		{"malformed", "name=%zz", WorkloadMeta{}},
		{"space in a value", "name=a%20b", WorkloadMeta{}},
		{"too long", "name=" + strings.Repeat("a", maxPeerMeta), WorkloadMeta{}},
		{"value too long", "name=" + strings.Repeat("a", 254), WorkloadMeta{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := decodeWorkloadMeta(tc.in); got != tc.want {
				t.Errorf("decode(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

// TestTCPWorkloadTLV checks the workload metadata an L4 tunnel carries
// in its PROXY header (proxyproto.TypeWorkload): the called side's
// events name the calling pod's workload; a caller that sends none (an
// older agent), one that sends a malformed value, or one that claims
// another namespace than its SPIFFE ID's is still relayed, with the
// workload not known.
func TestTCPWorkloadTLV(t *testing.T) {
	meta := func(ns, pod string) WorkloadMeta {
		return WorkloadMeta{Name: pod + "-v1", Namespace: ns, App: pod, Version: "v1", CanonicalService: pod, CanonicalRevision: "v1", Cluster: "Kubernetes"}
	}
	l := newLab(t, func(c *Config) { c.Workload = meta })
	good, _ := l.ca.svid(t, "/ns/default/sa/client")
	src := l.pair.A.AddrPort(40000)
	// closedEvent waits for the closed event of the next connection
	// with the given direction, after the first n events.
	closedEvent := func(t *testing.T, n int, direction string) Event {
		t.Helper()
		var ev Event
		testenv.Until(t, 10*time.Second, "a closed "+direction+" event", func() bool {
			l.evMu.Lock()
			defer l.evMu.Unlock()
			for _, e := range l.events[n:] {
				if e.Kind == EventClosed && e.Conn.Direction == direction {
					ev = e
					return true
				}
			}
			return false
		})
		return ev
	}
	count := func() int {
		l.evMu.Lock()
		defer l.evMu.Unlock()
		return len(l.events)
	}

	t.Run("agent to agent", func(t *testing.T) {
		// The endpoint's workload as EDS says it: the caller's only
		// word on the called workload.
		eds := &xdsapi.EndpointWorkload{Name: "server-v1", Namespace: "default", CanonicalService: "server", CanonicalRevision: "v1", App: "server", Version: "v1"}
		snap := l.snapshot(nil)
		snap.Clusters["outbound|80||echo.default.svc.cluster.local"].Endpoints.Hosts[0].Workload = eds
		l.snap.Store(snap)
		t.Cleanup(func() { l.snap.Store(l.snapshot(nil)) })
		n := count()
		echo(t, l.callOutbound(t, vip), 1000)
		in := closedEvent(t, n, DirectionInbound)
		if diff := cmp.Diff(meta("default", "client"), in.PeerWorkload); diff != "" {
			t.Errorf("inbound PeerWorkload (-want +got):\n%s", diff)
		}
		if in.Conn.PeerIdentity != l.clientID.String() {
			t.Errorf("inbound peer %q, want %s", in.Conn.PeerIdentity, l.clientID)
		}
		// The header goes one way: the caller learns nothing.
		out := closedEvent(t, n, DirectionOutbound)
		if !out.PeerWorkload.IsZero() {
			t.Errorf("outbound PeerWorkload %+v, want none", out.PeerWorkload)
		}
		want := WorkloadMeta{Name: "server-v1", Namespace: "default", App: "server", Version: "v1", CanonicalService: "server", CanonicalRevision: "v1"}
		if diff := cmp.Diff(want, out.EndpointWorkload); diff != "" {
			t.Errorf("outbound EndpointWorkload (-want +got):\n%s", diff)
		}
		if !in.EndpointWorkload.IsZero() {
			t.Errorf("inbound EndpointWorkload %+v, want none", in.EndpointWorkload)
		}
	})

	t.Run("pod called by its IP", func(t *testing.T) {
		// A pod called by its IP is the endpoint of its mesh cluster
		// (Snapshot.Endpoints): EDS's word on it names it too.
		snap := l.snapshot(nil)
		cl := snap.Clusters["outbound|80||echo.default.svc.cluster.local"]
		cl.Endpoints.Hosts[0].Workload = &xdsapi.EndpointWorkload{Name: "server", Namespace: "default", CanonicalService: "server", CanonicalRevision: "latest"}
		snap.Endpoints[l.pair.B.Addr] = cl
		l.snap.Store(snap)
		t.Cleanup(func() { l.snap.Store(l.snapshot(nil)) })
		n := count()
		echo(t, l.callOutbound(t, l.pair.B.AddrPort(appPort)), 1000)
		out := closedEvent(t, n, DirectionOutbound)
		// Its inbound side's event too, before the next subtest counts
		// events: it can come after the caller saw the end.
		closedEvent(t, n, DirectionInbound)
		want := WorkloadMeta{Name: "server", Namespace: "default", CanonicalService: "server", CanonicalRevision: "latest"}
		if out.Conn.Mode != ModeTunnel {
			t.Errorf("mode %q, want %q", out.Conn.Mode, ModeTunnel)
		}
		if diff := cmp.Diff(want, out.EndpointWorkload); diff != "" {
			t.Errorf("outbound EndpointWorkload (-want +got):\n%s", diff)
		}
	})

	for _, tc := range []struct {
		name string
		tlvs []proxyproto.TLV
		want WorkloadMeta
	}{
		{"older agent: no TLV", nil, WorkloadMeta{}},
		{"namespace left out: the peer's", []proxyproto.TLV{{Type: proxyproto.TypeWorkload, Value: []byte("name=legacy&app=legacy")}},
			WorkloadMeta{Name: "legacy", Namespace: "default", App: "legacy"}},
		{"another namespace than the SPIFFE ID's", []proxyproto.TLV{{Type: proxyproto.TypeWorkload, Value: []byte("name=admin&namespace=kube-system")}}, WorkloadMeta{}},
		{"malformed value", []proxyproto.TLV{{Type: proxyproto.TypeWorkload, Value: []byte("name=%zz")}}, WorkloadMeta{}},
		{"control bytes in a value", []proxyproto.TLV{{Type: proxyproto.TypeWorkload, Value: []byte("name=a%0Ab")}}, WorkloadMeta{}},
		{"other TLVs skipped", []proxyproto.TLV{{Type: 0xef, Value: []byte("x")}, {Type: proxyproto.TypeWorkload, Value: []byte("name=w&namespace=default")}},
			WorkloadMeta{Name: "w", Namespace: "default"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := count()
			raw := l.rawTunnel(t)
			if raw == nil {
				t.Fatal("the tunnel port reset the connection")
			}
			tlsc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{slowpath.TunnelALPN}, Certificates: []tls.Certificate{*good}})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := tlsc.HandshakeContext(ctx); err != nil {
				t.Fatal(err)
			}
			hdr, err := proxyproto.Header{Command: proxyproto.Proxy, Source: src, Destination: l.pair.B.AddrPort(appPort), TLVs: tc.tlvs}.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tlsc.Write(append(hdr, "ping"...)); err != nil {
				t.Fatal(err)
			}
			tlsc.CloseWrite()
			tlsc.SetReadDeadline(time.Now().Add(10 * time.Second))
			if got, err := io.ReadAll(tlsc); err != nil || string(got) != "ping" {
				t.Fatalf("echo = %q, %v; want ping (the connection is relayed whatever its metadata)", got, err)
			}
			tlsc.Close()
			if diff := cmp.Diff(tc.want, closedEvent(t, n, DirectionInbound).PeerWorkload); diff != "" {
				t.Errorf("PeerWorkload (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPeerWorkloadTLV(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	prod := spiffeid.RequireFromPath(td, "/ns/production/sa/frontend")
	odd := spiffeid.RequireFromPath(td, "/workload/frontend")
	for _, tc := range []struct {
		name string
		v    string
		peer spiffeid.ID
		want WorkloadMeta
	}{
		{"same namespace", "name=frontend&namespace=production&app=frontend", prod, WorkloadMeta{Name: "frontend", Namespace: "production", App: "frontend"}},
		{"namespace from the peer", "name=frontend", prod, WorkloadMeta{Name: "frontend", Namespace: "production"}},
		{"other namespace", "name=frontend&namespace=default", prod, WorkloadMeta{}},
		{"peer not of the mesh's form", "name=frontend", odd, WorkloadMeta{}},
		{"empty", "", prod, WorkloadMeta{}},
		{"too long", "name=" + strings.Repeat("a", maxPeerMeta), prod, WorkloadMeta{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := peerWorkloadTLV([]byte(tc.v), tc.peer); got != tc.want {
				t.Errorf("peerWorkloadTLV(%q, %s) = %+v, want %+v", tc.v, tc.peer, got, tc.want)
			}
		})
	}
}
