package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/slowpath/proxy"
)

var (
	logStart = time.Date(2026, 12, 3, 16, 40, 50, 123456789, time.UTC)
	// logRequest is the called side of a request the authorization
	// policy denied.
	logRequest = proxy.RequestInfo{Direction: proxy.DirectionInbound, Pod: "production/reviews-v1-7d4b9c8f5d-x2kzq",
		Start: logStart, Duration: 2500 * time.Microsecond, Method: "POST", Authority: "reviews:9080", Path: "/api/reviews/1",
		Protocol: "HTTP/1.1", Code: 403, Flags: "RBAC", RequestID: "6c1b9a43", Peer: frontendID, Policy: "ns[production]-policy[allow]-rule[0]",
		BytesSent: 19, BytesReceived: 7, UserAgent: `curl "quoted"`, MTLS: true,
		Source:       netip.MustParseAddrPort("10.200.1.4:43122"),
		Destination:  netip.MustParseAddrPort("10.200.2.5:9080"),
		Workload:     proxy.WorkloadMeta{Name: "reviews-v1", Namespace: "production"},
		PeerWorkload: proxy.WorkloadMeta{Name: "frontend", Namespace: "production"}}
	// logConn is the calling side of an offloaded TCP connection.
	logConn = proxy.ConnInfo{ID: 7, Direction: proxy.DirectionOutbound, Listener: "outbound", Pod: "production/frontend-5c6d7f8b9-bcdfg",
		Source: netip.MustParseAddrPort("10.200.1.4:40000"), Destination: netip.MustParseAddrPort("10.96.0.9:9090"),
		Upstream: netip.MustParseAddrPort("10.200.2.5:15008"), Mode: proxy.ModeTunnel, Cluster: "outbound|9090||db.production.svc.cluster.local",
		PeerIdentity: reviewsID, State: proxy.StateClosed, Offload: proxy.OffloadSplice, Reason: "idle timeout",
		BytesOut: 1000, BytesIn: 64000, Start: logStart, End: logStart.Add(1500 * time.Millisecond)}
)

func TestAccessLogJSON(t *testing.T) {
	tel := testTelemetry()
	for _, tc := range []struct {
		name  string
		entry logEntry
		want  map[string]any
	}{
		{"denied request, called side", logEntry{req: &logRequest, labels: tel.requestLabelValues(&logRequest)}, map[string]any{
			"start_time": "2026-12-03T16:40:50.123Z", "method": "POST", "path": "/api/reviews/1", "protocol": "HTTP/1.1",
			"response_code": 403.0, "response_flags": "RBAC", "response_code_details": "rbac_access_denied_matched_policy[ns[production]-policy[allow]-rule[0]]",
			"connection_termination_details": nil, "upstream_transport_failure_reason": nil,
			"bytes_received": 7.0, "bytes_sent": 19.0, "duration": 2.0, "x_forwarded_for": nil, "user_agent": `curl "quoted"`,
			"request_id": "6c1b9a43", "authority": "reviews:9080", "upstream_host": nil, "upstream_cluster": nil,
			"downstream_local_address": "10.200.2.5:9080", "downstream_remote_address": "10.200.1.4:43122",
			"requested_server_name": nil, "route_name": nil, "downstream_peer_uri_san": frontendID, "upstream_peer_uri_san": nil,
			"grpc_status": nil, "reporter": "destination", "direction": "inbound", "pod": "production/reviews-v1-7d4b9c8f5d-x2kzq",
			"source_workload": "frontend", "source_namespace": "production", "source_principal": frontendID,
			"destination_workload": "reviews-v1", "destination_namespace": "production", "destination_principal": reviewsID,
			"destination_service": "reviews.production.svc.cluster.local", "connection_security_policy": "mutual_tls", "offload": nil,
		}},
		{"offloaded TCP connection, calling side", logEntry{conn: &logConn, labels: tel.connLabelValues(&logConn, proxy.WorkloadMeta{})}, map[string]any{
			"start_time": "2026-12-03T16:40:50.123Z", "method": nil, "path": nil, "protocol": nil,
			"response_code": 0.0, "response_flags": "-", "response_code_details": nil,
			"connection_termination_details": "idle timeout", "upstream_transport_failure_reason": nil,
			"bytes_received": 1000.0, "bytes_sent": 64000.0, "duration": 1500.0, "x_forwarded_for": nil, "user_agent": nil,
			"request_id": nil, "authority": nil, "upstream_host": "10.200.2.5:15008", "upstream_cluster": "outbound|9090||db.production.svc.cluster.local",
			"downstream_local_address": "10.96.0.9:9090", "downstream_remote_address": "10.200.1.4:40000",
			"requested_server_name": nil, "route_name": nil, "downstream_peer_uri_san": nil, "upstream_peer_uri_san": reviewsID,
			"grpc_status": nil, "reporter": "source", "direction": "outbound", "pod": "production/frontend-5c6d7f8b9-bcdfg",
			"source_workload": "frontend", "source_namespace": "production", "source_principal": frontendID,
			"destination_workload": nil, "destination_namespace": "production", "destination_principal": reviewsID,
			"destination_service": "db.production.svc.cluster.local", "connection_security_policy": nil, "offload": "splice",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &accessLog{format: AccessLogJSON}
			line := l.format1(nil, tc.entry)
			if n := bytes.Count(line, []byte("\n")); n != 1 || line[len(line)-1] != '\n' {
				t.Fatalf("want one line ending in a newline, got %q", line)
			}
			var got map[string]any
			if err := json.Unmarshal(line, &got); err != nil {
				t.Fatalf("not JSON: %v: %s", err, line)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAccessLogText(t *testing.T) {
	tel := testTelemetry()
	bad := logRequest
	bad.Path = "/a b\"c"
	bad.Err = errors.New("dial tcp: connection refused")
	for _, tc := range []struct {
		name  string
		entry logEntry
		want  string
	}{
		{"denied request", logEntry{req: &logRequest, labels: tel.requestLabelValues(&logRequest)},
			`[2026-12-03T16:40:50.123Z] "POST /api/reviews/1 HTTP/1.1" 403 RBAC rbac_access_denied_matched_policy[ns[production]-policy[allow]-rule[0]] - "-" 7 19 2 - "-" "curl \"quoted\"" "6c1b9a43" "reviews:9080" "-" - - 10.200.2.5:9080 10.200.1.4:43122 - - destination production/frontend production/reviews-v1 ` + frontendID + "\n"},
		{"path and error escaped", logEntry{req: &bad, labels: tel.requestLabelValues(&bad)},
			`[2026-12-03T16:40:50.123Z] "POST /a b\"c HTTP/1.1" 403 RBAC rbac_access_denied_matched_policy[ns[production]-policy[allow]-rule[0]] - "dial tcp: connection refused" 7 19 2 - "-" "curl \"quoted\"" "6c1b9a43" "reviews:9080" "-" - - 10.200.2.5:9080 10.200.1.4:43122 - - destination production/frontend production/reviews-v1 ` + frontendID + "\n"},
		{"TCP connection", logEntry{conn: &logConn, labels: tel.connLabelValues(&logConn, proxy.WorkloadMeta{})},
			`[2026-12-03T16:40:50.123Z] "- - -" 0 - - idle_timeout "-" 1000 64000 1500 - "-" "-" "-" "-" "10.200.2.5:15008" outbound|9090||db.production.svc.cluster.local - 10.96.0.9:9090 10.200.1.4:40000 - - source production/frontend production/- ` + reviewsID + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &accessLog{format: AccessLogText}
			if got := string(l.format1(nil, tc.entry)); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

// blockingWriter holds every write until released.
type blockingWriter struct {
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// TestAccessLogNeverBlocks fills the queue while the writer is stuck:
// queueing returns at once, what does not fit is dropped and counted,
// and what was queued is written when the writer moves again.
func TestAccessLogNeverBlocks(t *testing.T) {
	w := &blockingWriter{release: make(chan struct{})}
	l := newAccessLog(w, nil, AccessLogJSON)
	const n = accessLogQueue + 500
	start := time.Now()
	for i := 0; i < n; i++ {
		l.request(&logRequest, nil)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("queueing %d entries took %v", n, d)
	}
	dropped := testutil.ToFloat64(l.dropped)
	// The writer takes what its 64 KiB buffer holds off the queue before
	// it blocks (about 60 lines of 1 KiB).
	if dropped < 300 || dropped > 500 {
		t.Errorf("dropped %v, want 500 less what the writer's buffer took", dropped)
	}
	close(w.release)
	if err := l.close(); err != nil {
		t.Fatal(err)
	}
	written := testutil.ToFloat64(l.written)
	if written+dropped != n {
		t.Errorf("written %v + dropped %v != %d queued", written, dropped, n)
	}
	lines := strings.Split(strings.TrimSuffix(w.buf.String(), "\n"), "\n")
	if float64(len(lines)) != written {
		t.Errorf("%d lines in the output, %v counted", len(lines), written)
	}
	for _, line := range lines {
		if !json.Valid([]byte(line)) {
			t.Fatalf("not JSON: %s", line)
		}
	}
}

func TestOpenAccessLog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	for _, tc := range []struct {
		name, dest, format string
		wantNil            bool
		wantErr            string
	}{
		{name: "off", dest: "off", wantNil: true},
		{name: "unset", dest: "", wantNil: true},
		{name: "file", dest: path, format: "text"},
		{name: "stdout", dest: "stdout"},
		{name: "bad format", dest: "stdout", format: "yaml", wantErr: `--access-log-format "yaml": want json or text`},
		{name: "unwritable", dest: filepath.Join(dir, "missing", "access.log"), wantErr: "--access-log " + filepath.Join(dir, "missing", "access.log")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := openAccessLog(tc.dest, tc.format)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (l == nil) != tc.wantNil {
				t.Fatalf("log %v, want nil: %v", l, tc.wantNil)
			}
			if l != nil {
				l.close()
			}
		})
	}
	// The file was appended to: write through one and read it back.
	l, err := openAccessLog(path, "json")
	if err != nil {
		t.Fatal(err)
	}
	l.request(&logRequest, nil)
	if err := l.close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"request_id":"6c1b9a43"`)) {
		t.Errorf("file has %q", b)
	}
}

// TestAccessLogReopen rotates the log by renaming it: after Reopen the
// lines go to a new file at the path, none is lost.
func TestAccessLogReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	l, err := openAccessLog(path, AccessLogJSON)
	if err != nil {
		t.Fatal(err)
	}
	first, second := logRequest, logRequest
	first.RequestID, second.RequestID = "before-rotation", "after-rotation"
	l.request(&first, nil)
	// The line is written before the reopen: the writer takes the queue
	// in order and reopen waits behind it.
	testenv.Eventually(t, 5*time.Second, "the first line written", func() error {
		if testutil.ToFloat64(l.written) < 1 {
			return errors.New("not yet")
		}
		return nil
	})
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	l.request(&second, nil)
	if err := l.close(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ file, want, notWant string }{
		{path + ".1", "before-rotation", "after-rotation"},
		{path, "after-rotation", "before-rotation"},
	} {
		b, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(tc.want)) || bytes.Contains(b, []byte(tc.notWant)) {
			t.Errorf("%s has %q, want %s and not %s", tc.file, b, tc.want, tc.notWant)
		}
	}
	// Nothing to reopen for stdout or no log.
	var none *accessLog
	if err := none.Reopen(); err != nil {
		t.Error(err)
	}
}
