package l7bench

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestIntended(t *testing.T) {
	start := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		rate float64
		i    int64
		want time.Duration
	}{
		{1000, 0, 0},
		{1000, 1, time.Millisecond},
		{1000, 999, 999 * time.Millisecond},
		// Computed from i, not summed: no drift after a million requests.
		{1000, 1_000_000, 1000 * time.Second},
		{3, 1, 333_333_333 * time.Nanosecond},
		{3, 3, time.Second},
		{200, 400, 2 * time.Second},
		{0.5, 1, 2 * time.Second},
	} {
		if got := Intended(start, tc.rate, tc.i).Sub(start); got != tc.want {
			t.Errorf("Intended(rate %v, i %d) = start+%v, want start+%v", tc.rate, tc.i, got, tc.want)
		}
	}
	// The schedule never goes backwards.
	prev := start
	for i := range int64(10_000) {
		got := Intended(start, 7919, i)
		if got.Before(prev) {
			t.Fatalf("request %d due at %v, before request %d at %v", i, got, i-1, prev)
		}
		prev = got
	}
}

func TestSummarize(t *testing.T) {
	us := func(xs ...int) Latencies {
		var l Latencies
		for _, x := range xs {
			l = append(l, time.Duration(x)*time.Microsecond)
		}
		return l
	}
	hundred := func() Latencies {
		// 1..100 µs, shuffled by a stride coprime with 100.
		var l Latencies
		for i := range 100 {
			l = append(l, time.Duration((i*37)%100+1)*time.Microsecond)
		}
		return l
	}
	thousand := make(Latencies, 1000)
	for i := range thousand {
		thousand[i] = 100 * time.Microsecond
	}
	thousand[999] = 5 * time.Millisecond // one stall in a thousand: p99.9 only
	for _, tc := range []struct {
		name string
		in   Latencies
		want Summary
	}{
		{"empty", nil, Summary{}},
		{"one", us(250), Summary{Count: 1, P50: 250, P90: 250, P99: 250, P999: 250, Max: 250, Mean: 250}},
		// Nearest rank: the p50 of an even count is the lower middle one.
		{"two", us(300, 100), Summary{Count: 2, P50: 100, P90: 300, P99: 300, P999: 300, Max: 300, Mean: 200}},
		{"1..100", hundred(), Summary{Count: 100, P50: 50, P90: 90, P99: 99, P999: 100, Max: 100, Mean: 50.5}},
		{"a stall in a thousand", thousand, Summary{Count: 1000, P50: 100, P90: 100, P99: 100, P999: 100, Max: 5000, Mean: 104.9}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.in.Summarize()
			if d := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b float64) bool { return a-b < 1e-6 && b-a < 1e-6 })); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}
