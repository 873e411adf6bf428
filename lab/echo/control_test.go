package echo

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// clients are the HTTP clients every control test runs with: HTTP/1.1
// and h2c with prior knowledge.
func clients() map[string]*http.Client {
	h2 := &http.Transport{Protocols: new(http.Protocols)}
	h2.Protocols.SetUnencryptedHTTP2(true)
	return map[string]*http.Client{
		"http1.1": {Transport: &http.Transport{}, Timeout: 10 * time.Second},
		"h2c":     {Transport: h2, Timeout: 10 * time.Second},
	}
}

// get sends GET /x to addr with the headers hdr (name, value, ...) and
// returns the status and the decoded reply.
func get(t *testing.T, c *http.Client, addr string, hdr ...string) (int, Reply, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+"/x", nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, decode(t, body), resp.Header
}

func TestControlHeaders(t *testing.T) {
	addr := start(t)
	tests := []struct {
		name      string
		hdr       []string
		status    int
		errSubstr string // in Reply.Error
		minTime   time.Duration
	}{
		{"plain", nil, 200, "", 0},
		{"status 503", []string{"x-echo-status", "503"}, 503, "", 0},
		{"status 418", []string{"x-echo-status", "418"}, 418, "", 0},
		{"status 202", []string{"x-echo-status", "202"}, 202, "", 0},
		{"delay", []string{"x-echo-delay", "150ms"}, 200, "", 150 * time.Millisecond},
		{"delay and status", []string{"x-echo-delay", "100ms", "x-echo-status", "500"}, 500, "", 100 * time.Millisecond},
		{"bad status", []string{"x-echo-status", "abc"}, 400, "x-echo-status", 0},
		{"status out of range", []string{"x-echo-status", "99"}, 400, "200..599", 0},
		{"bad delay", []string{"x-echo-delay", "soon"}, 400, "x-echo-delay", 0},
		{"delay past the bound", []string{"x-echo-delay", "31s"}, 400, "0..30s", 0},
		{"negative delay", []string{"x-echo-delay", "-1s"}, 400, "x-echo-delay", 0},
		{"fail-first without a key", []string{"x-echo-fail-first", "2"}, 400, "x-echo-attempt-key", 0},
		{"bad fail-status", []string{"x-echo-fail-status", "700"}, 400, "x-echo-fail-status", 0},
		{"bad fail-first", []string{"x-echo-fail-first", "-1", "x-echo-attempt-key", "k"}, 400, "x-echo-fail-first", 0},
		{"key too long", []string{"x-echo-attempt-key", strings.Repeat("k", MaxAttemptKeyLen+1)}, 400, "x-echo-attempt-key", 0},
	}
	for cname, c := range clients() {
		for _, tt := range tests {
			t.Run(cname+"/"+tt.name, func(t *testing.T) {
				t0 := time.Now()
				code, rep, _ := get(t, c, addr, tt.hdr...)
				took := time.Since(t0)
				if code != tt.status || rep.Status != tt.status {
					t.Fatalf("status %d (reply %d), want %d (error %q)", code, rep.Status, tt.status, rep.Error)
				}
				if tt.errSubstr == "" && rep.Error != "" || !strings.Contains(rep.Error, tt.errSubstr) {
					t.Errorf("error %q, want one containing %q", rep.Error, tt.errSubstr)
				}
				if took < tt.minTime {
					t.Errorf("answered after %v, want at least %v", took, tt.minTime)
				}
				if d := rep.Info; d != testInfo {
					t.Errorf("info %+v, want %+v", d, testInfo)
				}
			})
		}
	}
}

// The acceptance's "a backend that fails the first two attempts": the
// first N requests carrying a key get 503, the later ones 200, each with
// its attempt number; keys are counted apart.
func TestFailFirst(t *testing.T) {
	addr := start(t)
	tests := []struct {
		failFirst  int
		failStatus string // x-echo-fail-status, "" for none
		want       []int  // statuses of consecutive requests
	}{
		{0, "", []int{200, 200}},
		{1, "", []int{503, 200, 200}},
		{2, "", []int{503, 503, 200, 200}},
		{2, "502", []int{502, 502, 200}},
		{1, "409", []int{409, 200}},
	}
	for cname, c := range clients() {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/fail-first %d status %s", cname, tt.failFirst, tt.failStatus), func(t *testing.T) {
				key := t.Name()
				hdr := []string{"x-echo-fail-first", strconv.Itoa(tt.failFirst), "x-echo-attempt-key", key}
				if tt.failStatus != "" {
					hdr = append(hdr, "x-echo-fail-status", tt.failStatus)
				}
				for i, want := range tt.want {
					code, rep, h := get(t, c, addr, hdr...)
					if code != want {
						t.Errorf("request %d: status %d, want %d", i+1, code, want)
					}
					if rep.Attempt != i+1 || h.Get(HeaderAttempt) != strconv.Itoa(i+1) {
						t.Errorf("request %d: attempt %d (header %q), want %d", i+1, rep.Attempt, h.Get(HeaderAttempt), i+1)
					}
				}
			})
		}
	}
	// A key without fail-first is only counted.
	c := clients()["http1.1"]
	for i := 1; i <= 3; i++ {
		if code, rep, _ := get(t, c, addr, "x-echo-attempt-key", "count-only"); code != 200 || rep.Attempt != i {
			t.Errorf("count-only request %d: status %d attempt %d, want 200 %d", i, code, rep.Attempt, i)
		}
	}
	// Without a key there is no attempt.
	if _, rep, h := get(t, c, addr); rep.Attempt != 0 || h.Get(HeaderAttempt) != "" {
		t.Errorf("no key: attempt %d header %q, want none", rep.Attempt, h.Get(HeaderAttempt))
	}
}

func TestAttemptsBounded(t *testing.T) {
	var a attempts
	a.m = map[string]int{}
	if n := a.add("first"); n != 1 {
		t.Fatalf("first add = %d, want 1", n)
	}
	if n := a.add("first"); n != 2 {
		t.Fatalf("second add = %d, want 2", n)
	}
	for i := range MaxAttemptKeys {
		a.add(fmt.Sprint("k", i))
	}
	if len(a.m) != MaxAttemptKeys || len(a.order) != MaxAttemptKeys {
		t.Fatalf("%d keys (%d in order), want the bound %d", len(a.m), len(a.order), MaxAttemptKeys)
	}
	// "first" was the oldest: forgotten, it starts again at 1; the
	// newest is still counted.
	if n := a.add("first"); n != 1 {
		t.Errorf("evicted key counted %d, want 1 (forgotten)", n)
	}
	if n := a.add(fmt.Sprint("k", MaxAttemptKeys-1)); n != 2 {
		t.Errorf("newest key counted %d, want 2", n)
	}
	if len(a.m) != MaxAttemptKeys {
		t.Errorf("%d keys after eviction, want %d", len(a.m), MaxAttemptKeys)
	}
}

// A client that gives up before the delay is over gets no answer.
func TestDelayClientTimeout(t *testing.T) {
	addr := start(t)
	for cname, c := range clients() {
		t.Run(cname, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/slow", nil)
			req.Header.Set("x-echo-delay", "5s")
			t0 := time.Now()
			resp, err := c.Do(req)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("status %d after %v, want the client's timeout", resp.StatusCode, time.Since(t0))
			}
			if took := time.Since(t0); took > 2*time.Second {
				t.Errorf("gave up after %v, want about 100ms", took)
			}
		})
	}
}

func TestOptions(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		hdr     []string
		status  int
		minTime time.Duration
		maxTime time.Duration // 0: no bound
	}{
		{"status 500", Options{Status: 500}, nil, 500, 0, 0},
		{"header overrides the pod's status", Options{Status: 500}, []string{"x-echo-status", "200"}, 200, 0, 0},
		{"delay", Options{Delay: 120 * time.Millisecond}, nil, 200, 120 * time.Millisecond, 0},
		{"header overrides the pod's delay", Options{Delay: MaxDelay}, []string{"x-echo-delay", "0s"}, 200, 0, MaxDelay / 2},
		{"fail rate 1", Options{FailRate: 1}, nil, 503, 0, 0},
		{"fail rate 1 wins over a status header", Options{FailRate: 1}, []string{"x-echo-status", "200"}, 503, 0, 0},
	}
	c := clients()["http1.1"]
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := startWith(t, tt.opts)
			t0 := time.Now()
			code, rep, _ := get(t, c, addr, tt.hdr...)
			if code != tt.status || rep.Status != tt.status {
				t.Errorf("status %d (reply %d), want %d", code, rep.Status, tt.status)
			}
			took := time.Since(t0)
			if took < tt.minTime {
				t.Errorf("answered after %v, want at least %v", took, tt.minTime)
			}
			if tt.maxTime > 0 && took > tt.maxTime {
				t.Errorf("answered after %v, want at most %v", took, tt.maxTime)
			}
		})
	}
}

// A fail rate holds statistically: 0.3 of 1,000 requests within the
// 99.9% binomial bounds (±3.3 standard deviations, sd = 14.5).
func TestFailRate(t *testing.T) {
	addr := startWith(t, Options{FailRate: 0.3})
	c := clients()["h2c"]
	const n = 1000
	failed := 0
	for range n {
		code, _, _ := get(t, c, addr)
		switch code {
		case 503:
			failed++
		case 200:
		default:
			t.Fatalf("status %d, want 200 or 503", code)
		}
	}
	if failed < 252 || failed > 348 {
		t.Errorf("%d of %d failed, want 300 ± 48", failed, n)
	}
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		opts    Options
		errPart string // "" valid
	}{
		{Options{}, ""},
		{Options{Status: 503, Delay: MaxDelay, FailRate: 1, GRPCHealth: "not_serving"}, ""},
		{Options{Status: 99}, "status 99"},
		{Options{Status: 600}, "status 600"},
		{Options{Delay: -time.Second}, "delay"},
		{Options{Delay: MaxDelay + 1}, "delay"},
		{Options{FailRate: 1.5}, "fail rate"},
		{Options{FailRate: -0.1}, "fail rate"},
		{Options{GRPCHealth: "HEALTHY"}, "gRPC health status \"HEALTHY\""},
	}
	for _, tt := range tests {
		err := tt.opts.Validate()
		if tt.errPart == "" && err != nil || tt.errPart != "" && (err == nil || !strings.Contains(err.Error(), tt.errPart)) {
			t.Errorf("Validate(%+v) = %v, want an error containing %q", tt.opts, err, tt.errPart)
		}
		if _, nerr := NewWithOptions(testInfo, tt.opts); (nerr == nil) != (err == nil) {
			t.Errorf("NewWithOptions(%+v) = %v, Validate %v: want the same", tt.opts, nerr, err)
		}
	}
}

// A real gRPC client checks the app's health over h2c on the app's port,
// and plain HTTP keeps working on the same port.
func TestGRPCHealth(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		service string
		want    healthpb.HealthCheckResponse_ServingStatus
		code    codes.Code
	}{
		{"default", Options{}, "", healthpb.HealthCheckResponse_SERVING, codes.OK},
		{"service name", Options{}, testInfo.Service, healthpb.HealthCheckResponse_SERVING, codes.OK},
		{"not serving", Options{GRPCHealth: "NOT_SERVING"}, "", healthpb.HealthCheckResponse_NOT_SERVING, codes.OK},
		{"unknown service", Options{}, "ratings", 0, codes.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := startWith(t, tt.opts)
			conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: tt.service})
			if status.Code(err) != tt.code {
				t.Fatalf("Check: %v, want code %v", err, tt.code)
			}
			if err == nil && resp.GetStatus() != tt.want {
				t.Errorf("status %v, want %v", resp.GetStatus(), tt.want)
			}
			// Another method of the same connection: not implemented.
			if err := conn.Invoke(ctx, "/echo.Echo/Nope", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{}); status.Code(err) != codes.Unimplemented {
				t.Errorf("unknown method: %v, want Unimplemented", err)
			}
			for cname, c := range clients() {
				if code, rep, _ := get(t, c, addr); code != 200 || rep.Service != testInfo.Service {
					t.Errorf("%s beside gRPC: status %d reply %+v, want 200 from %s", cname, code, rep, testInfo.Service)
				}
			}
		})
	}
}

// Watch streams the status and its changes (SetServingStatus).
func TestGRPCHealthWatch(t *testing.T) {
	ln := startServer(t)
	conn, err := grpc.NewClient("passthrough:///"+ln.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []healthpb.HealthCheckResponse_ServingStatus{healthpb.HealthCheckResponse_SERVING, healthpb.HealthCheckResponse_NOT_SERVING} {
		resp, err := w.Recv()
		if err != nil {
			t.Fatalf("Recv %d: %v", i, err)
		}
		if resp.GetStatus() != want {
			t.Fatalf("Recv %d: %v, want %v", i, resp.GetStatus(), want)
		}
		if i == 0 {
			ln.s.SetServingStatus(healthpb.HealthCheckResponse_NOT_SERVING)
		}
	}
}
