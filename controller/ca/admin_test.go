package ca

import (
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestAdminHandler(t *testing.T) {
	c, err := LoadOrCreate(t.TempDir(), "cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	var changes int
	defer c.OnBundleChange(func([]*x509.Certificate) { changes++ })()
	h := c.AdminHandler()
	do := func(method, path, remote string) (int, []RootInfo) {
		req := httptest.NewRequest(method, path, nil)
		req.RemoteAddr = remote
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var roots []RootInfo
		if rec.Code == http.StatusOK {
			if err := json.Unmarshal(rec.Body.Bytes(), &roots); err != nil {
				t.Fatalf("%s %s: %v: %s", method, path, err, rec.Body)
			}
		}
		return rec.Code, roots
	}
	if code, _ := do("POST", "/debug/ca/rotate", "10.1.2.3:5555"); code != http.StatusForbidden {
		t.Fatalf("rotate from a non-loopback address: %d, want 403", code)
	}
	_, before := do("GET", "/debug/ca/roots", "127.0.0.1:5555")
	if len(before) != 1 || !before[0].Signing {
		t.Fatalf("roots before: %+v", before)
	}
	code, after := do("POST", "/debug/ca/rotate", "127.0.0.1:5555")
	if code != http.StatusOK || len(after) != 2 || after[0].Signing == after[1].Signing {
		t.Fatalf("after rotate: %d %+v", code, after)
	}
	old := before[0].SHA256
	for _, r := range after {
		if r.SHA256 == old && r.Signing {
			t.Errorf("the old root still signs after rotate")
		}
	}
	code, retired := do("POST", "/debug/ca/retire", "[::1]:5555")
	if code != http.StatusOK || len(retired) != 1 || retired[0].SHA256 == old || !retired[0].Signing {
		t.Fatalf("after retire: %d %+v", code, retired)
	}
	if code, _ := do("POST", "/debug/ca/reload", "127.0.0.1:1"); code != http.StatusInternalServerError {
		t.Errorf("reload of a directory CA: %d, want 500 with the reason", code)
	}
	if changes != 2 {
		t.Errorf("bundle changes notified: %d, want 2 (rotate, retire)", changes)
	}
}
