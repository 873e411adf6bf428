package l7bench

import (
	"slices"
	"time"

	"github.com/fibmesh/fibmesh/internal/quantile"
)

// Intended returns when request i (from 0) of a constant-rate schedule
// that starts at start and sends rate requests per second is due: start
// + i/rate. The time is computed from i, never by adding intervals, so a
// late send does not push the later ones back (the schedule is open
// loop: the server's slowness cannot slow the load down).
func Intended(start time.Time, rate float64, i int64) time.Time {
	return start.Add(time.Duration(float64(i) * float64(time.Second) / rate))
}

// Latencies are the measured latencies of one run, in no order until
// Summarize sorts them.
type Latencies []time.Duration

// Summary is a run's latency distribution in microseconds.
type Summary struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50us"`
	P90   float64 `json:"p90us"`
	P99   float64 `json:"p99us"`
	P999  float64 `json:"p999us"`
	Max   float64 `json:"maxus"`
	Mean  float64 `json:"meanus"`
}

// Summarize sorts l and returns its percentiles by the nearest-rank
// method (internal/quantile: every figure is a measured latency).
func (l Latencies) Summarize() Summary {
	if len(l) == 0 {
		return Summary{}
	}
	slices.Sort(l)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	at := func(q float64) float64 { return us(l[quantile.Rank(len(l), q)]) }
	var sum time.Duration
	for _, d := range l {
		sum += d
	}
	return Summary{
		Count: len(l), P50: at(0.5), P90: at(0.9), P99: at(0.99), P999: at(0.999),
		Max: us(l[len(l)-1]), Mean: us(sum) / float64(len(l)),
	}
}
