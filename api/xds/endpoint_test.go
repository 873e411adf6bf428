package xds

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestEndpointWorkloadOf(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ns     string
		pod    string
		labels map[string]string
		want   EndpointWorkload
		enc    string
	}{
		{"deployment pod, app and version", "prod", "reviews-v1-5d8f9c7b4-x7k2p",
			map[string]string{"app": "reviews", "version": "v1", "pod-template-hash": "5d8f9c7b4"},
			EndpointWorkload{Name: "reviews-v1", Namespace: "prod", CanonicalService: "reviews", CanonicalRevision: "v1", App: "reviews", Version: "v1"},
			"reviews-v1;prod;reviews;v1;"},
		{"no labels", "prod", "db-0", nil,
			EndpointWorkload{Name: "db-0", Namespace: "prod", CanonicalService: "db-0", CanonicalRevision: "latest"},
			"db-0;prod;db-0;latest;;;"},
		{"canonical labels differ from app", "prod", "web",
			map[string]string{"app.kubernetes.io/name": "web", "app": "ignored", "service.istio.io/canonical-name": "frontend",
				"service.istio.io/canonical-revision": "r7", "app.kubernetes.io/version": "1.2"},
			EndpointWorkload{Name: "web", Namespace: "prod", CanonicalService: "frontend", CanonicalRevision: "r7", App: "web", Version: "1.2"},
			"web;prod;frontend;r7;;web;1.2"},
		{"workload-name label", "ns", "x-abcde", map[string]string{"service.istio.io/workload-name": "named"},
			EndpointWorkload{Name: "named", Namespace: "ns", CanonicalService: "named", CanonicalRevision: "latest"},
			"named;ns;named;latest;;;"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := EndpointWorkloadOf(tc.ns, tc.pod, tc.labels)
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Fatalf("EndpointWorkloadOf (-want +got):\n%s", d)
			}
			if enc := got.Encode(); enc != tc.enc {
				t.Fatalf("Encode = %q; want %q", enc, tc.enc)
			}
			back, err := ParseEndpointWorkload(got.Encode())
			if err != nil {
				t.Fatalf("ParseEndpointWorkload(%q): %v", got.Encode(), err)
			}
			if d := cmp.Diff(got, back); d != "" {
				t.Fatalf("round trip (-encoded +parsed):\n%s", d)
			}
		})
	}
}

func TestParseEndpointWorkload(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    EndpointWorkload
		wantErr string
	}{
		// Istio's own value: five fields, the cluster set.
		{in: "reviews-v1;prod;reviews;v1;Kubernetes", want: EndpointWorkload{Name: "reviews-v1", Namespace: "prod",
			CanonicalService: "reviews", CanonicalRevision: "v1", Cluster: "Kubernetes", App: "reviews", Version: "v1"}},
		{in: "w;ns;;;;;", want: EndpointWorkload{Name: "w", Namespace: "ns"}},
		{in: "", wantErr: "1 fields"},
		{in: "w;ns;a;b", wantErr: "4 fields"},
		{in: "w;ns;a;b;c;d", wantErr: "6 fields"},
		{in: "w;ns;a;b;c;d;e;f", wantErr: "more than 7 fields"},
		{in: ";ns;a;b;c", wantErr: "empty name"},
		{in: "w;;a;b;c", wantErr: "empty namespace"},
		{in: "w;ns;a b;b;c", wantErr: `canonical service "a b": byte 1`},
		{in: "w;ns;a;b;c;app=x;v", wantErr: `app "app=x"`},
		{in: "w;ns;a;b;c;d;\xff", wantErr: "version"},
		{in: strings.Repeat("a", 254) + ";ns;a;b;c", wantErr: "name"},
		{in: strings.Repeat("a;", MaxEndpointWorkload), wantErr: "bytes: at most 1777"},
	} {
		got, err := ParseEndpointWorkload(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseEndpointWorkload(%.40q) = %v, %v; want error with %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseEndpointWorkload(%q): %v", tc.in, err)
			continue
		}
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("ParseEndpointWorkload(%q) (-want +got):\n%s", tc.in, d)
		}
	}
}

func TestEndpointWorkloadValid(t *testing.T) {
	if err := (EndpointWorkload{Name: "w", Namespace: "ns"}).Valid(); err != nil {
		t.Errorf("valid workload: %v", err)
	}
	if err := (EndpointWorkload{Name: "w", Namespace: "ns", App: "has;semicolon"}).Valid(); err == nil {
		t.Error("an app with ';' is valid; want an error")
	}
}

// FuzzParseEndpointWorkload: whatever it accepts encodes back to a value
// it reads the same, and no field holds a byte a metric label or the
// encoding cannot carry.
func FuzzParseEndpointWorkload(f *testing.F) {
	for _, s := range []string{"reviews-v1;prod;reviews;v1;Kubernetes", "w;ns;;;;;", "w;ns;a;b;c;d;e", ";;;;", "a;b;c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		w, err := ParseEndpointWorkload(s)
		if err != nil {
			return
		}
		for _, v := range []string{w.Name, w.Namespace, w.CanonicalService, w.CanonicalRevision, w.Cluster, w.App, w.Version} {
			if checkField(v) != nil {
				t.Fatalf("%q: field %q accepted", s, v)
			}
		}
		back, err := ParseEndpointWorkload(w.Encode())
		if err != nil || back != w {
			t.Fatalf("%q: re-encoded %q reads %v, %v", s, w.Encode(), back, err)
		}
	})
}
