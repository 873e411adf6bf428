package resilience

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeClock is a clock the test moves; safe for concurrent reads.
type fakeClock struct{ ns atomic.Int64 }

var clockBase = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func (c *fakeClock) now() time.Time          { return clockBase.Add(time.Duration(c.ns.Load())) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func hostAddr(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 8080)
}

// istioDefaults is Envoy's defaults with Istio's usual 100% ejection.
var istioDefaults = OutlierConfig{
	Consecutive5xx: 5, EnforcingConsecutive5xx: 100,
	Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 100,
}

func TestOutlier(t *testing.T) {
	// An event: advance the clock, then record n results (5xx or ok) at
	// host, or check Ejected; want is the last Result's return or
	// Ejected's answer.
	type ev struct {
		adv   time.Duration
		host  int
		do    string // "5xx", "ok", "ejected?"
		n     int    // results to record (default 1)
		hosts int    // cluster size (default 3)
		want  bool
	}
	fail5 := func(host int) ev { return ev{do: "5xx", host: host, n: 5, want: true} }
	tests := []struct {
		name  string
		cfg   OutlierConfig
		rand  []uint64
		evs   []ev
		stats OutlierStats
	}{
		{
			name: "five 5xx in a row eject for base time",
			cfg:  istioDefaults,
			evs: []ev{
				{do: "5xx", n: 4},
				{do: "ejected?"},
				{do: "5xx", want: true},
				{do: "ejected?", want: true},
				{do: "ejected?", host: 1},
				{adv: 30*time.Second - 1, do: "ejected?", want: true},
				{adv: 1, do: "ejected?"},
			},
			stats: OutlierStats{Ejections: 1, Detected: 1},
		},
		{
			name: "a success resets the counter",
			cfg:  istioDefaults,
			evs: []ev{
				{do: "5xx", n: 4},
				{do: "ok"},
				{do: "5xx", n: 4},
				{do: "ejected?"},
				{do: "5xx", want: true},
			},
			stats: OutlierStats{Ejected: 1, Ejections: 1, Detected: 1},
		},
		{
			name: "results while ejected are ignored; the counter starts at 0 after",
			cfg:  istioDefaults,
			evs: []ev{
				fail5(0),
				{adv: time.Second, do: "5xx", n: 20},
				{adv: 29 * time.Second, do: "ejected?"},
				{do: "5xx", n: 4},
				{do: "ejected?"},
				{do: "5xx", want: true},
				// Second ejection right after the first: multiplier 2.
				{adv: 60*time.Second - 1, do: "ejected?", want: true},
				{adv: 1, do: "ejected?"},
			},
			stats: OutlierStats{Ejections: 2, Detected: 2},
		},
		{
			name: "the multiplier decays one per interval un-ejected",
			cfg:  istioDefaults,
			evs: []ev{
				fail5(0), // m=1, ends at 30s
				{adv: 30 * time.Second},
				fail5(0), // m=2, 60s, ends at 90s
				{adv: 60 * time.Second, do: "ejected?"},
				{adv: 10 * time.Second}, // one interval: m=1
				fail5(0),                // m=2 again: 60s
				{adv: 60*time.Second - 1, do: "ejected?", want: true},
				{adv: 1, do: "ejected?"},
				{adv: 25 * time.Second}, // two intervals: m=0
				fail5(0),                // m=1: 30s
				{adv: 30*time.Second - 1, do: "ejected?", want: true},
				{adv: 1, do: "ejected?"},
			},
			stats: OutlierStats{Ejections: 4, Detected: 4},
		},
		{
			name: "ejection time is capped by max ejection time",
			cfg:  OutlierConfig{Consecutive5xx: 1, EnforcingConsecutive5xx: 100, Interval: time.Hour, BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 100, MaxEjectionTime: 70 * time.Second},
			evs: []ev{
				{do: "5xx", want: true},                        // 30s
				{adv: 30 * time.Second, do: "5xx", want: true}, // 60s
				{adv: 60 * time.Second, do: "5xx", want: true}, // 90s → 70s
				{adv: 70*time.Second - 1, do: "ejected?", want: true},
				{adv: 1, do: "5xx", want: true}, // still 70s
				{adv: 70*time.Second - 1, do: "ejected?", want: true},
				{adv: 1, do: "ejected?"},
			},
			stats: OutlierStats{Ejections: 4, Detected: 4},
		},
		{
			name: "default max ejection time is 300s",
			cfg:  OutlierConfig{Consecutive5xx: 1, EnforcingConsecutive5xx: 100, Interval: time.Hour, BaseEjectionTime: 200 * time.Second, MaxEjectionPercent: 100},
			evs: []ev{
				{do: "5xx", want: true},                         // 200s
				{adv: 200 * time.Second, do: "5xx", want: true}, // 400s → 300s
				{adv: 300*time.Second - 1, do: "ejected?", want: true},
				{adv: 1, do: "ejected?"},
			},
			stats: OutlierStats{Ejections: 2, Detected: 2},
		},
		{
			name: "max ejection percent 10 of 2 hosts ejects none (Envoy)",
			cfg:  OutlierConfig{Consecutive5xx: 5, EnforcingConsecutive5xx: 100, Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 10},
			evs: []ev{
				{do: "5xx", n: 5, hosts: 2},
				{do: "ejected?"},
				{do: "5xx", n: 4, hosts: 2}, // the counter restarted
				{do: "5xx", hosts: 2},
			},
			stats: OutlierStats{Detected: 2, Overflow: 2},
		},
		{
			name: "always eject one host overrides the percentage for the first",
			cfg:  OutlierConfig{Consecutive5xx: 5, EnforcingConsecutive5xx: 100, Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 10, AlwaysEjectOneHost: true},
			evs: []ev{
				{do: "5xx", n: 5, hosts: 2, want: true},
				{do: "5xx", n: 5, hosts: 2, host: 1},
				{do: "ejected?", host: 1},
			},
			stats: OutlierStats{Ejected: 1, Ejections: 1, Detected: 2, Overflow: 1},
		},
		{
			name: "max ejection percent of 10 hosts at 20",
			cfg:  OutlierConfig{Consecutive5xx: 5, EnforcingConsecutive5xx: 100, Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 20},
			evs: []ev{
				{do: "5xx", n: 5, hosts: 10, host: 0, want: true},
				{do: "5xx", n: 5, hosts: 10, host: 1, want: true},
				{do: "5xx", n: 5, hosts: 10, host: 2},
				// An ejection ends: room for one more.
				{adv: 30 * time.Second, do: "5xx", n: 5, hosts: 10, host: 2, want: true},
			},
			stats: OutlierStats{Ejected: 1, Ejections: 3, Detected: 4, Overflow: 1},
		},
		{
			name: "max ejection percent 100 ejects every host",
			cfg:  istioDefaults,
			evs: []ev{
				fail5(0), fail5(1), fail5(2),
			},
			stats: OutlierStats{Ejected: 3, Ejections: 3, Detected: 3},
		},
		{
			name: "enforcing percentage draws",
			cfg:  OutlierConfig{Consecutive5xx: 2, EnforcingConsecutive5xx: 50, Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 100},
			rand: []uint64{150, 149}, // 50 ≥ 50: not enforced; 49 < 50: enforced
			evs: []ev{
				{do: "5xx", n: 2},
				{do: "5xx", n: 2, want: true},
			},
			stats: OutlierStats{Ejected: 1, Ejections: 1, Detected: 2, NotEnforced: 1},
		},
		{
			name: "consecutive 5xx 0 turns detection off",
			cfg:  OutlierConfig{Consecutive5xx: 0, EnforcingConsecutive5xx: 100, Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 100},
			evs: []ev{
				{do: "5xx", n: 100},
				{do: "ejected?"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			var clk fakeClock
			o := NewOutlier(tt.cfg, clk.now)
			if tt.rand != nil {
				draws := tt.rand
				o.SetRand(func() uint64 {
					r := draws[0]
					draws = draws[1:]
					return r
				})
			} else {
				o.SetRand(func() uint64 { t.Fatal("random draw at enforcing 100"); return 0 })
			}
			for i, e := range tt.evs {
				clk.advance(e.adv)
				hosts := e.hosts
				if hosts == 0 {
					hosts = 3
				}
				n := max(e.n, 1)
				var got bool
				switch e.do {
				case "5xx", "ok":
					for range n {
						got = o.Result(hostAddr(e.host), e.do == "5xx", hosts)
					}
				case "ejected?":
					got = o.Ejected(hostAddr(e.host))
				case "":
					continue
				default:
					t.Fatalf("event %d: unknown %q", i, e.do)
				}
				if got != e.want {
					t.Fatalf("event %d (+%v host %d %s ×%d): got %v, want %v", i, e.adv, e.host, e.do, n, got, e.want)
				}
			}
			if d := cmp.Diff(tt.stats, o.Stats()); d != "" {
				t.Errorf("stats (-want +got):\n%s", d)
			}
		})
	}
}

func TestOutlierSetConfigAndForget(t *testing.T) {
	var clk fakeClock
	o := NewOutlier(istioDefaults, clk.now)
	o.Result(hostAddr(0), true, 0) // unknown cluster size: hosts seen
	for range 5 {
		o.Result(hostAddr(1), true, 0)
	}
	if !o.Ejected(hostAddr(1)) {
		t.Fatal("host 1 not ejected")
	}
	// A shorter base ejection time ends the ejection in force sooner.
	cfg := istioDefaults
	cfg.BaseEjectionTime = 5 * time.Second
	o.SetConfig(cfg)
	if got := o.Config(); got != cfg {
		t.Fatalf("Config() = %+v", got)
	}
	clk.advance(5 * time.Second)
	if o.Ejected(hostAddr(1)) {
		t.Fatal("host 1 still ejected after the new base time")
	}
	for range 5 {
		o.Result(hostAddr(1), true, 0)
	}
	o.Forget(func(a netip.AddrPort) bool { return a != hostAddr(1) })
	if o.Ejected(hostAddr(1)) {
		t.Fatal("forgotten host still ejected")
	}
	if s := o.Stats(); s.Ejected != 0 || s.Ejections != 2 {
		t.Fatalf("stats after Forget: %+v", s)
	}
	// Host 0 kept its counter (1 failure): four more eject it.
	for i := range 4 {
		if got := o.Result(hostAddr(0), true, 2); got != (i == 3) {
			t.Fatalf("failure %d: ejected %v", i+2, got)
		}
	}
	// A forgotten host that comes back starts afresh: multiplier 1.
	for range 5 {
		o.Result(hostAddr(1), true, 2)
	}
	clk.advance(5 * time.Second)
	if o.Ejected(hostAddr(1)) {
		t.Fatal("returning host ejected for longer than base time")
	}
}

func TestOutlierConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*OutlierConfig)
		want string // substring; "" for valid
	}{
		{"defaults", func(*OutlierConfig) {}, ""},
		{"enforcing", func(c *OutlierConfig) { c.EnforcingConsecutive5xx = 101 }, "enforcing_consecutive_5xx 101"},
		{"percent", func(c *OutlierConfig) { c.MaxEjectionPercent = 200 }, "max_ejection_percent 200"},
		{"interval", func(c *OutlierConfig) { c.Interval = 0 }, "interval 0s must be positive"},
		{"base", func(c *OutlierConfig) { c.BaseEjectionTime = -1 }, "base_ejection_time"},
		{"max below base", func(c *OutlierConfig) { c.MaxEjectionTime = time.Second }, "max_ejection_time 1s is shorter than base_ejection_time 30s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := istioDefaults
			tt.mod(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestOutlierConcurrent runs Result and Ejected from many goroutines
// (for -race): a host that always fails ends up ejected, one that always
// succeeds never does.
func TestOutlierConcurrent(t *testing.T) {
	var clk fakeClock
	o := NewOutlier(istioDefaults, clk.now)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				h := (g + i) % 4
				o.Result(hostAddr(h), h == 0, 4)
				o.Ejected(hostAddr(h))
				if i%100 == 0 {
					clk.advance(time.Second)
				}
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			o.Stats()
			o.Forget(func(netip.AddrPort) bool { return true })
		}
	})
	wg.Wait()
	s := o.Stats()
	if s.Ejections == 0 {
		t.Fatalf("the failing host was never ejected: %+v", s)
	}
	for h := 1; h < 4; h++ {
		if o.Ejected(hostAddr(h)) {
			t.Fatalf("healthy host %d ejected", h)
		}
	}
}

func TestOutlierHotPathAllocs(t *testing.T) {
	var clk fakeClock
	o := NewOutlier(istioDefaults, clk.now)
	hosts := make([]netip.AddrPort, 16)
	for i := range hosts {
		hosts[i] = hostAddr(i)
		o.Result(hosts[i], true, len(hosts)) // known hosts, counter 1
	}
	for _, tt := range []struct {
		name string
		f    func()
	}{
		{"success", func() { o.Result(hosts[3], false, len(hosts)) }},
		{"failure", func() { o.Result(hosts[4], true, len(hosts)); o.Result(hosts[4], false, len(hosts)) }},
		{"ejected", func() { o.Ejected(hosts[5]) }},
	} {
		if n := testing.AllocsPerRun(1000, tt.f); n != 0 {
			t.Errorf("%s allocates %v times, want 0", tt.name, n)
		}
	}
}

func BenchmarkOutlier(b *testing.B) {
	o := NewOutlier(istioDefaults, time.Now)
	hosts := make([]netip.AddrPort, 64)
	for i := range hosts {
		hosts[i] = netip.MustParseAddrPort(fmt.Sprintf("10.1.%d.%d:8080", i/256, i%256))
		o.Result(hosts[i], true, len(hosts))
	}
	o.Result(hosts[0], true, len(hosts))
	for range 5 {
		o.Result(hosts[1], true, len(hosts)) // hosts[1] ejected: Ejected reads the clock
	}
	b.Run("ResultSuccess", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			o.Result(hosts[i&63], false, len(hosts))
			i++
		}
	})
	b.Run("ResultFailure", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			o.Result(hosts[2], true, len(hosts))
			o.Result(hosts[2], false, len(hosts))
		}
	})
	b.Run("Ejected", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			o.Ejected(hosts[i&63])
			i++
		}
	})
	b.Run("EjectedParallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				o.Ejected(hosts[i&63])
				i++
			}
		})
	})
}
