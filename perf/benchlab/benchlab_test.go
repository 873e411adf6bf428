package benchlab

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseStatCPU(t *testing.T) {
	// Fields: pid (comm) state ppid pgrp session tty tpgid flags minflt
	// cminflt majflt cmajflt utime stime cutime cstime ...
	for _, tc := range []struct {
		name    string
		in      string
		want    float64
		wantErr string
	}{
		{name: "agent", in: "4242 (fibmesh-agent) S 1 4242 4242 0 -1 4194560 9000 0 3 0 250 130 7 9 20 0 12 0 123456 1000000 5000",
			want: 3.8},
		{name: "comm with spaces and parens", in: "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 1 1 1", want: 0.03},
		{name: "short", in: "7 (x) R 1 7 7", wantErr: "want at least 13"},
		{name: "no comm", in: "7 x R 1", wantErr: "no ')'"},
		{name: "not a number", in: "7 (x) R 1 7 7 0 -1 0 0 0 0 0 abc 2 0", wantErr: `utime/stime "abc"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseStatCPU(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMissingPorts(t *testing.T) {
	ss := `LISTEN 0      4096               *:5201            *:*
LISTEN 0      4096               *:8080            *:*
LISTEN 0      4096     10.200.2.12:25201     0.0.0.0:*
LISTEN 0      4096       127.0.0.1:18080     0.0.0.0:*
LISTEN 0      4096           [::1]:9000         [::]:*
`
	for _, tc := range []struct {
		want, missing []int
	}{
		{want: []int{5201, 8080, 25201, 18080, 9000}},
		{want: []int{5201, 28080, 15201}, missing: []int{28080, 15201}},
		{want: nil},
	} {
		if d := cmp.Diff(tc.missing, MissingPorts(ss, tc.want)); d != "" {
			t.Errorf("MissingPorts(%v) (-want +got):\n%s", tc.want, d)
		}
	}
	if d := cmp.Diff([]int{80}, MissingPorts("", []int{80})); d != "" {
		t.Errorf("no sockets: (-want +got):\n%s", d)
	}
}

func TestConnLogKeepsHighestCounts(t *testing.T) {
	l := ConnLog{}
	l.Add([]AgentConn{{ID: 1, State: "established", BytesOut: 500, BytesIn: 5}, {ID: 2, BytesOut: 1}})
	l.Add([]AgentConn{{ID: 1, State: "closed", BytesOut: 900, BytesIn: 3}})
	if c := l[1]; c.State != "closed" || c.BytesOut != 900 || c.BytesIn != 5 {
		t.Errorf("merged = %+v, want state closed, out 900, in 5", c)
	}
	if _, ok := l[2]; !ok {
		t.Error("a connection missing from a later snapshot was dropped")
	}
}

func TestParseConnectionsAndSince(t *testing.T) {
	body := `[{"id":3,"direction":"outbound","pod":"bench-plain/client-plain","source":"10.200.1.12:1","destination":"10.200.2.12:5201",
	  "state":"established","bytesOut":9,"bytesIn":0,"start":"2026-12-03T09:00:05Z","cluster":"x","chain":"y"}]`
	cs, err := ParseConnections([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	l := ConnLog{}
	l.Add(cs)
	t0 := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	if got := l.Since("bench-plain/client-plain", t0); len(got) != 1 || got[0].Destination != "10.200.2.12:5201" {
		t.Errorf("Since = %+v, want the one connection", got)
	}
	if got := l.Since("bench-plain/client-plain", t0.Add(time.Minute)); len(got) != 0 {
		t.Errorf("a connection from before the run counted: %+v", got)
	}
	if got := l.Since("bench-plain/server-plain", t0); len(got) != 0 {
		t.Errorf("another pod's connection counted: %+v", got)
	}
	if _, err := ParseConnections([]byte("404 page not found")); err == nil || !strings.Contains(err.Error(), "/connections") {
		t.Errorf("not JSON: err = %v", err)
	}
}

func TestParseStatusRSS(t *testing.T) {
	for _, tc := range []struct {
		name      string
		in        string
		rss, peak uint64
		wantErr   string
	}{
		{name: "agent", in: "Name:\tfibmesh-agent\nVmPeak:\t 1300000 kB\nVmHWM:\t   52000 kB\nVmRSS:\t   51200 kB\nThreads:\t12\n",
			rss: 51200 * 1024, peak: 52000 * 1024},
		{name: "kernel thread", in: "Name:\tkworker/0:1\nThreads:\t1\n", wantErr: "no VmRSS"},
		{name: "bad unit", in: "VmHWM:\t1 MB\nVmRSS:\t1 MB\n", wantErr: `"1 MB"`},
		{name: "not a number", in: "VmHWM:\tx kB\nVmRSS:\t1 kB\n", wantErr: "VmHWM"},
	} {
		rss, peak, err := ParseStatusRSS(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: err = %v, want %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil || rss != tc.rss || peak != tc.peak {
			t.Errorf("%s: %d, %d, %v; want %d, %d", tc.name, rss, peak, err, tc.rss, tc.peak)
		}
	}
}
