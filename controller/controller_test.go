package controller

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fibmesh/fibmesh/controller/analyze"
	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/controller/store/file"
)

const goodService = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: production}\nspec: {ports: [{name: http, port: 9080}]}\n"

// run starts a Controller on a file store over dir and returns a channel
// of its events.
func run(t *testing.T, dir string) (*Controller, <-chan Event) {
	t.Helper()
	events := make(chan Event, 16)
	c := New(model.Options{}, func(ev Event) { events <- ev })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, file.New(dir, file.Options{Debounce: 20 * time.Millisecond})) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return c, events
}

func next(t *testing.T, events <-chan Event) Event {
	t.Helper()
	select {
	case ev := <-events:
		return ev
	case <-time.After(20 * time.Second):
		t.Fatal("no controller event within 20s")
	}
	return Event{}
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec.Code, rec.Body.String()
}

func TestBrokenEditKeepsLastGoodInput(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "mesh.yaml"), []byte(goodService), 0o644); err != nil {
		t.Fatal(err)
	}
	c, events := run(t, dir)
	h := c.Handler()
	if code, _ := get(t, h, "/readyz"); code != http.StatusOK {
		// The first event may not have arrived yet: wait for it.
		next(t, events)
	}
	if code, body := get(t, h, "/debug/resources"); code != http.StatusOK || !strings.Contains(body, `"name":"reviews"`) {
		t.Fatalf("/debug/resources = %d %s", code, body)
	}

	// A broken edit: rejected, the last good input stays, and the
	// decode error is served as IST0106 naming file, document and field.
	bad := goodService + "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: production}\nspec: {hosts: [reviews], http: [{route: [{destination: {host: reviews}, wieght: 100}]}]}\n"
	if err := os.WriteFile(filepath.Join(dir, "mesh.yaml"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	ev := next(t, events)
	for ev.Rejected == nil {
		ev = next(t, events)
	}
	if ev.Version != 1 || ev.Resources != 1 {
		t.Errorf("after a rejected edit: version %d, %d resources; want 1, 1", ev.Version, ev.Resources)
	}
	_, body := get(t, h, "/debug/analyze")
	var fs []analyze.Finding
	if err := json.Unmarshal([]byte(body), &fs); err != nil {
		t.Fatalf("/debug/analyze: %v: %s", err, body)
	}
	if len(fs) == 0 || fs[0].Code != "IST0106" || !strings.Contains(fs[0].Message, "spec.http[0].route[0].wieght") || !strings.Contains(fs[0].Message, "mesh.yaml (document 2)") {
		t.Errorf("findings after a broken edit: %+v", fs)
	}
	if _, body := get(t, h, "/debug/status"); !strings.Contains(body, `"rejected":`) {
		t.Errorf("/debug/status does not say the input was rejected: %s", body)
	}

	// Fixing it makes a new version.
	good := strings.Replace(bad, "wieght", "weight", 1)
	if err := os.WriteFile(filepath.Join(dir, "mesh.yaml"), []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	ev = next(t, events)
	for ev.Rejected != nil {
		ev = next(t, events)
	}
	if ev.Version != 2 || ev.Resources != 2 || ev.Errors != 0 || ev.Change == nil {
		t.Errorf("after the fix: %+v; want version 2, 2 resources, no errors, a change", ev)
	}
	if code, body := get(t, h, "/debug/model"); code != http.StatusOK || !strings.Contains(body, `"hostname": "reviews.production.svc.cluster.local"`) || !strings.Contains(body, `"version": 2`) {
		t.Errorf("/debug/model = %d %s", code, body)
	}
}

func TestNotReadyBeforeInput(t *testing.T) {
	c := New(model.Options{}, nil)
	h := c.Handler()
	if code, _ := get(t, h, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d before any input; want 503", code)
	}
	if code, _ := get(t, h, "/debug/resources"); code != http.StatusServiceUnavailable {
		t.Errorf("/debug/resources = %d before any input; want 503", code)
	}
	if code, _ := get(t, h, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d; want 200", code)
	}
	if code, _ := get(t, h, "/debug/analyze?o=xml"); code != http.StatusBadRequest {
		t.Errorf("/debug/analyze?o=xml = %d; want 400", code)
	}
}
