// Package dashboards holds fibmesh's Grafana dashboards (the JSON files
// beside this file: mesh, workload, node fast path, control plane) and
// reads them back for tests: their panels, their queries with Grafana's
// template variables expanded, and the metric names each query reads.
//
// The mesh and workload dashboards use Istio's standard metrics
// (istio_requests_total, istio_request_duration_milliseconds,
// istio_request_bytes, istio_response_bytes, istio_tcp_*) with Istio's
// labels, so the same queries work on an Istio mesh; the node and control
// plane dashboards use fibmesh_agent_*, fibmesh_xds_* and fibmesh_ca_*.
// docs/telemetry.md ("Dashboards") says how to import them.
package dashboards

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"sort"
	"strings"
)

//go:embed *.json
var files embed.FS

// Dashboard is the part of a Grafana dashboard's JSON model the tests
// read. File is the name of the file it came from.
type Dashboard struct {
	File       string     `json:"-"`
	UID        string     `json:"uid"`
	Title      string     `json:"title"`
	Templating Templating `json:"templating"`
	Panels     []Panel    `json:"panels"`
}

// Templating holds a dashboard's template variables.
type Templating struct {
	List []Variable `json:"list"`
}

// Variable is a template variable: a data source variable (Type
// "datasource") or a query variable whose Definition is Grafana's
// label_values(SELECTOR, LABEL).
type Variable struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Query      any    `json:"query"`
	Definition string `json:"definition"`
	Multi      bool   `json:"multi"`
	IncludeAll bool   `json:"includeAll"`
	AllValue   string `json:"allValue"`
}

// Panel is one panel; rows (Type "row") have no targets and may nest
// collapsed panels.
type Panel struct {
	ID         int        `json:"id"`
	Type       string     `json:"type"`
	Title      string     `json:"title"`
	Datasource Datasource `json:"datasource"`
	Targets    []Target   `json:"targets"`
	Panels     []Panel    `json:"panels"`
}

// Datasource refers to a data source by uid (here always the
// ${datasource} variable).
type Datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// Target is one query of a panel.
type Target struct {
	RefID      string     `json:"refId"`
	Expr       string     `json:"expr"`
	Datasource Datasource `json:"datasource"`
}

// Query is one panel query of a dashboard, named for messages.
type Query struct {
	Dashboard, Panel, RefID string
	PanelID                 int
	Expr                    string
}

// Name is "file / panel title (id) / refId".
func (q Query) Name() string {
	return fmt.Sprintf("%s / %s (%d) / %s", q.Dashboard, q.Panel, q.PanelID, q.RefID)
}

// Load parses every dashboard of the package, sorted by file name.
func Load() ([]Dashboard, error) {
	names, err := fs.Glob(files, "*.json")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out []Dashboard
	for _, n := range names {
		b, err := files.ReadFile(n)
		if err != nil {
			return nil, err
		}
		d, err := Parse(n, b)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// Parse decodes one dashboard's JSON; name names it in errors.
func Parse(name string, b []byte) (Dashboard, error) {
	var d Dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		return d, fmt.Errorf("dashboard %s: %w", name, err)
	}
	d.File = name
	return d, nil
}

// AllPanels returns every panel, those nested in rows included, rows
// themselves included.
func (d Dashboard) AllPanels() []Panel {
	var out []Panel
	var walk func([]Panel)
	walk = func(ps []Panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// Queries returns every panel query of d, in panel order.
func (d Dashboard) Queries() []Query {
	var out []Query
	for _, p := range d.AllPanels() {
		for _, t := range p.Targets {
			out = append(out, Query{Dashboard: d.File, Panel: p.Title, PanelID: p.ID, RefID: t.RefID, Expr: t.Expr})
		}
	}
	return out
}

// Variable returns d's template variable name.
func (d Dashboard) Variable(name string) (Variable, bool) {
	for _, v := range d.Templating.List {
		if v.Name == name {
			return v, true
		}
	}
	return Variable{}, false
}

var labelValuesRE = regexp.MustCompile(`^\s*label_values\(\s*(.*?)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)

// LabelValues splits a query variable's label_values(SELECTOR, LABEL)
// definition into the series selector and the label.
func (v Variable) LabelValues() (selector, label string, err error) {
	m := labelValuesRE.FindStringSubmatch(v.Definition)
	if m == nil {
		return "", "", fmt.Errorf("variable %s: definition %q: want label_values(SELECTOR, LABEL)", v.Name, v.Definition)
	}
	return m[1], m[2], nil
}

// varRE matches Grafana's variable forms $name, ${name} and
// ${name:format}.
var varRE = regexp.MustCompile(`\$\{([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-z]+)?\}|\$([a-zA-Z_][a-zA-Z0-9_]*)`)

// Variables returns the names of the variables expr uses, Grafana's
// built-ins ($__rate_interval, $__range...) included, sorted.
func Variables(expr string) []string {
	var out []string
	for _, m := range varRE.FindAllStringSubmatch(expr, -1) {
		n := m[1] + m[2]
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// Expand replaces the variables of expr with vals (name → value, without
// the $); it fails on a variable vals lacks.
func Expand(expr string, vals map[string]string) (string, error) {
	var missing []string
	out := varRE.ReplaceAllStringFunc(expr, func(s string) string {
		m := varRE.FindStringSubmatch(s)
		n := m[1] + m[2]
		v, ok := vals[n]
		if !ok {
			missing = append(missing, n)
			return s
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("query %q: no value for variable(s) %v", expr, missing)
	}
	return out, nil
}

// promqlWords are PromQL's keywords and aggregation operators: names
// that are not metrics where they stand.
var promqlWords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"bool": true, "and": true, "or": true, "unless": true, "offset": true, "atan2": true,
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"inf": true, "nan": true,
}

var (
	nameMatcherRE = regexp.MustCompile(`__name__\s*=~?\s*"([^"]*)"`)
	metricNameRE  = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
)

// MetricNames returns the metric names expr reads (sorted, unique): the
// identifiers that are not functions, keywords, label names (inside {}
// or after by/without/on/ignoring/group_left/group_right), strings,
// numbers or durations, and the names a __name__ matcher lists
// ({__name__=~"a|b"}: a and b). It knows PromQL's lexical forms, not its whole
// grammar, which is all the dashboards' queries need.
func MetricNames(expr string) []string {
	var out []string
	isIdent := func(c byte, first bool) bool {
		return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (!first && c >= '0' && c <= '9')
	}
	skipSpace := func(i int) int {
		for i < len(expr) && (expr[i] == ' ' || expr[i] == '\t' || expr[i] == '\n') {
			i++
		}
		return i
	}
	labelList := false // the next (...) holds label names
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for j < len(expr) && expr[j] != c {
				if expr[j] == '\\' && c != '`' {
					j++
				}
				j++
			}
			i = j + 1
		case c == '{':
			// A selector's matchers: skip to the closing brace (strings
			// hold no braces that matter: skip them too), taking the
			// names a __name__ matcher lists (__name__=~"a|b").
			j := i + 1
			for j < len(expr) && expr[j] != '}' {
				if q := expr[j]; q == '"' || q == '\'' || q == '`' {
					j++
					for j < len(expr) && expr[j] != q {
						if expr[j] == '\\' && q != '`' {
							j++
						}
						j++
					}
				}
				j++
			}
			for _, m := range nameMatcherRE.FindAllStringSubmatch(expr[i:min(j+1, len(expr))], -1) {
				for _, n := range strings.Split(m[1], "|") {
					if metricNameRE.MatchString(n) && !slices.Contains(out, n) {
						out = append(out, n)
					}
				}
			}
			i = j + 1
		case c == '[':
			j := strings.IndexByte(expr[i:], ']')
			if j < 0 {
				return out
			}
			i += j + 1
		case c == '(' && labelList:
			j := strings.IndexByte(expr[i:], ')')
			if j < 0 {
				return out
			}
			i += j + 1
			labelList = false
		case c >= '0' && c <= '9' || c == '.':
			j := i
			for j < len(expr) && (isIdent(expr[j], false) || expr[j] == '.') {
				j++ // 0.99, 1e3, 0x1f
			}
			i = j
		case isIdent(c, true):
			j := i
			for j < len(expr) && isIdent(expr[j], false) {
				j++
			}
			word := expr[i:j]
			next := skipSpace(j)
			switch {
			case word == "by" || word == "without" || word == "on" || word == "ignoring" || word == "group_left" || word == "group_right":
				labelList = true
			case promqlWords[strings.ToLower(word)]:
			case next < len(expr) && expr[next] == '(':
				// a function call
			default:
				if !slices.Contains(out, word) {
					out = append(out, word)
				}
			}
			i = j
		default:
			if c != ' ' && c != '\t' && c != '\n' && c != '(' {
				labelList = labelList && c == ' '
			}
			i++
		}
	}
	sort.Strings(out)
	return out
}
