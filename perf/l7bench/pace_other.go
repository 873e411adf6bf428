//go:build !linux

package l7bench

import (
	"context"
	"time"
)

// pacer wakes the open-loop schedule at each request's due time; outside
// Linux with Go's timers (to the millisecond).
type pacer struct{}

func newPacer() *pacer { return &pacer{} }
func (p *pacer) stop() {}

// sleepUntil blocks until t or until ctx ends; it returns ctx's error.
func (p *pacer) sleepUntil(ctx context.Context, t time.Time) error {
	return fallbackSleep(ctx, time.Until(t))
}
