package l4bench

import (
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// iperfOK is the end of a real "iperf3 --client 127.0.0.1 --time 1
// --json" report (iperf 3.12), trimmed to the parts read and a few
// beside them.
const iperfOK = `{
	"start": {"connected": [{"socket": 5, "local_host": "127.0.0.1", "local_port": 40000, "remote_host": "127.0.0.1", "remote_port": 5299}], "version": "iperf 3.12"},
	"intervals": [],
	"end": {
		"streams": [],
		"sum_sent": {"start": 0, "end": 1.001382, "seconds": 1.001382, "bytes": 1536163840, "bits_per_second": 12272350331.841394, "retransmits": 2, "sender": true},
		"sum_received": {"start": 0, "end": 1.004662, "seconds": 1.004662, "bytes": 1535377408, "bits_per_second": 12226021551.526783, "sender": true},
		"cpu_utilization_percent": {"host_total": 60.1}
	}
}`

func TestParseIperf3(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    Stream
		wantErr string
	}{
		{name: "ok", in: iperfOK, want: Stream{Bytes: 1535377408, Seconds: 1.004662, Retransmits: 2}},
		{name: "refused", in: `{"start": {"connected": []}, "intervals": [], "end": {}, "error": "unable to connect to server: Connection refused"}`,
			wantErr: "iperf3: unable to connect to server: Connection refused"},
		{name: "nothing received", in: `{"end": {"sum_received": {"bytes": 0, "seconds": 3}}}`, wantErr: "no bytes received"},
		{name: "no end", in: `{"start": {}}`, wantErr: "no bytes received"},
		{name: "not JSON", in: "iperf3: error - unable to connect", wantErr: "iperf3's JSON report"},
		{name: "empty", in: "", wantErr: "iperf3's JSON report"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseIperf3([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestStreamGbps(t *testing.T) {
	for _, tc := range []struct {
		s    Stream
		want float64
	}{
		{Stream{Bytes: 1_250_000_000, Seconds: 1}, 10},
		{Stream{Bytes: 1_250_000_000, Seconds: 5}, 2},
		{Stream{Bytes: 100, Seconds: 0}, 0},
	} {
		if got := tc.s.Gbps(); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%+v.Gbps() = %v, want %v", tc.s, got, tc.want)
		}
	}
}

func TestParseCPS(t *testing.T) {
	got, err := ParseCPS([]byte(`{"conns":990,"errors":10,"seconds":2,"firstError":"dial tcp: i/o timeout"}` + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := CPSResult{Conns: 990, Errors: 10, Seconds: 2, FirstError: "dial tcp: i/o timeout"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if got.Rate() != 495 || got.ErrorRate() != 0.01 {
		t.Errorf("Rate() = %v, ErrorRate() = %v, want 495, 0.01", got.Rate(), got.ErrorRate())
	}
	for _, bad := range []string{"", "nsenter: cannot open", `{"conns":1}`} {
		if _, err := ParseCPS([]byte(bad)); err == nil {
			t.Errorf("ParseCPS(%q) = nil error, want one", bad)
		}
	}
}

func TestParseModes(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []Mode
		wantErr string
	}{
		{in: "direct,fibmesh,haproxy", want: AllModes},
		{in: "haproxy, direct", want: []Mode{ModeDirect, ModeHAProxy}},
		{in: "fibmesh", want: []Mode{ModeFibmesh}},
		{in: "envoy", wantErr: `unknown mode "envoy"`},
		{in: "direct,direct", wantErr: "given twice"},
		{in: "", wantErr: `unknown mode ""`},
	} {
		got, err := ParseModes(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseModes(%q): err = %v, want it to contain %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseModes(%q): %v", tc.in, err)
			continue
		}
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("ParseModes(%q) (-want +got):\n%s", tc.in, d)
		}
	}
}

func TestResultLine(t *testing.T) {
	samples := func(gbps, cps []float64) []Sample {
		var s []Sample
		for i := range gbps {
			s = append(s, Sample{Round: i + 1, Gbps: gbps[i], Rate: cps[i]})
		}
		return s
	}
	full := func() *Result {
		return &Result{Modes: []*ModeResult{
			{Mode: ModeDirect, Samples: samples([]float64{9, 10, 11}, []float64{5000, 6000, 7000})},
			{Mode: ModeFibmesh, Samples: samples([]float64{6.5, 5.25, 6}, []float64{3000, 2500, 2800})},
			{Mode: ModeHAProxy, Samples: samples([]float64{2, 2.2, 1.9}, []float64{400, 480, 450})},
		}}
	}
	got, err := full().Line()
	if err != nil {
		t.Fatal(err)
	}
	if want := "l4-mesh: fibmesh_gbps=6.000 haproxy_gbps=2.000 direct_gbps=10.000 fibmesh_cps=2800 haproxy_cps=450"; got != want {
		t.Errorf("Line() = %q\nwant     %q", got, want)
	}

	failed := full()
	failed.Modes[1].Error = "node1's agent serves no /connections"
	if _, err := failed.Line(); err == nil || !strings.Contains(err.Error(), "fibmesh mode failed") {
		t.Errorf("a failed mode: err = %v", err)
	}
	if err := failed.Failed(); err == nil || !strings.Contains(err.Error(), "fibmesh mode: node1's agent") {
		t.Errorf("Failed() = %v", err)
	}
	partial := full()
	partial.Modes = partial.Modes[:1]
	if _, err := partial.Line(); err == nil || !strings.Contains(err.Error(), "did not run") {
		t.Errorf("a mode not run: err = %v", err)
	}
	if err := full().Failed(); err != nil {
		t.Errorf("Failed() = %v, want nil", err)
	}

	var b strings.Builder
	failed.WriteTable(&b)
	for _, want := range []string{"fibmesh FAILED: node1's agent", "haproxy vs direct: throughput 0.20x", "fibmesh vs haproxy: throughput n/a"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}
