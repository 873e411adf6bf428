package dashboards

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// wantDashboards are the dashboards the issue asks for, by file.
var wantDashboards = map[string]string{
	"mesh.json":          "fibmesh-mesh",
	"workload.json":      "fibmesh-workload",
	"node.json":          "fibmesh-node",
	"control-plane.json": "fibmesh-control-plane",
}

// builtins are Grafana's variables a query may use without defining
// them.
var builtins = []string{"__rate_interval", "__interval", "__range"}

func TestDashboards(t *testing.T) {
	ds, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	uids := map[string]string{}
	for _, d := range ds {
		got[d.File] = d.UID
		if other, ok := uids[d.UID]; ok {
			t.Errorf("%s and %s share uid %q", d.File, other, d.UID)
		}
		uids[d.UID] = d.File
	}
	if diff := cmp.Diff(wantDashboards, got); diff != "" {
		t.Errorf("dashboards (-want +got):\n%s", diff)
	}
	for _, d := range ds {
		t.Run(d.File, func(t *testing.T) {
			if d.Title == "" {
				t.Error("no title")
			}
			dsVar, ok := d.Variable("datasource")
			if !ok || dsVar.Type != "datasource" || dsVar.Query != "prometheus" {
				t.Errorf("want a datasource variable named datasource of type prometheus, got %+v", dsVar)
			}
			ids := map[int]string{}
			queries := 0
			for _, p := range d.AllPanels() {
				if p.ID <= 0 {
					t.Errorf("panel %q: id %d, want > 0", p.Title, p.ID)
				}
				if other, ok := ids[p.ID]; ok {
					t.Errorf("panels %q and %q share id %d", p.Title, other, p.ID)
				}
				ids[p.ID] = p.Title
				if p.Type == "row" {
					continue
				}
				if p.Title == "" {
					t.Errorf("panel %d has no title", p.ID)
				}
				if len(p.Targets) == 0 {
					t.Errorf("panel %q has no query", p.Title)
				}
				if p.Datasource.UID != "${datasource}" {
					t.Errorf("panel %q: datasource uid %q, want ${datasource}", p.Title, p.Datasource.UID)
				}
				refs := map[string]bool{}
				for _, tg := range p.Targets {
					queries++
					if refs[tg.RefID] {
						t.Errorf("panel %q: refId %s twice", p.Title, tg.RefID)
					}
					refs[tg.RefID] = true
					if tg.Datasource.UID != "${datasource}" {
						t.Errorf("panel %q %s: datasource uid %q, want ${datasource}", p.Title, tg.RefID, tg.Datasource.UID)
					}
					if strings.TrimSpace(tg.Expr) == "" {
						t.Errorf("panel %q %s: empty expr", p.Title, tg.RefID)
					}
					if len(MetricNames(tg.Expr)) == 0 {
						t.Errorf("panel %q %s: %q reads no metric", p.Title, tg.RefID, tg.Expr)
					}
					for _, v := range Variables(tg.Expr) {
						if _, ok := d.Variable(v); !ok && !slices.Contains(builtins, v) {
							t.Errorf("panel %q %s: variable $%s is not defined in the dashboard", p.Title, tg.RefID, v)
						}
					}
					if strings.Count(tg.Expr, "(") != strings.Count(tg.Expr, ")") {
						t.Errorf("panel %q %s: unbalanced parentheses in %q", p.Title, tg.RefID, tg.Expr)
					}
				}
			}
			if queries == 0 {
				t.Error("no queries")
			}
			for _, v := range d.Templating.List {
				if v.Type != "query" {
					continue
				}
				sel, _, err := v.LabelValues()
				if err != nil {
					t.Error(err)
					continue
				}
				if len(MetricNames(sel)) == 0 {
					t.Errorf("variable %s: selector %q names no metric", v.Name, sel)
				}
				if !v.Multi || !v.IncludeAll || v.AllValue != ".*" {
					t.Errorf("variable %s: want multi-value with All (.*), got multi=%v includeAll=%v allValue=%q", v.Name, v.Multi, v.IncludeAll, v.AllValue)
				}
			}
		})
	}
}

// TestIstioCompatible checks that the mesh and workload dashboards read
// Istio's standard metrics only, so they work on an Istio mesh too.
func TestIstioCompatible(t *testing.T) {
	ds, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.File != "mesh.json" && d.File != "workload.json" {
			continue
		}
		for _, q := range d.Queries() {
			for _, m := range MetricNames(q.Expr) {
				if !strings.HasPrefix(m, "istio_") {
					t.Errorf("%s: metric %s is not one of Istio's", q.Name(), m)
				}
			}
		}
	}
}

func TestMetricNames(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`up`, []string{"up"}},
		{`sum(rate(istio_requests_total{reporter="source", response_code!~"5.*"}[$__rate_interval]))`, []string{"istio_requests_total"}},
		{`sum by (destination_workload, le) (rate(a_bucket{x="{y}"}[1m])) / sum without (instance) (b)`, []string{"a_bucket", "b"}},
		{`histogram_quantile(0.99, sum(rate(h_bucket[5m])) by (le))`, []string{"h_bucket"}},
		{`a / on (job) group_left (node) b unless c offset 5m`, []string{"a", "b", "c"}},
		{`count(x{state="nack"}) or vector(0)`, []string{"x"}},
		{`round(sum(rate(m:rec[1m])), 0.001) > 1e3`, []string{"m:rec"}},
		{`max(y) by (instance) * 2`, []string{"y"}},
		{`{__name__="z"}`, []string{"z"}},
		{`{__name__=~"istio_requests_total|istio_tcp_received_bytes_total", ns=~"$namespace"}`, []string{"istio_requests_total", "istio_tcp_received_bytes_total"}},
		{`{__name__=~"istio_.*"}`, nil}, // a pattern names no metric
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, MetricNames(tt.expr)); diff != "" {
			t.Errorf("MetricNames(%q) (-want +got):\n%s", tt.expr, diff)
		}
	}
}

func TestExpand(t *testing.T) {
	vals := map[string]string{"namespace": "production", "__rate_interval": "30s", "workload": "(a|b)"}
	tests := []struct {
		expr, want, wantErr string
	}{
		{`rate(x{ns=~"$namespace"}[$__rate_interval])`, `rate(x{ns=~"production"}[30s])`, ""},
		{`x{w=~"${workload}", ns="${namespace:raw}"}`, `x{w=~"(a|b)", ns="production"}`, ""},
		{`x{n=~"$node"}`, "", "$node"},
	}
	for _, tt := range tests {
		got, err := Expand(tt.expr, vals)
		switch {
		case tt.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(tt.wantErr, "$")) {
				t.Errorf("Expand(%q) error %v, want one naming %s", tt.expr, err, tt.wantErr)
			}
		case err != nil:
			t.Errorf("Expand(%q): %v", tt.expr, err)
		case got != tt.want:
			t.Errorf("Expand(%q) = %q, want %q", tt.expr, got, tt.want)
		}
	}
}

func TestLabelValues(t *testing.T) {
	tests := []struct {
		def, sel, label string
		bad             bool
	}{
		{`label_values(istio_requests_total, destination_workload_namespace)`, "istio_requests_total", "destination_workload_namespace", false},
		{`label_values({__name__=~"a|b", n=~"$namespace"}, w)`, `{__name__=~"a|b", n=~"$namespace"}`, "w", false},
		{`label_values(x{a=~"$b", c="d,e"}, f)`, `x{a=~"$b", c="d,e"}`, "f", false},
		{`query_result(up)`, "", "", true},
	}
	for _, tt := range tests {
		sel, label, err := Variable{Name: "v", Definition: tt.def}.LabelValues()
		if (err != nil) != tt.bad || sel != tt.sel || label != tt.label {
			t.Errorf("LabelValues(%q) = %q, %q, %v; want %q, %q, bad=%v", tt.def, sel, label, err, tt.sel, tt.label, tt.bad)
		}
	}
}

// TestFilesAreGrafanaJSON checks that every file is a JSON object with
// Grafana's top-level fields, so an import does not fail on them.
func TestFilesAreGrafanaJSON(t *testing.T) {
	names, _ := files.ReadDir(".")
	for _, e := range names {
		b, err := files.ReadFile(e.Name())
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Errorf("%s: %v", e.Name(), err)
			continue
		}
		for _, k := range []string{"uid", "title", "panels", "templating", "schemaVersion", "time"} {
			if _, ok := m[k]; !ok {
				t.Errorf("%s: no %q field", e.Name(), k)
			}
		}
	}
}
