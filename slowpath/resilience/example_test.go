package resilience_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/fibmesh/fibmesh/slowpath/resilience"
)

// The proxy's use of a Breaker per request: admit, forward, release; an
// overflow is answered 503 with response flag UO.
func ExampleBreaker_Admit() {
	b := resilience.NewBreaker(resilience.Limits{MaxConnections: 1, MaxPendingRequests: 1})
	held, _ := b.Admit(context.Background()) // one request in flight

	// A second request waits in the queue; give up after 10 ms.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	go func() {
		t, err := b.Admit(ctx)
		if err == nil {
			defer t.Release()
		}
	}()
	for b.Stats().Pending == 0 {
		time.Sleep(time.Millisecond)
	}

	// A third overflows at once.
	_, err := b.Admit(context.Background())
	var ov *resilience.Overflow
	if errors.As(err, &ov) {
		fmt.Println("503 UO:", ov.Kind)
	}
	held.Release()
	// Output: 503 UO: pending
}

func ExampleOutlier() {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	o := resilience.NewOutlier(resilience.OutlierConfig{
		Consecutive5xx: 3, EnforcingConsecutive5xx: 100,
		Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 100,
	}, func() time.Time { return now })
	host := netip.MustParseAddrPort("10.0.0.7:8080")
	for range 3 {
		if o.Result(host, true, 2) {
			fmt.Println("ejected")
		}
	}
	now = now.Add(30 * time.Second)
	fmt.Println("ejected after 30s:", o.Ejected(host))
	// Output:
	// ejected
	// ejected after 30s: false
}
