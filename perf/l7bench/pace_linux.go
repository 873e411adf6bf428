package l7bench

import (
	"context"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// pacer wakes the open-loop schedule at each request's due time. Go's
// timers wake a goroutine to the millisecond only (the runtime's poller
// rounds a wait up to whole milliseconds): measured here, a 1 ms schedule
// woke 0.6 ms late at the median, lateness that every request's latency
// would carry. clock_nanosleep(TIMER_ABSTIME) on a thread with a 1 ns
// timer slack wakes within tens of microseconds (0.06 ms at the median on
// the same loaded 2-core machine).
type pacer struct{}

// newPacer locks the calling goroutine to its thread and sets the
// thread's timer slack; stop undoes the lock.
func newPacer() *pacer {
	runtime.LockOSThread()
	// The default slack (50 µs) lets the kernel merge wake-ups; a failure
	// leaves it, a little less precise.
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
	return &pacer{}
}

func (p *pacer) stop() { runtime.UnlockOSThread() }

// maxSleep bounds one sleep, so that a cancelled ctx is seen soon.
const maxSleep = 50 * time.Millisecond

// sleepUntil blocks until t or until ctx ends; it returns ctx's error.
func (p *pacer) sleepUntil(ctx context.Context, t time.Time) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		d := time.Until(t)
		if d <= 0 {
			return nil
		}
		var now unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &now); err != nil {
			return fallbackSleep(ctx, d)
		}
		ts := unix.NsecToTimespec(now.Nano() + int64(min(d, maxSleep)))
		if err := unix.ClockNanosleep(unix.CLOCK_MONOTONIC, unix.TIMER_ABSTIME, &ts, nil); err != nil && err != unix.EINTR {
			return fallbackSleep(ctx, d)
		}
	}
}
