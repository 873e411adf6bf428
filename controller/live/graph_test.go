package live

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fibmesh/fibmesh/controller/model"
)

// istio are the labels of an Istio standard metric's sample: reporter,
// source workload (namespace/name or "unknown"), destination service
// host ("" unknown), destination workload, response code, security
// policy.
func istio(v float64, reporter, src, svc, dst, code, policy string, extra ...string) Sample {
	l := map[string]string{"reporter": reporter, "response_code": code, "connection_security_policy": policy,
		"destination_service": cmpOrS(svc, "unknown"), "request_protocol": "http"}
	split := func(w string) (string, string) {
		if ns, n, ok := strings.Cut(w, "/"); ok {
			return ns, n
		}
		return "unknown", "unknown"
	}
	l["source_workload_namespace"], l["source_workload"] = split(src)
	l["destination_workload_namespace"], l["destination_workload"] = split(dst)
	if svc != "" {
		name, rest, _ := strings.Cut(svc, ".")
		ns, _, _ := strings.Cut(rest, ".")
		l["destination_service_name"], l["destination_service_namespace"] = name, ns
	}
	for i := 0; i+1 < len(extra); i += 2 {
		l[extra[i]] = extra[i+1]
	}
	return Sample{l, v}
}

// offloaded is a sample of the agents' fibmesh_agent_tcp_offloaded_connections:
// the edge's labels (no principals) and the mode.
func offloaded(v float64, reporter, src, svc, dst, mode string) Sample {
	full := istio(v, reporter, src, svc, dst, "", "").Labels
	l := map[string]string{"mode": mode}
	for _, k := range []string{"reporter", "source_workload", "source_workload_namespace", "destination_workload",
		"destination_workload_namespace", "destination_service"} {
		l[k] = full[k]
	}
	return Sample{l, v}
}

func cmpOrS(a, b string) string {
	if a == "" {
		return b
	}
	return a
}

// buckets are a histogram's _bucket samples with le 10, 100, +Inf.
func buckets(reporter, src, svc, dst string, le10, le100, inf float64) []Sample {
	var out []Sample
	for _, b := range []struct {
		le string
		v  float64
	}{{"10", le10}, {"100", le100}, {"+Inf", inf}} {
		out = append(out, istio(b.v, reporter, src, svc, dst, "200", "mutual_tls", "le", b.le))
	}
	return out
}

// edgeLines renders edges as compact lines for comparison.
func edgeLines(g Graph) []string {
	var out []string
	for _, e := range g.Edges {
		p99 := "-"
		if e.P99Ms != nil {
			p99 = fmt.Sprintf("%.4g", *e.P99Ms)
		}
		line := fmt.Sprintf("%s > %s %v rps=%.4g err=%.4g p99=%s mtls=%s offload=%s rep=%s observed=%v",
			e.From, e.To, e.Protocols, e.RPS, e.ErrorRate, p99, e.MTLS, e.Offload, e.Reporter, e.Observed)
		if e.BytesPerSecond > 0 || e.ConnectionsPerSecond > 0 {
			line += fmt.Sprintf(" Bps=%.4g cps=%.4g", e.BytesPerSecond, e.ConnectionsPerSecond)
		}
		if len(e.OffloadConnections) > 0 {
			line += fmt.Sprintf(" conns=%v", e.OffloadConnections)
		}
		out = append(out, line)
	}
	return out
}

func vertexLines(g Graph) []string {
	var out []string
	for _, v := range g.Vertices {
		out = append(out, fmt.Sprintf("%s %s model=%v nodes=%v pods=%d mtls=%s in=%.4g out=%.4g", v.ID, v.Kind, v.InModel, v.Nodes, v.Pods, v.MTLS, v.RPSIn, v.RPSOut))
	}
	return out
}

// demoModel is a small mesh: frontend calls reviews (v1 on node1, v2 on
// node2); ratings has no endpoint pod.
func demoModel() *model.Model {
	wl := func(pod, node, app, version string, mode model.Mode) *model.Workload {
		return &model.Workload{Namespace: "prod", Name: pod, Node: node, DefaultMode: mode,
			Labels: map[string]string{"app": app, "version": version, "pod-template-hash": strings.Split(pod, "-")[len(strings.Split(pod, "-"))-2]}}
	}
	return &model.Model{
		Version: 7,
		Nodes:   []*model.Node{{Name: "node1", InternalIP: "10.100.0.1"}, {Name: "node2", InternalIP: "10.100.0.2"}},
		Workloads: []*model.Workload{
			wl("frontend-5d8f9c7b6-abcde", "node1", "frontend", "", model.ModeStrict),
			wl("reviews-v1-7d9f8c6b5-x2x4q", "node1", "reviews", "v1", model.ModeStrict),
			wl("reviews-v2-6b7c8d9f5-q9w8e", "node2", "reviews", "v2", model.ModeStrict),
		},
		Services: []*model.Service{
			{Hostname: "reviews.prod.svc.cluster.local", Namespace: "prod", Name: "reviews", Endpoints: []*model.Endpoint{
				{Address: "10.200.1.11", Workload: "prod/reviews-v1-7d9f8c6b5-x2x4q"}, {Address: "10.200.2.11", Workload: "prod/reviews-v2-6b7c8d9f5-q9w8e"}}},
			{Hostname: "ratings.prod.svc.cluster.local", Namespace: "prod", Name: "ratings"},
			{Hostname: "api.example.com", Namespace: "prod", Name: "api", Location: "MESH_EXTERNAL"},
		},
	}
}

func TestBuildGraph(t *testing.T) {
	const reviews, ext = "reviews.prod.svc.cluster.local", "api.example.com"
	const fe, v1, v2 = "prod/frontend", "prod/reviews-v1", "prod/reviews-v2"
	for _, tc := range []struct {
		name         string
		model        *model.Model
		agents       []agentWindow
		wantEdges    []string
		wantVertices []string // checked when set
	}{{
		name:  "model only: services, workloads, endpoints",
		model: demoModel(),
		wantEdges: []string{
			"svc:reviews.prod.svc.cluster.local > wl:prod/reviews-v1 [] rps=0 err=0 p99=- mtls=unknown offload= rep= observed=false",
			"svc:reviews.prod.svc.cluster.local > wl:prod/reviews-v2 [] rps=0 err=0 p99=- mtls=unknown offload= rep= observed=false",
		},
		wantVertices: []string{
			"svc:api.example.com service model=true nodes=[] pods=0 mtls= in=0 out=0",
			"svc:ratings.prod.svc.cluster.local service model=true nodes=[] pods=0 mtls= in=0 out=0",
			"svc:reviews.prod.svc.cluster.local service model=true nodes=[] pods=0 mtls= in=0 out=0",
			"wl:prod/frontend workload model=true nodes=[node1] pods=1 mtls=STRICT in=0 out=0",
			"wl:prod/reviews-v1 workload model=true nodes=[node1] pods=1 mtls=STRICT in=0 out=0",
			"wl:prod/reviews-v2 workload model=true nodes=[node2] pods=1 mtls=STRICT in=0 out=0",
		},
	}, {
		name:  "each hop by the side that knows both ends; nothing counted twice",
		model: demoModel(),
		agents: []agentWindow{{ // node1: frontend's source reports, reviews-v1's destination reports
			dt: 2,
			cur: Samples{metricRequests: {
				istio(100, "source", fe, reviews, v1, "200", "unknown"),
				istio(10, "source", fe, reviews, v2, "200", "unknown"),
				istio(100, "destination", fe, reviews, v1, "200", "mutual_tls"),
			}},
			inc: Samples{
				metricRequests: {
					istio(18, "source", fe, reviews, v1, "200", "unknown"),
					istio(2, "source", fe, reviews, v1, "503", "unknown"),
					istio(4, "source", fe, reviews, v2, "200", "unknown"),
					istio(18, "destination", fe, reviews, v1, "200", "mutual_tls"),
					istio(2, "destination", fe, reviews, v1, "503", "mutual_tls"),
				},
				metricDurationBucket: append(buckets("destination", fe, reviews, v1, 0, 20, 20), buckets("source", fe, reviews, v1, 20, 20, 20)...),
			},
		}, { // node2: reviews-v2's destination reports
			dt: 2,
			cur: Samples{metricRequests: {
				istio(10, "destination", fe, reviews, v2, "200", "mutual_tls"),
			}},
			inc: Samples{
				metricRequests:       {istio(4, "destination", fe, reviews, v2, "200", "mutual_tls")},
				metricDurationBucket: buckets("destination", fe, reviews, v2, 4, 4, 4),
			},
		}},
		wantEdges: []string{
			"svc:reviews.prod.svc.cluster.local > wl:prod/reviews-v1 [http] rps=10 err=0.1 p99=99.1 mtls=mutual_tls offload=userspace rep=destination observed=true",
			"svc:reviews.prod.svc.cluster.local > wl:prod/reviews-v2 [http] rps=2 err=0 p99=9.9 mtls=mutual_tls offload=userspace rep=destination observed=true",
			"wl:prod/frontend > svc:reviews.prod.svc.cluster.local [http] rps=12 err=0.08333 p99=9.9 mtls=mutual_tls offload=userspace rep=source observed=true",
		},
	}, {
		name:  "a destination no agent reports: the source reporter's figures",
		model: demoModel(),
		agents: []agentWindow{{
			dt:  1,
			cur: Samples{metricRequests: {istio(50, "source", fe, ext, "", "200", "unknown")}},
			inc: Samples{metricRequests: {istio(5, "source", fe, ext, "", "200", "unknown"), istio(5, "source", fe, ext, "", "0", "unknown")}},
		}},
		wantEdges: []string{
			"svc:reviews.prod.svc.cluster.local > wl:prod/reviews-v1 [] rps=0 err=0 p99=- mtls=unknown offload= rep= observed=false",
			"svc:reviews.prod.svc.cluster.local > wl:prod/reviews-v2 [] rps=0 err=0 p99=- mtls=unknown offload= rep= observed=false",
			"wl:prod/frontend > svc:api.example.com [http] rps=10 err=0.5 p99=- mtls=unknown offload=userspace rep=source observed=true",
		},
	}, {
		name: "a caller outside the mesh, plaintext, and a service the model lacks",
		agents: []agentWindow{{
			dt: 1,
			cur: Samples{metricRequests: {
				istio(3, "destination", "unknown", "web.other.svc.cluster.local", "other/web", "200", "none"),
				istio(3, "destination", "other/cli", "web.other.svc.cluster.local", "other/web", "200", "mutual_tls"),
			}},
			inc: Samples{metricRequests: {
				istio(3, "destination", "unknown", "web.other.svc.cluster.local", "other/web", "200", "none"),
				istio(1, "destination", "other/cli", "web.other.svc.cluster.local", "other/web", "200", "mutual_tls"),
			}},
		}},
		wantEdges: []string{
			"svc:web.other.svc.cluster.local > wl:other/web [http] rps=4 err=0 p99=- mtls=mixed offload=userspace rep=destination observed=true",
			"unknown > svc:web.other.svc.cluster.local [http] rps=3 err=0 p99=- mtls=none offload=userspace rep=destination observed=true",
			"wl:other/cli > svc:web.other.svc.cluster.local [http] rps=1 err=0 p99=- mtls=mutual_tls offload=userspace rep=destination observed=true",
		},
		wantVertices: []string{
			"svc:web.other.svc.cluster.local service model=false nodes=[] pods=0 mtls= in=4 out=4",
			"unknown unknown model=false nodes=[] pods=0 mtls= in=0 out=3",
			"wl:other/cli workload model=false nodes=[] pods=0 mtls= in=0 out=1",
			"wl:other/web workload model=false nodes=[] pods=0 mtls= in=4 out=0",
		},
	}, {
		name: "idle since the last scrape: the edge stays, at zero, with what was seen",
		agents: []agentWindow{{
			dt:  2,
			cur: Samples{metricRequests: {istio(3, "destination", "a/x", "", "a/y", "200", "mutual_tls")}},
			inc: Samples{metricRequests: {istio(0, "destination", "a/x", "", "a/y", "200", "mutual_tls")}},
		}, {
			// only one scrape so far: seen, but no rate
			cur: Samples{metricRequests: {istio(3, "destination", "a/y", "", "a/z", "200", "none")}},
		}},
		wantEdges: []string{
			"wl:a/x > wl:a/y [http] rps=0 err=0 p99=- mtls=mutual_tls offload=userspace rep=destination observed=true",
			"wl:a/y > wl:a/z [http] rps=0 err=0 p99=- mtls=none offload=userspace rep=destination observed=true",
		},
	}, {
		name: "TCP as the agents report it: the destination does not know the caller's workload, only its principal",
		agents: []agentWindow{{ // the caller's node
			dt: 2,
			cur: Samples{
				metricTCPOpened: {istio(4, "source", "db/cli", "pg.db.svc.cluster.local", "", "", "unknown")},
			},
			inc: Samples{
				metricTCPOpened:   {istio(2, "source", "db/cli", "pg.db.svc.cluster.local", "", "", "unknown")},
				metricTCPSent:     {istio(3000, "source", "db/cli", "pg.db.svc.cluster.local", "", "", "unknown")},
				metricTCPReceived: {istio(1000, "source", "db/cli", "pg.db.svc.cluster.local", "", "", "unknown")},
			},
		}, { // the server's node
			dt: 2,
			cur: Samples{
				metricTCPOpened: {istio(4, "destination", "unknown", "pg.db.svc.cluster.local", "db/pg", "", "mutual_tls", "source_principal", "spiffe://cluster.local/ns/db/sa/cli")},
			},
			inc: Samples{
				metricTCPOpened: {istio(2, "destination", "unknown", "pg.db.svc.cluster.local", "db/pg", "", "mutual_tls", "source_principal", "spiffe://cluster.local/ns/db/sa/cli")},
				metricTCPSent:   {istio(8000, "destination", "unknown", "pg.db.svc.cluster.local", "db/pg", "", "mutual_tls", "source_principal", "spiffe://cluster.local/ns/db/sa/cli")},
			},
		}},
		wantEdges: []string{
			"svc:pg.db.svc.cluster.local > wl:db/pg [tcp] rps=0 err=0 p99=- mtls=mutual_tls offload= rep=destination observed=true Bps=4000 cps=1",
			"wl:db/cli > svc:pg.db.svc.cluster.local [tcp] rps=0 err=0 p99=- mtls=unknown offload= rep=source observed=true Bps=2000 cps=1",
		},
		wantVertices: []string{
			"svc:pg.db.svc.cluster.local service model=false nodes=[] pods=0 mtls= in=0 out=0",
			"wl:db/cli workload model=false nodes=[] pods=0 mtls= in=0 out=0",
			"wl:db/pg workload model=false nodes=[] pods=0 mtls= in=0 out=0",
		},
	}, {
		name: "TCP reported by the destination only (the caller's agent not scraped)",
		agents: []agentWindow{{
			dt: 2,
			cur: Samples{
				metricTCPOpened: {istio(4, "destination", "db/cli", "pg.db.svc.cluster.local", "db/pg", "", "mutual_tls")},
			},
			inc: Samples{
				metricTCPOpened:   {istio(2, "destination", "db/cli", "pg.db.svc.cluster.local", "db/pg", "", "mutual_tls")},
				metricTCPSent:     {istio(3000, "destination", "db/cli", "pg.db.svc.cluster.local", "db/pg", "", "mutual_tls")},
				metricTCPReceived: {istio(1000, "destination", "db/cli", "pg.db.svc.cluster.local", "db/pg", "", "mutual_tls")},
			},
		}},
		wantEdges: []string{
			"svc:pg.db.svc.cluster.local > wl:db/pg [tcp] rps=0 err=0 p99=- mtls=mutual_tls offload= rep=destination observed=true Bps=2000 cps=1",
			"wl:db/cli > svc:pg.db.svc.cluster.local [tcp] rps=0 err=0 p99=- mtls=mutual_tls offload= rep=destination observed=true Bps=2000 cps=1",
		},
	}, {
		name: "TCP offload per edge: each hop by its side's gauge, an older caller's connections inside the mesh",
		agents: []agentWindow{{ // the caller's node: two offloaded connections
			dt: 2,
			cur: Samples{
				metricTCPOpened:    {istio(4, "source", "db/cli", "pg.db.svc.cluster.local", "db/pg", "", "unknown")},
				metricTCPOffloaded: {offloaded(2, "source", "db/cli", "pg.db.svc.cluster.local", "db/pg", "splice")},
			},
			inc: Samples{metricTCPOpened: {istio(2, "source", "db/cli", "pg.db.svc.cluster.local", "db/pg", "", "unknown")}},
		}, { // the server's node: those two, and one from an agent that
			// sends no workload, kept in userspace
			dt: 2,
			cur: Samples{
				metricTCPOpened: {
					istio(4, "destination", "db/cli", "pg.db.svc.cluster.local", "db/pg", "", "mutual_tls"),
					istio(1, "destination", "unknown", "pg.db.svc.cluster.local", "db/pg", "", "mutual_tls", "source_principal", "spiffe://cluster.local/ns/db/sa/old"),
				},
				metricTCPOffloaded: {
					offloaded(2, "destination", "db/cli", "pg.db.svc.cluster.local", "db/pg", "splice"),
					offloaded(1, "destination", "unknown", "pg.db.svc.cluster.local", "db/pg", "userspace"),
				},
			},
			inc: Samples{metricTCPOpened: {istio(2, "destination", "db/cli", "pg.db.svc.cluster.local", "db/pg", "", "mutual_tls")}},
		}},
		wantEdges: []string{
			"svc:pg.db.svc.cluster.local > wl:db/pg [tcp] rps=0 err=0 p99=- mtls=mutual_tls offload=mixed rep=destination observed=true Bps=0 cps=1 conns=map[splice:2 userspace:1]",
			"wl:db/cli > svc:pg.db.svc.cluster.local [tcp] rps=0 err=0 p99=- mtls=mutual_tls offload=splice rep=source observed=true Bps=0 cps=1 conns=map[splice:2]",
		},
	}, {
		name: "TCP offload: none open now, the mode seen before",
		agents: []agentWindow{{
			cur: Samples{
				metricTCPOpened:    {istio(4, "source", "db/cli", "pg.db.svc.cluster.local", "db/pg", "", "unknown")},
				metricTCPOffloaded: {offloaded(0, "source", "db/cli", "pg.db.svc.cluster.local", "db/pg", "sockmap")},
			},
		}},
		wantEdges: []string{
			"svc:pg.db.svc.cluster.local > wl:db/pg [tcp] rps=0 err=0 p99=- mtls=unknown offload=sockmap rep=source observed=true",
			"wl:db/cli > svc:pg.db.svc.cluster.local [tcp] rps=0 err=0 p99=- mtls=unknown offload=sockmap rep=source observed=true",
		},
	}, {
		name: "plaintext TCP: no tunnel, no offload state",
		agents: []agentWindow{{
			cur: Samples{metricTCPOpened: {istio(4, "destination", "db/cli", "pg.db.svc.cluster.local", "db/pg", "", "none")}},
		}},
		wantEdges: []string{
			"svc:pg.db.svc.cluster.local > wl:db/pg [tcp] rps=0 err=0 p99=- mtls=none offload= rep=destination observed=true",
			"wl:db/cli > svc:pg.db.svc.cluster.local [tcp] rps=0 err=0 p99=- mtls=none offload= rep=destination observed=true",
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			g := buildGraph(tc.model, tc.agents)
			if d := cmp.Diff(tc.wantEdges, edgeLines(g)); d != "" {
				t.Errorf("edges -want +got:\n%s", d)
			}
			if tc.wantVertices != nil {
				if d := cmp.Diff(tc.wantVertices, vertexLines(g)); d != "" {
					t.Errorf("vertices -want +got:\n%s", d)
				}
			}
			if !slices.IsSortedFunc(g.Vertices, func(a, b Vertex) int { return strings.Compare(a.ID, b.ID) }) {
				t.Error("vertices not sorted by ID")
			}
		})
	}
}
