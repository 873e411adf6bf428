package xds

import (
	"testing"
	"time"
)

// TestSyncSlots: with one slot, a second stream's first request waits
// until the first stream has ACKed every type; a stream that closes, or
// whose slot times out, gives its slot back.
func TestSyncSlots(t *testing.T) {
	tr := newTracker(newMetrics(), nil)
	tr.slots = make(chan struct{}, 1)
	tr.slotTimeout = time.Hour
	never := make(chan struct{})
	tr.open(1)
	tr.open(2)
	tr.open(3)
	tr.admit(1, never, nil)
	tr.admit(1, never, nil) // later requests of a stream never wait
	second := make(chan struct{})
	go func() { tr.admit(2, never, nil); close(second) }()
	for i, typ := range Types {
		select {
		case <-second:
			t.Fatalf("stream 2 was admitted while stream 1 had ACKed %d of %d types", i, len(Types))
		default:
		}
		tr.mu.Lock()
		tr.ackedLocked(1, typ)
		tr.mu.Unlock()
	}
	select {
	case <-second:
	case <-time.After(10 * time.Second):
		t.Fatal("stream 2 still waits after stream 1 ACKed every type")
	}

	// Stream 2 holds the slot; 3 waits until 2 closes.
	third := make(chan struct{})
	go func() { tr.admit(3, never, nil); close(third) }()
	tr.closed(2)
	select {
	case <-third:
	case <-time.After(10 * time.Second):
		t.Fatal("stream 3 still waits after stream 2 closed")
	}

	// A stream waiting when the server stops returns.
	tr.open(4)
	stop := make(chan struct{})
	fourth := make(chan struct{})
	go func() { tr.admit(4, stop, nil); close(fourth) }()
	close(stop)
	select {
	case <-fourth:
	case <-time.After(10 * time.Second):
		t.Fatal("a waiting stream did not return when the server stopped")
	}

	// A slot times out.
	tr2 := newTracker(newMetrics(), nil)
	tr2.slots = make(chan struct{}, 1)
	tr2.slotTimeout = time.Millisecond
	tr2.open(1)
	tr2.open(2)
	tr2.admit(1, never, nil) // never ACKs
	done := make(chan struct{})
	go func() { tr2.admit(2, never, nil); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a slot held by a stream that never ACKs was not given back after its timeout")
	}
}
