package live

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseText(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       Samples
		wantErr    string
	}{{
		name: "counter gauge histogram summary",
		text: `# TYPE istio_requests_total counter
istio_requests_total{reporter="destination",response_code="200"} 7
# TYPE fibmesh_agent_fib_flows gauge
fibmesh_agent_fib_flows 3
# TYPE istio_request_duration_milliseconds histogram
istio_request_duration_milliseconds_bucket{reporter="destination",le="5"} 4
istio_request_duration_milliseconds_bucket{reporter="destination",le="10"} 6
istio_request_duration_milliseconds_bucket{reporter="destination",le="+Inf"} 7
istio_request_duration_milliseconds_sum{reporter="destination"} 40
istio_request_duration_milliseconds_count{reporter="destination"} 7
# TYPE rpc summary
rpc{quantile="0.5"} 1.5
rpc_sum 9
rpc_count 3
untyped_thing 2
`,
		want: Samples{
			"istio_requests_total":    {{map[string]string{"reporter": "destination", "response_code": "200"}, 7}},
			"fibmesh_agent_fib_flows": {{map[string]string{}, 3}},
			"istio_request_duration_milliseconds_bucket": {
				{map[string]string{"reporter": "destination", "le": "5"}, 4},
				{map[string]string{"reporter": "destination", "le": "10"}, 6},
				{map[string]string{"reporter": "destination", "le": "+Inf"}, 7},
			},
			"istio_request_duration_milliseconds_sum":   {{map[string]string{"reporter": "destination"}, 40}},
			"istio_request_duration_milliseconds_count": {{map[string]string{"reporter": "destination"}, 7}},
			"rpc":           {{map[string]string{"quantile": "0.5"}, 1.5}},
			"rpc_sum":       {{map[string]string{}, 9}},
			"rpc_count":     {{map[string]string{}, 3}},
			"untyped_thing": {{map[string]string{}, 2}},
		},
	}, {
		name:    "garbage",
		text:    "istio_requests_total{reporter=\"x\" 7\n",
		wantErr: "line 1",
	}, {
		name: "empty",
		text: "",
		want: Samples{},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseText(strings.NewReader(tc.text))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("-want +got:\n%s", d)
			}
		})
	}
}

func s(v float64, kv ...string) Sample {
	l := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		l[kv[i]] = kv[i+1]
	}
	return Sample{l, v}
}

func TestIncrease(t *testing.T) {
	for _, tc := range []struct {
		name            string
		prev, cur, want []Sample
	}{
		{"grew", []Sample{s(10, "a", "1")}, []Sample{s(15, "a", "1")}, []Sample{s(5, "a", "1")}},
		{"flat", []Sample{s(10, "a", "1")}, []Sample{s(10, "a", "1")}, []Sample{s(0, "a", "1")}},
		{"reset counts from zero", []Sample{s(10, "a", "1")}, []Sample{s(3, "a", "1")}, []Sample{s(3, "a", "1")}},
		{"new series counts from zero", nil, []Sample{s(4, "a", "2")}, []Sample{s(4, "a", "2")}},
		{"labels matched whatever their order", []Sample{s(1, "a", "1", "b", "2"), s(7, "a", "2", "b", "1")},
			[]Sample{s(9, "a", "2", "b", "1"), s(2, "a", "1", "b", "2")}, []Sample{s(2, "a", "2", "b", "1"), s(1, "a", "1", "b", "2")}},
		{"gone series dropped", []Sample{s(1, "a", "1")}, []Sample{}, []Sample{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, Increase(tc.prev, tc.cur)); d != "" {
				t.Errorf("-want +got:\n%s", d)
			}
		})
	}
}

func TestQuantile(t *testing.T) {
	inf := math.Inf(+1)
	for _, tc := range []struct {
		name    string
		q       float64
		buckets []Bucket
		want    float64 // NaN: none
	}{
		{"within the first bucket, from 0", 0.5, []Bucket{{10, 10}, {inf, 10}}, 5},
		{"interpolated in the second", 0.99, []Bucket{{1, 0}, {5, 50}, {10, 100}, {inf, 100}}, 9.9},
		{"median on a bound", 0.5, []Bucket{{1, 50}, {5, 100}, {inf, 100}}, 1},
		{"in +Inf: the highest finite bound", 0.99, []Bucket{{1, 10}, {5, 20}, {inf, 100}}, 5},
		{"no observations", 0.99, []Bucket{{1, 0}, {inf, 0}}, math.NaN()},
		{"no +Inf bucket", 0.5, []Bucket{{1, 3}, {5, 6}}, math.NaN()},
		{"no buckets", 0.5, nil, math.NaN()},
		{"q out of range", 1.5, []Bucket{{1, 3}, {inf, 6}}, math.NaN()},
		{"non-monotonic sums are made monotonic", 0.5, []Bucket{{1, 5}, {2, 4}, {4, 10}, {inf, 10}}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Quantile(tc.q, tc.buckets)
			if math.IsNaN(tc.want) != math.IsNaN(got) || !math.IsNaN(got) && math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("Quantile(%v) = %v, want %v", tc.q, got, tc.want)
			}
		})
	}
}

func TestBuckets(t *testing.T) {
	got, err := Buckets([]Sample{s(3, "le", "10"), s(1, "le", "5"), s(4, "le", "+Inf"), s(2, "le", "5"), s(6, "le", "+Inf"), s(5, "le", "10")})
	if err != nil {
		t.Fatal(err)
	}
	want := []Bucket{{5, 3}, {10, 8}, {math.Inf(+1), 10}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("-want +got:\n%s", d)
	}
	if _, err := Buckets([]Sample{s(1, "x", "y")}); err == nil || !strings.Contains(err.Error(), "without an le") {
		t.Errorf("no le: err %v", err)
	}
	if _, err := Buckets([]Sample{s(1, "le", "ten")}); err == nil || !strings.Contains(err.Error(), `le "ten"`) {
		t.Errorf("bad le: err %v", err)
	}
}

// FuzzParseText feeds exposition text (what an agent, or anything
// answering on its port, serves) through everything the page computes
// from a scrape: nothing may panic, and the snapshot must encode.
func FuzzParseText(f *testing.F) {
	f.Add(agentText(1), agentText(2))
	f.Add("a_total NaN\nb +Inf\n", "a_total 1\n")
	f.Add("# TYPE istio_request_duration_milliseconds histogram\nistio_request_duration_milliseconds_bucket{reporter=\"source\",le=\"+Inf\"} 1\n", "")
	f.Fuzz(func(t *testing.T, a, b string) {
		prev, err1 := ParseText(strings.NewReader(a))
		cur, err2 := ParseText(strings.NewReader(b))
		if err1 != nil || err2 != nil {
			return
		}
		w := agentWindow{cur: cur, inc: Samples{}, dt: 2}
		for name, c := range cur {
			w.inc[name] = Increase(prev[name], c)
		}
		var v NodeView
		fillNode(&v, w)
		g := buildGraph(demoModel(), []agentWindow{w, {cur: prev}})
		cp := controlPlane(cur, w.inc[metricConvBucket], time.Minute, nil)
		if _, err := json.Marshal(Snapshot{Graph: g, Nodes: []NodeView{v}, ControlPlane: cp}); err != nil {
			t.Fatalf("snapshot does not encode: %v", err)
		}
	})
}
