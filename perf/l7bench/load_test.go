package l7bench

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// server starts Serve on a loopback port and returns its address.
func server(t *testing.T, size int) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, "127.0.0.1:0", size, func(a net.Addr) { addrc <- a.String() }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	select {
	case a := <-addrc:
		return a
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	}
	return ""
}

func TestRequest(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    LoadOptions
		want int // length; 0: longer than asked (the head does not fit)
	}{
		{"default", LoadOptions{Addr: "10.96.0.200:8080"}, 256},
		{"host and path", LoadOptions{Addr: "127.0.0.1:1", Host: "server.bench.svc.cluster.local:8080", Path: "/api/x"}, 256},
		{"large", LoadOptions{Addr: "a:1", RequestSize: 2000}, 2000},
		{"smaller than the head", LoadOptions{Addr: "a:1", RequestSize: 10}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.o.Request()
			if tc.want > 0 && len(b) != tc.want {
				t.Errorf("%d bytes, want %d:\n%s", len(b), tc.want, b)
			}
			req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b)))
			if err != nil {
				t.Fatalf("not an HTTP request: %v\n%q", err, b)
			}
			o := tc.o.withDefaults()
			if req.Method != "GET" || req.Host != o.Host || req.URL.Path != o.Path || req.ProtoMinor != 1 || req.Header.Get("X-Bench-Pad") == "" && tc.want > 0 {
				t.Errorf("request %s %s host %q proto %s pad %q", req.Method, req.URL.Path, req.Host, req.Proto, req.Header.Get("X-Bench-Pad"))
			}
		})
	}
}

func TestArgsRoundTrip(t *testing.T) {
	for _, o := range []LoadOptions{
		{Addr: "10.96.0.200:8080", Host: "server.bench.svc.cluster.local:8080", Path: "/", Conns: 32, Rate: 1000,
			Warmup: time.Second, Duration: 10 * time.Second, Timeout: 2 * time.Second, RequestSize: 256, BodySize: 1024},
		{Addr: "127.0.0.1:18080", Host: "h", Path: "/p", Conns: 64, Rate: 0, Warmup: 0, Duration: 200 * time.Millisecond,
			Timeout: time.Second, RequestSize: 300, BodySize: 0},
		{Addr: "a:1", Host: "a:1", Path: "/", Conns: 1, Rate: 333.5, Duration: time.Minute, Timeout: time.Second, RequestSize: 1},
	} {
		got, err := ParseLoadArgs(o.Args(), nil)
		if err != nil {
			t.Fatalf("ParseLoadArgs(%q): %v", o.Args(), err)
		}
		if d := cmp.Diff(o, got); d != "" {
			t.Errorf("round trip of %q (-want +got):\n%s", o.Args(), d)
		}
	}
	for _, tc := range []struct {
		args    []string
		wantErr string
	}{
		{nil, "--addr is required"},
		{[]string{"--addr", "a:1", "--rate", "-5"}, "--rate -5"},
		{[]string{"--addr", "a:1", "--duration", "-1s"}, "must not be negative"},
		{[]string{"--addr", "a:1", "extra"}, `unexpected argument "extra"`},
		{[]string{"--nope"}, "not defined"},
	} {
		if _, err := ParseLoadArgs(tc.args, nil); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("ParseLoadArgs(%q) = %v, want an error containing %q", tc.args, err, tc.wantErr)
		}
	}
}

func TestParseLoad(t *testing.T) {
	r, err := ParseLoad([]byte(`{"requests":2000,"errors":1,"due":2000,"seconds":2,"latency":{"count":2000,"p50us":80,"p99us":400},"xfcc":2000,"xfccSample":"By=x;URI=y"}` + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 2000 || r.Rate() != 1000 || r.Latency.P99 != 400 || r.XFCC != 2000 || r.ErrorRate() != 1.0/2001 {
		t.Errorf("parsed %+v", r)
	}
	for in, want := range map[string]string{"": "bench-l7 load output", "oops": "bench-l7 load output", `{"requests":3}`: "no measured time"} {
		if _, err := ParseLoad([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseLoad(%q) = %v, want %q", in, err, want)
		}
	}
}

func TestHandler(t *testing.T) {
	if _, err := Handler(0); err == nil {
		t.Error("Handler(0): no error")
	}
	h, err := Handler(1024)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ xfcc, want string }{
		{"", ""},
		{"By=spiffe://cluster.local/ns/bench/sa/server;URI=spiffe://cluster.local/ns/bench/sa/client", "By=spiffe://cluster.local/ns/bench/sa/server;URI=spiffe://cluster.local/ns/bench/sa/client"},
		{strings.Repeat("x", 2000), strings.Repeat("x", maxXFCC)},
	} {
		req := httptest.NewRequest("POST", "/", strings.NewReader("a request body"))
		if tc.xfcc != "" {
			req.Header.Set("X-Forwarded-Client-Cert", tc.xfcc)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != 200 || w.Body.Len() != 1024 || w.Header().Get("Content-Length") != "1024" || w.Header().Get(HeaderXFCC) != tc.want {
			t.Errorf("xfcc %.20q: status %d, %d bytes, length %q, %s %.20q", tc.xfcc, w.Code, w.Body.Len(), w.Header().Get("Content-Length"), HeaderXFCC, w.Header().Get(HeaderXFCC))
		}
	}
}

// The open loop keeps its schedule whatever the server does, and counts
// a stall in every request it delays: one connection, 200 requests per
// second, a server that stalls 300 ms once. A generator that waited for
// the answer before sending the next request (coordinated omission)
// would see one slow request; this one sees the ~60 that were due during
// the stall queue up behind it.
func TestRunLoadOpenLoopCountsStalls(t *testing.T) {
	h, err := Handler(1024)
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	var stall sync.Once
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 100 {
			stall.Do(func() { time.Sleep(300 * time.Millisecond) })
		}
		h.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	res := RunLoad(context.Background(), LoadOptions{Addr: ln.Addr().String(), Conns: 1, Rate: 200,
		Warmup: 0, Duration: 2 * time.Second, Timeout: 5 * time.Second, BodySize: 1024})
	if res.Due != 400 || res.Requests != 400 || res.Errors != 0 {
		t.Fatalf("%d due, %d answered, %d errors (first: %s); want 400, 400, 0", res.Due, res.Requests, res.Errors, res.FirstError)
	}
	if res.Rate() != 200 {
		t.Errorf("rate %v, want 200", res.Rate())
	}
	// The 4 slowest of 400 waited most of the stall.
	if res.Latency.P99 < 150_000 {
		t.Errorf("p99 %.0fus after a 300 ms stall, want >= 150 ms: the stall's queue was not counted (%+v)", res.Latency.P99, res.Latency)
	}
	if res.Latency.Max < 300_000 {
		t.Errorf("max %.0fus, want >= the 300 ms stall", res.Latency.Max)
	}
}

func TestRunLoad(t *testing.T) {
	addr := server(t, 1024)
	for _, tc := range []struct {
		name       string
		o          LoadOptions
		wantErrors bool
		firstError string
	}{
		{"closed loop", LoadOptions{Conns: 4, Duration: 300 * time.Millisecond, BodySize: 1024}, false, ""},
		{"open loop with warm-up", LoadOptions{Conns: 4, Rate: 500, Warmup: 100 * time.Millisecond, Duration: 300 * time.Millisecond, BodySize: 1024}, false, ""},
		{"wrong body size", LoadOptions{Conns: 2, Duration: 100 * time.Millisecond, BodySize: 1000}, true, "1024 bytes of body, want 1000"},
		{"nothing listens", LoadOptions{Addr: "127.0.0.1:1", Conns: 1, Duration: 100 * time.Millisecond}, true, "connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.o.Addr == "" {
				tc.o.Addr = addr
			}
			res := RunLoad(context.Background(), tc.o)
			if tc.wantErrors {
				if res.Requests != 0 || res.Errors == 0 || !strings.Contains(res.FirstError, tc.firstError) {
					t.Errorf("%d answered, %d errors, first %q; want only errors, the first containing %q", res.Requests, res.Errors, res.FirstError, tc.firstError)
				}
				return
			}
			if res.Requests == 0 || res.Errors != 0 || res.Latency.Count != int(res.Requests) || res.XFCC != 0 {
				t.Errorf("result %+v", res)
			}
			if tc.o.Rate > 0 && (res.Due != 150 || res.Answered != 200) {
				t.Errorf("%d due in 300 ms at 500/s, %d answered in all; want 150 (the warm-up's not counted) and 200 (the warm-up's 50 too)", res.Due, res.Answered)
			}
			if res.Answered < res.Requests {
				t.Errorf("%d answered in all, fewer than the %d measured", res.Answered, res.Requests)
			}
		})
	}
	// A cancelled run stops early with what it has.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	res := RunLoad(ctx, LoadOptions{Addr: addr, Conns: 2, Rate: 100, Duration: time.Minute})
	if took := time.Since(t0); took > 10*time.Second || res.Seconds > 5 {
		t.Errorf("a cancelled minute-long run took %v (window %.1f s)", took, res.Seconds)
	}
}

// A path slower than the rate: the open loop keeps its schedule, every
// request is still answered, and Drain shows the backlog.
func TestRunLoadDrain(t *testing.T) {
	h, err := Handler(64)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond) // 50 requests per second on one connection
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	res := RunLoad(context.Background(), LoadOptions{Addr: strings.TrimPrefix(srv.URL, "http://"), Conns: 1, Rate: 200,
		Duration: 250 * time.Millisecond, Timeout: 5 * time.Second, BodySize: 64})
	// 50 due in 250 ms, 20 ms each: the last answer about 0.75 s late.
	if res.Due != 50 || res.Requests != 50 || res.Drain < 0.5 {
		t.Errorf("%d due, %d answered, drain %.2f s; want 50, 50, >= 0.5 s", res.Due, res.Requests, res.Drain)
	}
	if res.Latency.Max < 700_000 {
		t.Errorf("max latency %.0fus, want the backlog's (>= 700 ms)", res.Latency.Max)
	}
}
