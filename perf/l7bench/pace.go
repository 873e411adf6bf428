package l7bench

import (
	"context"
	"time"
)

// fallbackSleep sleeps d with a Go timer, or until ctx ends.
func fallbackSleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
