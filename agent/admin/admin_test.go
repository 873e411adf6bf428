package admin

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type fakeSource struct {
	ready    bool
	why      string
	fibErr   error
	flowsErr error
}

func (f *fakeSource) ConfigDump() ConfigDump {
	return ConfigDump{Configs: []TypeConfig{
		{Type: "CDS", TypeURL: "type.googleapis.com/envoy.config.cluster.v3.Cluster", VersionInfo: "cds-3"},
		{Type: "FDS", TypeURL: "type.googleapis.com/fibmesh.fib.v1.FlowTable", VersionInfo: "fds-7",
			Resources:  []Resource{{Name: "mesh", Resource: json.RawMessage(`{"@type":"type.googleapis.com/fibmesh.fib.v1.FlowTable"}`)}},
			ErrorState: &UpdateFailure{VersionInfo: "fds-8", Details: `flow table "mesh": routes[0].prefix "x"`}},
	}}
}
func (f *fakeSource) Pods() []PodInfo { return nil }
func (f *fakeSource) FIBSummary() (FIB, error) {
	return FIB{Routes: []Route{{Prefix: "10.200.2.0/24", Ifindex: 2}}}, f.fibErr
}
func (f *fakeSource) Ready() (bool, string) { return f.ready, f.why }
func (f *fakeSource) OffloadFlows() ([]OffloadFlow, error) {
	if f.flowsErr != nil {
		return nil, f.flowsErr
	}
	return []OffloadFlow{
		{ConnID: 7, Pod: "a/x", State: "offloaded", Packets: 10},
		{ConnID: 9, Pod: "a/y", State: "revoked", Revocation: &Revocation{State: "dropped", FirstDropMs: 1.5, Dropped: 3}},
	}, nil
}
func (f *fakeSource) Connections() []Connection {
	return []Connection{{ID: 1, Pod: "a/x", State: "established"}, {ID: 2, Pod: "a/y", State: "closed"}}
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

func TestHandler(t *testing.T) {
	src := &fakeSource{why: "no flow table from the controller yet (controller 10.100.0.254:15012: connecting)"}
	h := Handler(src)
	for _, tt := range []struct {
		path     string
		code     int
		contains string
	}{
		{"/healthz", 200, "ok"},
		{"/readyz", 503, "not ready: no flow table from the controller yet"},
		{"/config_dump", 200, `"version_info": "cds-3"`},
		{"/config_dump?type=fds", 200, `"details": "flow table \"mesh\": routes[0].prefix \"x\""`},
		{"/config_dump?type=XDS", 404, `type "XDS": not subscribed: want one of CDS, FDS`},
		{"/pods", 200, "[]"},
		{"/fib", 200, `"prefix": "10.200.2.0/24"`},
		{"/connections", 200, `"pod": "a/y"`},
		{"/connections?pod=a/x", 200, `"id": 1,`},
		{"/connections?state=closed", 200, `"id": 2,`},
		{"/nope", 404, ""},
	} {
		code, body := get(t, h, tt.path)
		if code != tt.code || !strings.Contains(body, tt.contains) {
			t.Errorf("GET %s: %d %q, want %d containing %q", tt.path, code, body, tt.code, tt.contains)
		}
	}
	_, body := get(t, h, "/config_dump?type=FDS")
	var d ConfigDump
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		t.Fatal(err)
	}
	if got := []string{d.Configs[0].Type}; !cmp.Equal(got, []string{"FDS"}) || len(d.Configs) != 1 {
		t.Errorf("filtered dump: %+v", d)
	}
	src.ready = true
	if code, _ := get(t, h, "/readyz"); code != 200 {
		t.Errorf("/readyz when ready: %d", code)
	}
	src.fibErr = errors.New("read routes: boom")
	if code, body := get(t, h, "/fib"); code != 500 || !strings.Contains(body, "boom") {
		t.Errorf("/fib error: %d %q", code, body)
	}
}

func TestOffloadFlows(t *testing.T) {
	src := &fakeSource{}
	h := Handler(src)
	for _, tt := range []struct {
		path string
		code int
		ids  []uint64
		body string
	}{
		{path: "/offload/flows", code: 200, ids: []uint64{7, 9}},
		{path: "/offload/flows?pod=a/y", code: 200, ids: []uint64{9}},
		{path: "/offload/flows?conn=7", code: 200, ids: []uint64{7}},
		{path: "/offload/flows?conn=7&pod=a/y", code: 200, ids: []uint64{}},
		{path: "/offload/flows?conn=x", code: 400, body: `conn "x": want a connection id`},
	} {
		code, body := get(t, h, tt.path)
		if code != tt.code {
			t.Errorf("GET %s: %d %q, want %d", tt.path, code, body, tt.code)
			continue
		}
		if tt.ids == nil {
			if !strings.Contains(body, tt.body) {
				t.Errorf("GET %s: %q, want it to contain %q", tt.path, body, tt.body)
			}
			continue
		}
		var flows []OffloadFlow
		if err := json.Unmarshal([]byte(body), &flows); err != nil {
			t.Fatalf("GET %s: %v\n%s", tt.path, err, body)
		}
		ids := []uint64{}
		for _, f := range flows {
			ids = append(ids, f.ConnID)
		}
		if diff := cmp.Diff(tt.ids, ids); diff != "" {
			t.Errorf("GET %s: connection ids (-want +got):\n%s", tt.path, diff)
		}
	}
	_, body := get(t, h, "/offload/flows?conn=9")
	for _, field := range []string{`"connID": 9`, `"state": "revoked"`, `"firstDropMs": 1.5`, `"dropped": 3`} {
		if !strings.Contains(body, field) {
			t.Errorf("/offload/flows?conn=9: no %s in\n%s", field, body)
		}
	}
	src.flowsErr = errors.New("list flows: boom")
	if code, body := get(t, h, "/offload/flows"); code != 500 || !strings.Contains(body, "boom") {
		t.Errorf("/offload/flows error: %d %q", code, body)
	}
}
