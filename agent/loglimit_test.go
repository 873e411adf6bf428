package agent

import (
	"testing"
	"time"
)

func TestLogLimit(t *testing.T) {
	var l logLimit
	t0 := time.Unix(1000, 0)
	n := 0
	for range 100 {
		if l.allow(t0) {
			n++
		}
	}
	if n != 10 {
		t.Errorf("%d lines allowed in one second, want 10", n)
	}
	if !l.allow(t0.Add(time.Second)) {
		t.Error("the next second allows none")
	}
}
