package proxy

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fibmesh/fibmesh/internal/testenv"
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
	type view struct {
		Pod, Peer                                 string
		Workload, PeerWorkload                    WorkloadMeta
		MTLS                                      bool
		Code                                      int
		BytesReceived, BytesSent                  int64
		UserAgent, RequestID                      string
		HasHeads, HasDestination, HasSource, GRPC bool
	}
	v := func(r RequestInfo) view {
		return view{Pod: r.Pod, Peer: r.Peer, Workload: r.Workload, PeerWorkload: r.PeerWorkload, MTLS: r.MTLS, Code: r.Code,
			BytesReceived: r.BytesReceived, BytesSent: r.BytesSent, UserAgent: r.UserAgent, RequestID: r.RequestID,
			HasHeads: r.RequestHeaderBytes > 50 && r.ResponseHeaderBytes > 20, HasDestination: r.Destination.IsValid(),
			HasSource: r.Source.IsValid(), GRPC: r.GRPC}
	}
	for _, tc := range []struct {
		name string
		got  RequestInfo
		want view
	}{
		{"outbound", out, view{Pod: "default/client", Peer: l.serverID.String(), Workload: clientMeta, PeerWorkload: serverMeta,
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
