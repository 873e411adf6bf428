package testenv

import (
	"errors"
	"testing"
	"time"
)

// PollInterval is how often Eventually re-checks its condition.
const PollInterval = 2 * time.Millisecond

// Eventually calls cond every PollInterval until it returns nil, and
// returns how long that took; after timeout it fails the test with what
// and cond's last error. It is for state that another process or the
// kernel changes and announces no other way (a map, a status endpoint),
// not a substitute for waiting on an event the test can receive.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(PollInterval)
	}
}

// Until is Eventually for a condition that has no reason to give.
func Until(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	return Eventually(t, timeout, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

var errNotYet = errors.New("condition not met")
