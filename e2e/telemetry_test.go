package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/fibmesh/fibmesh/internal/testenv"
)

// TestTelemetry runs examples/ (plus a TCP echo service) with both
// agents writing a JSON access log, sends known traffic (frontend →
// reviews allowed and denied, client → reviews denied, frontend →
// tcp-echo over TCP) and checks what both agents report: Istio's
// istio_requests_total and request histograms with the right workloads,
// principals, codes and reporters, istio_tcp_* with the bytes sent,
// and one access log line per request and side, parsing as JSON and
// matching the requests (count, codes, x-request-id).
func TestTelemetry(t *testing.T) {
	manifests := manifestsIn(t, "../examples")
	manifests["90-tcp-echo.yaml"] = tcpEchoManifest
	logDir := t.TempDir()
	logOf := func(node string) string { return filepath.Join(logDir, "access-"+node+".log") }
	l := upMesh(t, telemetryPrefix, manifests,
		"--agent-arg", "node1:--access-log="+logOf("node1"), "--agent-arg", "node2:--access-log="+logOf("node2"))
	diagnoseOnFailure(t, l, "node1", "node2")
	frontend := newPodClient(t, l.podNamed(t, "production", "frontend-"))
	client := newPodClient(t, l.pod(t, "production", "client"))
	v2 := l.podNamed(t, "production", "reviews-v2-")
	echoPod := l.podNamed(t, "production", "tcp-echo-")
	reviews := l.serviceVIP(t, "production", "reviews", 9080)
	tcpEcho := l.serviceVIP(t, "production", "tcp-echo", 9000)
	canary := func(id string) []string { return []string{"X-Request-Id", id, "X-Canary-User", "true"} }
	// The one request that waits for the mesh: counted with the others
	// (the canary header sends it to v2 as theirs).
	waitL7(t, frontend, reviews, call{path: "/api/reviews/0", host: "reviews:9080", hdr: canary("ta-ready")}, 200)
	// tcp-echo is awaited from client, whose connections are not counted.
	waitTCPEcho(t, client, tcpEcho, 10)
	t.Logf("frontend %s on %s, reviews-v2 %s on %s, tcp-echo %s on %s, client on %s",
		frontend.pod.Name, frontend.pod.Node, v2.Name, v2.Node, echoPod.Name, echoPod.Node, client.pod.Node)

	const (
		nOK, nPost, nClient = 20, 5, 4
		nTCP, tcpBytes      = 3, 5000
	)
	for i := range nOK {
		a := frontend.must(t, reviews, call{path: fmt.Sprintf("/api/reviews/%d", i), host: "reviews:9080", hdr: canary(fmt.Sprintf("ta-ok-%d", i))})
		if a.status != 200 || !a.isReply {
			t.Fatalf("GET %d: %v", i, a)
		}
		// The agents' workload exchange stays between them.
		if v, w := a.reply.Headers.Get("X-Fibmesh-Peer-Metadata"), a.header.Get("X-Fibmesh-Peer-Metadata"); v != "" || w != "" {
			t.Errorf("GET %d: x-fibmesh-peer-metadata reached the server app (%q) or the client (%q)", i, v, w)
		}
	}
	for i := range nPost {
		if a := frontend.must(t, reviews, call{method: "POST", path: "/api/reviews/1", host: "reviews:9080", body: []byte("{}"), hdr: canary(fmt.Sprintf("ta-post-%d", i))}); a.status != 403 {
			t.Fatalf("POST %d: %v, want 403 from the authorization policy", i, a)
		}
	}
	for i := range nClient {
		if a := client.must(t, reviews, call{path: "/api/reviews/1", host: "reviews:9080", hdr: canary(fmt.Sprintf("ta-client-%d", i))}); a.status != 403 {
			t.Fatalf("GET from client %d: %v, want 403 (not frontend's identity)", i, a)
		}
	}
	for i := range nTCP {
		if err := tcpEchoOnce(frontend, tcpEcho, tcpBytes); err != nil {
			t.Fatalf("TCP %d: %v", i, err)
		}
	}
	// Without the canary header the route splits 90/10 between v1 and
	// v2: at least nSplit requests, until one reached v1; each answer
	// says which version served it.
	const nSplit, maxSplit = 5, 60
	split := map[string]int{} // by version
	for i := 0; i < maxSplit && (i < nSplit || split["v1"] == 0); i++ {
		a := frontend.must(t, reviews, call{path: "/api/reviews/2", host: "reviews:9080", hdr: []string{"X-Request-Id", fmt.Sprintf("ta-split-%d", i)}})
		if a.status != 200 || !a.isReply || (a.reply.Version != "v1" && a.reply.Version != "v2") {
			t.Fatalf("GET without the canary header %d: %v, want 200 from v1 or v2", i, a)
		}
		split[a.reply.Version]++
	}
	if split["v1"] == 0 {
		t.Fatalf("%d requests without the canary header, none reached v1 (90%% should)", maxSplit)
	}
	t.Logf("without the canary header: %d to v1, %d to v2", split["v1"], split["v2"])

	frontendID, reviewsID, clientID, echoID := spiffe("production", "frontend"), spiffe("production", "reviews"), spiffe("production", "default"), spiffe("production", "tcp-echo")
	reviewsSvc := "reviews.production.svc.cluster.local"
	frontendToV2 := map[string]string{"source_workload": "frontend", "source_workload_namespace": "production", "source_principal": frontendID,
		"source_cluster": "Kubernetes", "destination_workload": "reviews-v2", "destination_workload_namespace": "production",
		"destination_principal": reviewsID, "destination_service": reviewsSvc, "destination_service_name": "reviews",
		"destination_service_namespace": "production", "destination_cluster": "Kubernetes", "request_protocol": "http", "grpc_response_status": "",
		// The pods' app and version labels (examples/03-deployments.yaml),
		// each agent's own pod's from its flow table, the other's from
		// the metadata the agents exchange: on both reporters.
		"source_app": "frontend", "source_version": "v1", "source_canonical_service": "frontend", "source_canonical_revision": "v1",
		"destination_app": "reviews", "destination_version": "v2", "destination_canonical_service": "reviews", "destination_canonical_revision": "v2"}
	frontendToV1 := withLabels(frontendToV2, "destination_workload", "reviews-v1", "destination_version", "v1", "destination_canonical_revision", "v1")
	// client has an app label and no version: Istio's "unknown", and
	// its canonical revision "latest".
	clientToV2 := withLabels(frontendToV2, "source_workload", "client", "source_principal", clientID,
		"source_app", "client", "source_version", "unknown", "source_canonical_service", "client", "source_canonical_revision", "latest")
	// TCP: each agent's own pod's labels come from its flow table. The
	// calling agent sends its pod's workload in the tunnel's PROXY
	// header (a TLV), so the called side names frontend as HTTP does.
	// The header goes one way: the caller names the called workload
	// from the endpoint's EDS metadata (Istio's "istio" workload), on
	// the same node or across nodes.
	frontendToEcho := map[string]string{"source_principal": frontendID, "source_workload_namespace": "production", "destination_workload_namespace": "production",
		"destination_principal": echoID, "destination_service": "tcp-echo.production.svc.cluster.local", "destination_service_name": "tcp-echo",
		"request_protocol": "tcp", "response_flags": "-", "source_workload": "frontend", "source_app": "frontend", "source_version": "v1",
		"source_canonical_service": "frontend", "source_canonical_revision": "v1"}
	echoWorkload := []string{"destination_workload", "tcp-echo", "destination_app", "tcp-echo", "destination_version", "v1",
		"destination_canonical_service", "tcp-echo", "destination_canonical_revision", "v1"}
	echoSource := withLabels(frontendToEcho, append([]string{"reporter", "source"}, echoWorkload...)...)
	if echoPod.Node == frontend.pod.Node {
		// The lab's scheduler is deterministic: examples/ changed.
		t.Errorf("frontend and tcp-echo both on %s: this test wants them on two nodes, where only EDS names tcp-echo to the caller", echoPod.Node)
	}
	echoDestination := withLabels(frontendToEcho, append([]string{"reporter", "destination"}, echoWorkload...)...)
	type want struct {
		what   string
		metric string
		labels map[string]string
		value  float64
	}
	wants := []want{
		{"allowed, the caller's count", "istio_requests_total", withLabels(frontendToV2, "reporter", "source", "response_code", "200", "response_flags", "-", "connection_security_policy", "unknown"), float64(nOK + 1 + split["v2"])},
		{"allowed, the server's count", "istio_requests_total", withLabels(frontendToV2, "reporter", "destination", "response_code", "200", "response_flags", "-", "connection_security_policy", "mutual_tls"), float64(nOK + 1 + split["v2"])},
		{"allowed, durations", "istio_request_duration_milliseconds_count", withLabels(frontendToV2, "reporter", "destination", "response_code", "200"), float64(nOK + 1 + split["v2"])},
		{"allowed, request sizes", "istio_request_bytes_count", withLabels(frontendToV2, "reporter", "source", "response_code", "200"), float64(nOK + 1 + split["v2"])},
		{"allowed, response sizes", "istio_response_bytes_count", withLabels(frontendToV2, "reporter", "source", "response_code", "200"), float64(nOK + 1 + split["v2"])},
		{"to v1, the caller's count", "istio_requests_total", withLabels(frontendToV1, "reporter", "source", "response_code", "200", "connection_security_policy", "unknown"), float64(split["v1"])},
		{"to v1, the server's count", "istio_requests_total", withLabels(frontendToV1, "reporter", "destination", "response_code", "200", "connection_security_policy", "mutual_tls"), float64(split["v1"])},
		{"POST denied, the caller's count", "istio_requests_total", withLabels(frontendToV2, "reporter", "source", "response_code", "403", "response_flags", "-"), nPost},
		{"POST denied, the server's count", "istio_requests_total", withLabels(frontendToV2, "reporter", "destination", "response_code", "403", "response_flags", "RBAC", "connection_security_policy", "mutual_tls"), nPost},
		{"client denied, the caller's count", "istio_requests_total", withLabels(clientToV2, "reporter", "source", "response_code", "403"), nClient},
		{"client denied, the server's count", "istio_requests_total", withLabels(clientToV2, "reporter", "destination", "response_code", "403", "response_flags", "RBAC"), nClient},
		{"every request to reviews, both sides", "istio_requests_total", map[string]string{"destination_service_name": "reviews"}, float64(2 * (nOK + 1 + nPost + nClient + split["v1"] + split["v2"]))},
		{"TCP opened, the caller's count", "istio_tcp_connections_opened_total", withLabels(echoSource, "connection_security_policy", "unknown"), nTCP},
		{"TCP closed, the caller's count", "istio_tcp_connections_closed_total", echoSource, nTCP},
		{"TCP bytes to the server, the caller's count", "istio_tcp_received_bytes_total", withLabels(frontendToEcho, "reporter", "source"), nTCP * tcpBytes},
		{"TCP bytes back, the caller's count", "istio_tcp_sent_bytes_total", withLabels(frontendToEcho, "reporter", "source"), nTCP * tcpBytes},
		{"TCP opened, the server's count", "istio_tcp_connections_opened_total", withLabels(echoDestination, "connection_security_policy", "mutual_tls"), nTCP},
		{"TCP closed, the server's count", "istio_tcp_connections_closed_total", echoDestination, nTCP},
		{"TCP bytes to the server, the server's count", "istio_tcp_received_bytes_total", withLabels(frontendToEcho, "reporter", "destination"), nTCP * tcpBytes},
		{"TCP bytes back, the server's count", "istio_tcp_sent_bytes_total", withLabels(frontendToEcho, "reporter", "destination"), nTCP * tcpBytes},
	}
	// The agents count a request when its response is sent and a
	// connection when both its sides are done: poll until every count is
	// in, then hold them to the exact value.
	var got []float64
	var families map[string]*dto.MetricFamily
	testenv.Eventually(t, 30*time.Second, "every count in", func() error {
		families = scrapeAgents(t, l, "node1", "node2")
		got = got[:0]
		var short []string
		for _, w := range wants {
			v := sumSeries(families, w.metric, w.labels)
			got = append(got, v)
			if v < w.value {
				short = append(short, fmt.Sprintf("%s: %v of %v", w.what, v, w.value))
			}
		}
		if len(short) > 0 {
			return fmt.Errorf("%s", strings.Join(short, "; "))
		}
		return nil
	})
	for i, w := range wants {
		if got[i] != w.value {
			t.Errorf("%s: %s%v = %v, want %v", w.what, w.metric, w.labels, got[i], w.value)
		}
	}
	// Each side's tunnel connections by edge and offload mode: all closed
	// now, the series stay at zero with the mode they had (splice or
	// sockmap where the kernel has kTLS, userspace elsewhere).
	for _, side := range []map[string]string{echoSource, echoDestination} {
		want := map[string]string{}
		for _, k := range []string{"reporter", "source_workload", "source_workload_namespace", "destination_workload", "destination_workload_namespace", "destination_service"} {
			want[k] = side[k]
		}
		var modes []string
		for _, m := range families["fibmesh_agent_tcp_offloaded_connections"].GetMetric() {
			l := labelsOf(m)
			if hasLabels(l, want) {
				modes = append(modes, fmt.Sprintf("%s=%v", l["mode"], m.GetGauge().GetValue()))
				if mode := l["mode"]; mode != "splice" && mode != "sockmap" && mode != "userspace" || m.GetGauge().GetValue() != 0 {
					t.Errorf("fibmesh_agent_tcp_offloaded_connections%v = %v, want 0 (all closed) of mode splice, sockmap or userspace", l, m.GetGauge().GetValue())
				}
			}
		}
		if len(modes) == 0 {
			t.Errorf("no fibmesh_agent_tcp_offloaded_connections%v series", want)
		}
		t.Logf("fibmesh_agent_tcp_offloaded_connections%v: %v", want, modes)
	}
	// No label carries an address or a path.
	for name, mf := range families {
		if !strings.HasPrefix(name, "istio_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if strings.Contains(lp.GetValue(), "/api/") || strings.Contains(lp.GetValue(), "10.") && !strings.HasPrefix(lp.GetValue(), "spiffe://") {
					t.Errorf("%s has label %s=%q: an address or a path", name, lp.GetName(), lp.GetValue())
				}
			}
		}
	}
	if t.Failed() {
		for _, name := range []string{"istio_requests_total", "istio_tcp_connections_opened_total"} {
			for _, m := range families[name].GetMetric() {
				t.Logf("%s%v %v", name, labelsOf(m), m.GetCounter().GetValue())
			}
		}
	}

	t.Run("access log", func(t *testing.T) {
		type line = map[string]any
		var lines []line
		byID := map[string][]line{}
		tcp := map[string][]line{} // by reporter, frontend ↔ tcp-echo only
		read := func() error {
			lines, byID, tcp = nil, map[string][]line{}, map[string][]line{}
			for _, node := range []string{"node1", "node2"} {
				b, err := os.ReadFile(logOf(node))
				if err != nil {
					return err
				}
				sc := bufio.NewScanner(bytes.NewReader(b))
				sc.Buffer(make([]byte, 64<<10), 1<<20)
				for n := 1; sc.Scan(); n++ {
					var m line
					if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
						return fmt.Errorf("%s line %d is not JSON: %v: %q", logOf(node), n, err, sc.Bytes())
					}
					lines = append(lines, m)
					if id, ok := m["request_id"].(string); ok {
						byID[id] = append(byID[id], m)
					}
					if m["method"] == nil && strings.HasPrefix(fmt.Sprint(m["pod"]), "production/frontend-") && strings.Contains(fmt.Sprint(m["upstream_cluster"]), "tcp-echo") ||
						m["method"] == nil && strings.HasPrefix(fmt.Sprint(m["pod"]), "production/tcp-echo-") && m["downstream_peer_uri_san"] == frontendID {
						tcp[fmt.Sprint(m["reporter"])] = append(tcp[fmt.Sprint(m["reporter"])], m)
					}
				}
			}
			return nil
		}
		testenv.Eventually(t, 20*time.Second, "every request's two lines and every TCP connection's", func() error {
			if err := read(); err != nil {
				return err
			}
			for i := range nOK {
				if id := fmt.Sprintf("ta-ok-%d", i); len(byID[id]) < 2 {
					return fmt.Errorf("%s: %d lines", id, len(byID[id]))
				}
			}
			if len(tcp["source"]) < nTCP || len(tcp["destination"]) < nTCP {
				return fmt.Errorf("TCP lines: %d source, %d destination", len(tcp["source"]), len(tcp["destination"]))
			}
			return nil
		})
		if err := read(); err != nil {
			t.Fatal(err)
		}
		// Every request sent has exactly one line per side, with its
		// code and the identities each side verified.
		type side struct {
			Reporter, Method, Path, Authority, Flags, SourceWorkload, DestinationWorkload, Peer string
			Code                                                                                float64
		}
		sideOf := func(m line) side {
			s := side{Reporter: jsonStr(m["reporter"]), Method: jsonStr(m["method"]), Path: jsonStr(m["path"]), Authority: jsonStr(m["authority"]),
				Flags: jsonStr(m["response_flags"]), SourceWorkload: jsonStr(m["source_workload"]), DestinationWorkload: jsonStr(m["destination_workload"])}
			s.Code, _ = m["response_code"].(float64)
			if s.Reporter == "destination" {
				s.Peer = jsonStr(m["downstream_peer_uri_san"])
			} else {
				s.Peer = jsonStr(m["upstream_peer_uri_san"])
			}
			return s
		}
		check := func(id string, want ...side) {
			t.Helper()
			var got []side
			for _, m := range byID[id] {
				got = append(got, sideOf(m))
			}
			slices.SortFunc(got, func(a, b side) int { return strings.Compare(a.Reporter, b.Reporter) })
			if !slices.Equal(got, want) {
				t.Errorf("x-request-id %s: lines\n%+v\nwant\n%+v", id, got, want)
			}
		}
		for i := range nOK {
			path := fmt.Sprintf("/api/reviews/%d", i)
			check(fmt.Sprintf("ta-ok-%d", i),
				side{"destination", "GET", path, "reviews:9080", "-", "frontend", "reviews-v2", frontendID, 200},
				side{"source", "GET", path, "reviews:9080", "-", "frontend", "reviews-v2", reviewsID, 200})
		}
		for i := range nPost {
			check(fmt.Sprintf("ta-post-%d", i),
				side{"destination", "POST", "/api/reviews/1", "reviews:9080", "RBAC", "frontend", "reviews-v2", frontendID, 403},
				side{"source", "POST", "/api/reviews/1", "reviews:9080", "-", "frontend", "reviews-v2", reviewsID, 403})
		}
		for i := range nClient {
			check(fmt.Sprintf("ta-client-%d", i),
				side{"destination", "GET", "/api/reviews/1", "reviews:9080", "RBAC", "client", "reviews-v2", clientID, 403},
				side{"source", "GET", "/api/reviews/1", "reviews:9080", "-", "client", "reviews-v2", reviewsID, 403})
		}
		for _, r := range []string{"source", "destination"} {
			if len(tcp[r]) != nTCP {
				t.Errorf("%d TCP lines from the %s, want %d", len(tcp[r]), r, nTCP)
			}
			// Both workloads, as the metrics name them (the caller's
			// from EDS, wherever tcp-echo runs).
			wantDst := any("tcp-echo")
			for _, m := range tcp[r] {
				if m["bytes_received"] != float64(tcpBytes) || m["bytes_sent"] != float64(tcpBytes) || m["response_code"] != 0.0 {
					t.Errorf("TCP line from the %s: %v, want %d bytes each way", r, m, tcpBytes)
				}
				if m["source_workload"] != "frontend" || m["destination_workload"] != wantDst {
					t.Errorf("TCP line from the %s: source_workload %v, destination_workload %v; want frontend, %v", r, m["source_workload"], m["destination_workload"], wantDst)
				}
			}
		}
		// A line's fields: Envoy's names, every one present.
		for _, k := range []string{"start_time", "method", "path", "protocol", "response_code", "response_flags", "bytes_received",
			"bytes_sent", "duration", "upstream_host", "upstream_cluster", "request_id", "authority", "downstream_peer_uri_san"} {
			if _, ok := byID["ta-ok-0"][0][k]; !ok {
				t.Errorf("no field %q in %v", k, byID["ta-ok-0"][0])
			}
		}
		if _, err := time.Parse(time.RFC3339Nano, jsonStr(byID["ta-ok-0"][0]["start_time"])); err != nil {
			t.Errorf("start_time: %v", err)
		}
		t.Logf("%d access log lines; one: %v", len(lines), byID["ta-ok-0"][0])
		// Nothing was dropped or failed.
		for _, node := range []string{"node1", "node2"} {
			if v := l.metricWith(t, node, "fibmesh_agent_access_log_lines_total", `result="dropped"`) + l.metricWith(t, node, "fibmesh_agent_access_log_lines_total", `result="failed"`); v != 0 {
				t.Errorf("%s: %v access log lines dropped or failed", node, v)
			}
		}
	})
}

// telemetryPrefix is the network namespace prefix of TestTelemetry's lab.
const telemetryPrefix = "fm-ta-"

// tcpEchoManifest is a TCP service: the echo app behind a port named
// tcp (L4: relayed as bytes, counted in istio_tcp_*).
const tcpEchoManifest = `apiVersion: v1
kind: ServiceAccount
metadata:
  name: tcp-echo
  namespace: production
---
apiVersion: v1
kind: Service
metadata:
  name: tcp-echo
  namespace: production
spec:
  selector:
    app: tcp-echo
  ports:
  - name: tcp
    port: 9000
    targetPort: tcp
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: tcp-echo
  namespace: production
spec:
  replicas: 1
  selector:
    matchLabels:
      app: tcp-echo
  template:
    metadata:
      labels:
        app: tcp-echo
        version: v1
    spec:
      serviceAccountName: tcp-echo
      containers:
      - name: tcp-echo
        image: ghcr.io/fibmesh/fibmesh-lab:latest
        command: ["fibmesh-lab", "app", "echo"]
        args: ["--port", "9000", "--name", "tcp-echo", "--version", "v1"]
        readinessProbe:
          tcpSocket:
            port: tcp
          periodSeconds: 2
        ports:
        - name: tcp
          containerPort: 9000
`

// tcpEchoOnce sends n bytes (not HTTP, so the echo app echoes them) to
// addr from pc's pod, reads them back and closes.
func tcpEchoOnce(pc *podClient, addr interface{ String() string }, n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pc.dial(ctx, "tcp", addr.String())
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := bytes.Repeat([]byte("tcp-telemetry."), n/14+1)[:n]
	if _, err := c.Write(msg); err != nil {
		return err
	}
	back := make([]byte, n)
	if _, err := io.ReadFull(c, back); err != nil {
		return fmt.Errorf("echo of %d bytes: %w", n, err)
	}
	if !bytes.Equal(back, msg) {
		return fmt.Errorf("echo differs")
	}
	// Our side ends first; the echo app ends on our FIN.
	c.(*net.TCPConn).CloseWrite()
	if _, err := io.Copy(io.Discard, c); err != nil {
		return fmt.Errorf("after the echo: %w", err)
	}
	return nil
}

// waitTCPEcho waits until an echo of n bytes through addr works.
func waitTCPEcho(t *testing.T, pc *podClient, addr interface{ String() string }, n int) {
	t.Helper()
	testenv.Eventually(t, 60*time.Second, pc.pod.Name+" → "+addr.String()+" echoes", func() error {
		return tcpEchoOnce(pc, addr, n)
	})
}

// scrapeAgents reads the metrics of the nodes' agents.
func scrapeAgents(t *testing.T, l *meshLab, nodes ...string) map[string]*dto.MetricFamily {
	t.Helper()
	all := map[string]*dto.MetricFamily{}
	for _, node := range nodes {
		body := l.get(t, l.nodeNetns(node), "http://127.0.0.1:15090/metrics")
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("%s's metrics: %v", node, err)
		}
		for name, mf := range fams {
			if all[name] == nil {
				all[name] = mf
				continue
			}
			all[name].Metric = append(all[name].Metric, mf.Metric...)
		}
	}
	return all
}

// sumSeries sums the samples of metric (a counter, or a histogram's
// name_count) whose labels include match.
func sumSeries(fams map[string]*dto.MetricFamily, metric string, match map[string]string) float64 {
	name, count := strings.CutSuffix(metric, "_count")
	if !count || fams[name] == nil {
		name, count = metric, false
	}
	total := 0.0
	for _, m := range fams[name].GetMetric() {
		lbl := labelsOf(m)
		ok := true
		for k, v := range match {
			if lbl[k] != v {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		switch {
		case count:
			total += float64(m.GetHistogram().GetSampleCount())
		default:
			total += m.GetCounter().GetValue()
		}
	}
	return total
}

func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, lp := range m.GetLabel() {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

// hasLabels reports whether l has every label of want.
func hasLabels(l, want map[string]string) bool {
	for k, v := range want {
		if l[k] != v {
			return false
		}
	}
	return true
}

// with returns a copy of m with the key/value pairs kv set.
func withLabels(m map[string]string, kv ...string) map[string]string {
	out := maps.Clone(m)
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

func jsonStr(v any) string {
	s, _ := v.(string)
	return s
}
