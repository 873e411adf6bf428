package resilience

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// harness drives a Breaker step by step; acquisitions that queue run in
// their own goroutine.
type harness struct {
	t     *testing.T
	b     *Breaker
	calls []*call
}

type call struct {
	cancel context.CancelFunc
	done   chan result
	res    *result
}

type result struct {
	t   Ticket
	err error
}

// outcome names a result as the tables do.
func outcome(r result) string {
	var ov *Overflow
	switch {
	case r.err == nil:
		return "ok"
	case errors.As(r.err, &ov):
		return ov.Kind
	case errors.Is(r.err, context.Canceled):
		return "canceled"
	}
	return r.err.Error()
}

// waitFor polls cond until it holds or 10 s pass (a deadline, not a
// sleep standing in for synchronisation).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// acquire starts call n and returns "queued" once it waits, or its
// outcome when decided at once.
func (h *harness) acquire() string {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &call{cancel: cancel, done: make(chan result, 1)}
	h.calls = append(h.calls, c)
	before := h.b.Stats().Pending
	go func() {
		t, err := h.b.Admit(ctx)
		c.done <- result{t, err}
	}()
	var got string
	waitFor(h.t, "acquire to be decided or queued", func() bool {
		select {
		case r := <-c.done:
			c.res = &r
			got = outcome(r)
			return true
		default:
		}
		if h.b.Stats().Pending > before {
			got = "queued"
			return true
		}
		return false
	})
	return got
}

// wait returns call n's outcome, waiting for it.
func (h *harness) wait(n int) string {
	h.t.Helper()
	c := h.calls[n]
	if c.res == nil {
		select {
		case r := <-c.done:
			c.res = &r
		case <-time.After(10 * time.Second):
			h.t.Fatalf("call %d never decided", n)
		}
	}
	return outcome(*c.res)
}

// decided reports whether call n has an outcome, without waiting.
func (h *harness) decided(n int) bool {
	c := h.calls[n]
	if c.res != nil {
		return true
	}
	select {
	case r := <-c.done:
		c.res = &r
		return true
	default:
		return false
	}
}

func TestBreakerSteps(t *testing.T) {
	http1 := func(conns, pending, reqs uint32) Limits {
		return Limits{MaxConnections: conns, MaxPendingRequests: pending, MaxRequests: reqs}
	}
	type step struct {
		do     string // acq, rel N, cancel N, wait N, idle N (undecided), limits
		n      int
		l      Limits
		want   string // acq and wait: the outcome
		active int
		queued int
	}
	tests := []struct {
		name   string
		limits Limits
		steps  []step
		stats  BreakerStats // overflow counts at the end
	}{
		{
			name:   "no limits admits all",
			limits: Limits{},
			steps: []step{
				{do: "acq", want: "ok", active: 1},
				{do: "acq", want: "ok", active: 2},
				{do: "acq", want: "ok", active: 3},
				{do: "rel", n: 1, active: 2},
			},
		},
		{
			name:   "http1 one connection one pending",
			limits: http1(1, 1, 0),
			steps: []step{
				{do: "acq", want: "ok", active: 1},
				{do: "acq", want: "queued", active: 1, queued: 1},
				{do: "acq", want: "pending", active: 1, queued: 1},
				{do: "rel", n: 0, active: 1, queued: 0},
				{do: "wait", n: 1, want: "ok", active: 1},
				{do: "rel", n: 1, active: 0},
			},
			stats: BreakerStats{OverflowPending: 1, OverflowConnections: 1},
		},
		{
			name:   "pending queue is FIFO",
			limits: http1(1, 0, 0),
			steps: []step{
				{do: "acq", want: "ok", active: 1},
				{do: "acq", want: "queued", active: 1, queued: 1},
				{do: "acq", want: "queued", active: 1, queued: 2},
				{do: "acq", want: "queued", active: 1, queued: 3},
				{do: "rel", n: 0, active: 1, queued: 2},
				{do: "wait", n: 1, want: "ok", active: 1, queued: 2},
				{do: "idle", n: 2, active: 1, queued: 2},
				{do: "idle", n: 3, active: 1, queued: 2},
				{do: "rel", n: 1, active: 1, queued: 1},
				{do: "wait", n: 2, want: "ok", active: 1, queued: 1},
				{do: "idle", n: 3, active: 1, queued: 1},
				{do: "rel", n: 2, active: 1},
				{do: "wait", n: 3, want: "ok", active: 1},
			},
			stats: BreakerStats{OverflowConnections: 3},
		},
		{
			name:   "a canceled waiter leaves the queue without a slot",
			limits: http1(1, 2, 0),
			steps: []step{
				{do: "acq", want: "ok", active: 1},
				{do: "acq", want: "queued", active: 1, queued: 1},
				{do: "acq", want: "queued", active: 1, queued: 2},
				{do: "cancel", n: 1, want: "canceled", active: 1, queued: 1},
				{do: "acq", want: "queued", active: 1, queued: 2},
				{do: "rel", n: 0, active: 1, queued: 1},
				{do: "wait", n: 2, want: "ok", active: 1, queued: 1},
				{do: "rel", n: 2, active: 1},
				{do: "wait", n: 3, want: "ok", active: 1},
				{do: "rel", n: 3},
			},
			stats: BreakerStats{OverflowConnections: 3},
		},
		{
			name:   "http1 max requests below connections overflows at once",
			limits: http1(4, 4, 2),
			steps: []step{
				{do: "acq", want: "ok", active: 1},
				{do: "acq", want: "ok", active: 2},
				{do: "acq", want: "requests", active: 2},
				{do: "rel", n: 0, active: 1},
				{do: "acq", want: "ok", active: 2},
			},
			stats: BreakerStats{OverflowRequests: 1},
		},
		{
			name:   "http2 bounds requests only and never queues",
			limits: Limits{MaxConnections: 1, MaxPendingRequests: 1, MaxRequests: 2, HTTP2: true},
			steps: []step{
				{do: "acq", want: "ok", active: 1},
				{do: "acq", want: "ok", active: 2},
				{do: "acq", want: "requests", active: 2},
				{do: "acq", want: "requests", active: 2},
				{do: "rel", n: 1, active: 1},
				{do: "acq", want: "ok", active: 2},
			},
			stats: BreakerStats{OverflowRequests: 2},
		},
		{
			name:   "lowering a limit revokes nothing; raising admits waiters",
			limits: http1(2, 0, 0),
			steps: []step{
				{do: "acq", want: "ok", active: 1},
				{do: "acq", want: "ok", active: 2},
				{do: "limits", l: http1(1, 0, 0), active: 2},
				{do: "rel", n: 1, active: 1},
				{do: "acq", want: "queued", active: 1, queued: 1},
				{do: "acq", want: "queued", active: 1, queued: 2},
				{do: "limits", l: http1(3, 0, 0), active: 3},
				{do: "wait", n: 2, want: "ok", active: 3},
				{do: "wait", n: 3, want: "ok", active: 3},
			},
			stats: BreakerStats{OverflowConnections: 2},
		},
		{
			name:   "a waiter given a connection over max requests fails",
			limits: http1(1, 0, 0),
			steps: []step{
				{do: "acq", want: "ok", active: 1},
				{do: "acq", want: "queued", active: 1, queued: 1},
				{do: "limits", l: http1(2, 0, 1), active: 1, queued: 0},
				{do: "wait", n: 1, want: "requests", active: 1},
			},
			stats: BreakerStats{OverflowConnections: 1, OverflowRequests: 1},
		},
		{
			name:   "switching to http2 admits the http1 queue",
			limits: http1(1, 0, 0),
			steps: []step{
				{do: "acq", want: "ok", active: 1},
				{do: "acq", want: "queued", active: 1, queued: 1},
				{do: "limits", l: Limits{HTTP2: true}, active: 2},
				{do: "wait", n: 1, want: "ok", active: 2},
				{do: "rel", n: 0, active: 1},
				{do: "rel", n: 1, active: 0},
			},
			stats: BreakerStats{OverflowConnections: 1},
		},
		{
			name:   "release is idempotent",
			limits: http1(1, 0, 0),
			steps: []step{
				{do: "acq", want: "ok", active: 1},
				{do: "rel", n: 0},
				{do: "rel", n: 0},
				{do: "acq", want: "ok", active: 1},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &harness{t: t, b: NewBreaker(tt.limits)}
			for i, s := range tt.steps {
				var got string
				switch s.do {
				case "acq":
					got = h.acquire()
				case "rel":
					h.wait(s.n)
					h.calls[s.n].res.t.Release()
				case "cancel":
					h.calls[s.n].cancel()
					got = h.wait(s.n)
				case "wait":
					got = h.wait(s.n)
				case "idle":
					if h.decided(s.n) {
						t.Fatalf("step %d: call %d decided before its turn: %s", i, s.n, outcome(*h.calls[s.n].res))
					}
				case "limits":
					h.b.SetLimits(s.l)
				default:
					t.Fatalf("step %d: unknown op %q", i, s.do)
				}
				if got != s.want {
					t.Fatalf("step %d (%s %d): got %q, want %q", i, s.do, s.n, got, s.want)
				}
				st := h.b.Stats()
				if st.Active != s.active || st.Pending != s.queued {
					t.Fatalf("step %d (%s %d): active %d pending %d, want %d %d", i, s.do, s.n, st.Active, st.Pending, s.active, s.queued)
				}
			}
			st := h.b.Stats()
			got := BreakerStats{OverflowPending: st.OverflowPending, OverflowRequests: st.OverflowRequests,
				OverflowRetries: st.OverflowRetries, OverflowConnections: st.OverflowConnections}
			if d := cmp.Diff(tt.stats, got); d != "" {
				t.Errorf("overflow counts (-want +got):\n%s", d)
			}
			for _, c := range h.calls {
				c.cancel()
			}
		})
	}
}

// TestBreakerIstioFortio is Istio's circuit-breaking task: with
// maxConnections 1 and http1MaxPendingRequests 1, of 10 concurrent
// requests that hold their slot 1 is in flight, 1 waits and 8 overflow.
func TestBreakerIstioFortio(t *testing.T) {
	b := NewBreaker(Limits{MaxConnections: 1, MaxPendingRequests: 1})
	hold := make(chan struct{})
	var overflow atomic.Int32
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			release, err := b.Acquire(context.Background())
			if err != nil {
				var ov *Overflow
				if !errors.As(err, &ov) || ov.Kind != OverflowPending {
					t.Errorf("error %v, want pending overflow", err)
				}
				overflow.Add(1)
				return
			}
			<-hold
			release()
			release() // idempotent
		})
	}
	waitFor(t, "10 requests decided or waiting", func() bool {
		s := b.Stats()
		return s.Active+s.Pending+int(overflow.Load()) == 10
	})
	s := b.Stats()
	if s.Active != 1 || s.Pending != 1 || overflow.Load() != 8 || s.OverflowPending != 8 {
		t.Fatalf("active %d pending %d overflow %d (stat %d), want 1 1 8 8", s.Active, s.Pending, overflow.Load(), s.OverflowPending)
	}
	close(hold)
	wg.Wait()
	if s := b.Stats(); s.Active != 0 || s.Pending != 0 || s.Connections != 0 {
		t.Fatalf("after all released: %+v", s)
	}
}

func TestBreakerRetries(t *testing.T) {
	tests := []struct {
		max     uint32
		n       int // retries attempted while all held
		wantOK  int
		wantOvf uint64
	}{
		{max: 0, n: 5, wantOK: 5},
		{max: 3, n: 5, wantOK: 3, wantOvf: 2},
		{max: 1, n: 1, wantOK: 1},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.max), func(t *testing.T) {
			b := NewBreaker(Limits{MaxRetries: tt.max})
			var rels []func()
			for range tt.n {
				if rel, ok := b.AcquireRetry(); ok {
					rels = append(rels, rel)
				}
			}
			s := b.Stats()
			if len(rels) != tt.wantOK || s.Retries != tt.wantOK || s.OverflowRetries != tt.wantOvf {
				t.Fatalf("admitted %d (stat %d) overflow %d, want %d %d", len(rels), s.Retries, s.OverflowRetries, tt.wantOK, tt.wantOvf)
			}
			for _, r := range rels {
				r()
				r()
			}
			if s := b.Stats(); s.Retries != 0 {
				t.Fatalf("retries in flight after release: %d", s.Retries)
			}
			if _, ok := b.AcquireRetry(); !ok {
				t.Fatal("retry refused after all released")
			}
		})
	}
}

// TestBreakerConcurrent hammers one breaker (run with -race): at no time
// do more requests hold a slot than MaxConnections, and in the end
// nothing is held or queued, whatever contexts ended on the way.
func TestBreakerConcurrent(t *testing.T) {
	const limit = 3
	b := NewBreaker(Limits{MaxConnections: limit, MaxPendingRequests: 5})
	var inside, maxInside atomic.Int32
	var ok, ovf, canceled atomic.Int32
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 200 {
				ctx, cancel := context.WithCancel(context.Background())
				if (g+i)%7 == 0 {
					cancel() // some give up while queued, or before
				}
				rel, err := b.Acquire(ctx)
				switch {
				case err == nil:
					n := inside.Add(1)
					for m := maxInside.Load(); n > m && !maxInside.CompareAndSwap(m, n); m = maxInside.Load() {
					}
					ok.Add(1)
					inside.Add(-1)
					rel()
				case errors.Is(err, context.Canceled):
					canceled.Add(1)
				default:
					ovf.Add(1)
				}
				cancel()
			}
		})
	}
	wg.Wait()
	if m := maxInside.Load(); m > limit {
		t.Fatalf("%d requests held a slot at once, limit %d", m, limit)
	}
	s := b.Stats()
	if s.Active != 0 || s.Pending != 0 || s.Connections != 0 {
		t.Fatalf("left over: %+v", s)
	}
	if got := uint64(ovf.Load()); got != s.OverflowPending+s.OverflowRequests {
		t.Fatalf("%d overflow errors, stats count %d", got, s.OverflowPending+s.OverflowRequests)
	}
	if ok.Load()+ovf.Load()+canceled.Load() != 16*200 {
		t.Fatalf("outcomes %d+%d+%d != %d", ok.Load(), ovf.Load(), canceled.Load(), 16*200)
	}
}

func TestOverflowError(t *testing.T) {
	for _, k := range []string{OverflowPending, OverflowRequests, OverflowRetries, OverflowConnections, "other"} {
		var err error = &Overflow{Kind: k}
		var ov *Overflow
		if !errors.As(fmt.Errorf("wrap: %w", err), &ov) || ov.Kind != k {
			t.Fatalf("%s: errors.As lost the kind", k)
		}
		if err.Error() == "" {
			t.Fatalf("%s: empty message", k)
		}
	}
	if got := (&Overflow{Kind: OverflowPending}).Error(); got != "circuit breaker overflow: pending requests queue full (upstream_rq_pending_overflow)" {
		t.Fatalf("pending message %q", got)
	}
}

func TestAdmitFreeSlotAllocs(t *testing.T) {
	b := NewBreaker(Limits{MaxConnections: 10, MaxPendingRequests: 10, MaxRequests: 10})
	ctx := context.Background()
	if n := testing.AllocsPerRun(1000, func() {
		tk, err := b.Admit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		tk.Release()
	}); n != 0 {
		t.Fatalf("Admit+Release allocates %v times, want 0", n)
	}
	if n := testing.AllocsPerRun(1000, func() {
		rel, err := b.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rel()
	}); n > 2 {
		t.Fatalf("Acquire+release allocates %v times, want ≤ 2 (the release closure)", n)
	}
	full := NewBreaker(Limits{MaxConnections: 1, MaxPendingRequests: 1})
	held, _ := full.Admit(ctx)
	defer held.Release()
	go func() { // fills the queue
		tk, _ := full.Admit(ctx)
		tk.Release()
	}()
	waitFor(t, "queue full", func() bool { return full.Stats().Pending == 1 })
	if n := testing.AllocsPerRun(1000, func() {
		if _, err := full.Admit(ctx); err == nil {
			t.Fatal("admitted over the limit")
		}
	}); n != 0 {
		t.Fatalf("overflow allocates %v times, want 0", n)
	}
}

func BenchmarkBreakerAdmitRelease(b *testing.B) {
	br := NewBreaker(Limits{MaxConnections: 1 << 20, MaxPendingRequests: 1024, MaxRequests: 1 << 20})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		t, err := br.Admit(ctx)
		if err != nil {
			b.Fatal(err)
		}
		t.Release()
	}
}

func BenchmarkBreakerAcquireRelease(b *testing.B) {
	br := NewBreaker(Limits{MaxConnections: 1 << 20, MaxPendingRequests: 1024, MaxRequests: 1 << 20})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		rel, err := br.Acquire(ctx)
		if err != nil {
			b.Fatal(err)
		}
		rel()
	}
}

func BenchmarkBreakerAdmitReleaseParallel(b *testing.B) {
	br := NewBreaker(Limits{MaxConnections: 1 << 20, MaxPendingRequests: 1024, MaxRequests: 1 << 20})
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			t, err := br.Admit(ctx)
			if err != nil {
				b.Error(err)
				return
			}
			t.Release()
		}
	})
}
