package xdpgen

import (
	"testing"
	"time"
)

func TestBucketPacesBatches(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := newBucket(100_000, 2048, t0) // 100 kpps: a 64-packet batch every 640 µs

	near := func(d, want time.Duration) bool { return d > want-time.Microsecond && d < want+time.Microsecond }
	if n, wait := b.take(t0, 64); n != 0 || !near(wait, 640*time.Microsecond) {
		t.Fatalf("empty bucket: take = %d, wait %v; want 0, 640µs", n, wait)
	}
	if n, wait := b.take(t0.Add(320*time.Microsecond), 64); n != 0 || !near(wait, 320*time.Microsecond) {
		t.Fatalf("half a batch: take = %d, wait %v; want 0, 320µs", n, wait)
	}
	if n, _ := b.take(t0.Add(640*time.Microsecond), 64); n != 64 {
		t.Fatalf("a batch's worth: take = %d, want 64", n)
	}
	// A stall of 10 ms accrues 1,000 tokens: paid out a batch at a time.
	at := t0.Add(10640 * time.Microsecond)
	total := 0
	for {
		n, _ := b.take(at, 64)
		if n == 0 {
			break
		}
		total += n
	}
	if total != 960 { // 15 whole batches of 64; 40 tokens stay for the next
		t.Fatalf("after a 10 ms stall: %d packets, want 960", total)
	}
	// The bucket never holds more than burst: a 1 s stall is 100,000
	// tokens, capped at 2,048.
	at = at.Add(time.Second)
	total = 0
	for {
		n, _ := b.take(at, 64)
		if n == 0 {
			break
		}
		total += n
	}
	if total != 2048 {
		t.Fatalf("after a 1 s stall: %d packets, want the burst 2048", total)
	}
	b.refund(10)
	if b.tokens != 10 {
		t.Fatalf("refund: %v tokens, want 10", b.tokens)
	}
}

func TestBucketRateOverTime(t *testing.T) {
	// Over 1 s of irregular wake-ups the bucket hands out the rate.
	t0 := time.Unix(0, 0)
	b := newBucket(50_000, 2048, t0)
	now, sent := t0, 0
	for now.Sub(t0) < time.Second {
		n, wait := b.take(now, 64)
		sent += n
		if n == 0 {
			now = now.Add(wait + 137*time.Microsecond) // oversleeps
		}
	}
	if sent < 49_900 || sent > 50_000 {
		t.Fatalf("1 s at 50 kpps: %d packets", sent)
	}
}

func TestUDPOffset(t *testing.T) {
	f := make([]byte, 64)
	f[12], f[13] = 0x08, 0x00
	f[14] = 0x45
	f[23] = 17
	if got := udpOffset(f); got != 34 {
		t.Errorf("IPv4/UDP: offset %d, want 34", got)
	}
	f[23] = 6
	if got := udpOffset(f); got != 0 {
		t.Errorf("TCP: offset %d, want 0", got)
	}
}
