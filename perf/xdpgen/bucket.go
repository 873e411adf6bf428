package xdpgen

import (
	"math"
	"time"
)

// bucket is a token bucket: tokens accrue at rate per second up to burst;
// take spends up to a batch of whole tokens at once.
type bucket struct {
	rate   float64 // tokens per second
	burst  float64 // most tokens held
	tokens float64
	last   time.Time
}

// newBucket returns an empty bucket whose clock starts at now.
func newBucket(rate float64, burst int, now time.Time) *bucket {
	return &bucket{rate: rate, burst: float64(burst), last: now}
}

// take refills the bucket up to now and spends as many whole tokens as
// it holds, at most batch, but only once it holds a whole batch (or as
// much as a batch would take to reach burst): the generator sends
// batches, not single packets. With nothing to spend, it returns 0 and
// how long until a batch's worth will have accrued.
func (b *bucket) take(now time.Time, batch int) (int, time.Duration) {
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = math.Min(b.burst, b.tokens+dt*b.rate)
		b.last = now
	}
	need := math.Min(float64(batch), b.burst)
	if b.tokens < need {
		wait := time.Duration((need - b.tokens) / b.rate * float64(time.Second))
		return 0, max(wait, time.Microsecond)
	}
	n := min(batch, int(b.tokens))
	b.tokens -= float64(n)
	return n, 0
}

// refund gives back n tokens that take handed out but were not spent
// (no free frame, a full ring).
func (b *bucket) refund(n int) {
	b.tokens = math.Min(b.burst, b.tokens+float64(n))
}
