package resilience

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxEjectionTime is Envoy's max_ejection_time when unset (or
// base_ejection_time when that is longer).
const DefaultMaxEjectionTime = 300 * time.Second

// OutlierConfig is a cluster's consecutive-5xx outlier detection
// (Envoy's outlier_detection; Istio's DestinationRule
// trafficPolicy.outlierDetection). The values are resolved: the caller
// (slowpath/xdsconf) has applied Envoy's defaults for unset fields.
type OutlierConfig struct {
	// Consecutive5xx is consecutive_5xx: the failures in a row that
	// detect a host (Envoy's default 5). 0 turns detection off (Istio's
	// consecutive5xxErrors: 0).
	Consecutive5xx uint32
	// EnforcingConsecutive5xx is enforcing_consecutive_5xx: the
	// percentage of detections that eject (default 100).
	EnforcingConsecutive5xx uint32
	// Interval is interval: the period of Envoy's sweep, here the period
	// at which an ejection multiplier decays (default 10 s).
	Interval time.Duration
	// BaseEjectionTime is base_ejection_time (default 30 s): an ejection
	// lasts BaseEjectionTime × the host's multiplier.
	BaseEjectionTime time.Duration
	// MaxEjectionPercent is max_ejection_percent (default 10): the most
	// hosts of the cluster ejected at once, in percent.
	MaxEjectionPercent uint32
	// MaxEjectionTime is max_ejection_time: the longest an ejection
	// lasts. 0 is Envoy's default, max(300 s, BaseEjectionTime).
	MaxEjectionTime time.Duration
	// AlwaysEjectOneHost is always_eject_one_host: eject a detected host
	// when none is ejected even if max_ejection_percent would forbid it
	// (off by default, as in Envoy: with 10% and fewer than 10 hosts
	// nothing is ever ejected).
	AlwaysEjectOneHost bool
}

// Validate reports what Envoy would refuse in c, naming the field.
func (c OutlierConfig) Validate() error {
	var errs []error
	if c.EnforcingConsecutive5xx > 100 {
		errs = append(errs, fmt.Errorf("outlier detection: enforcing_consecutive_5xx %d is over 100 (a percentage)", c.EnforcingConsecutive5xx))
	}
	if c.MaxEjectionPercent > 100 {
		errs = append(errs, fmt.Errorf("outlier detection: max_ejection_percent %d is over 100 (a percentage)", c.MaxEjectionPercent))
	}
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("outlier detection: interval %v must be positive (Envoy's default is 10s)", c.Interval))
	}
	if c.BaseEjectionTime <= 0 {
		errs = append(errs, fmt.Errorf("outlier detection: base_ejection_time %v must be positive (Envoy's default is 30s)", c.BaseEjectionTime))
	}
	if c.MaxEjectionTime != 0 && c.MaxEjectionTime < c.BaseEjectionTime {
		errs = append(errs, fmt.Errorf("outlier detection: max_ejection_time %v is shorter than base_ejection_time %v; raise it or leave it unset", c.MaxEjectionTime, c.BaseEjectionTime))
	}
	return errors.Join(errs...)
}

// maxEjection is the effective max_ejection_time.
func (c *OutlierConfig) maxEjection() time.Duration {
	if c.MaxEjectionTime == 0 {
		return max(DefaultMaxEjectionTime, c.BaseEjectionTime)
	}
	return max(c.MaxEjectionTime, c.BaseEjectionTime)
}

// OutlierStats is a snapshot of an Outlier (Envoy's outlier_detection.*
// stats of the cluster, for one client pod).
type OutlierStats struct {
	// Ejected is the hosts ejected now (ejections_active).
	Ejected int
	// Ejections is the ejections made, cumulative
	// (ejections_enforced_consecutive_5xx).
	Ejections uint64
	// Detected is the detections, ejected or not
	// (ejections_detected_consecutive_5xx).
	Detected uint64
	// Overflow is the detections max_ejection_percent kept from ejecting
	// (ejections_overflow).
	Overflow uint64
	// NotEnforced is the detections enforcing_consecutive_5xx's draw kept
	// from ejecting.
	NotEnforced uint64
}

// Outlier is consecutive-5xx outlier detection for one cluster, as one
// client pod's sidecar sees it (each sidecar detects on its own traffic
// only, as in Istio).
//
// Envoy's semantics (source/common/upstream/outlier_detection_impl.cc):
// a 5xx, or a connect failure, reset or timeout (which Envoy maps to
// 503/504), adds one to the host's consecutive counter and any other
// response sets it to 0. When it reaches Consecutive5xx the host is
// detected and the counter restarts at 0, ejected or not. The detection
// ejects when ejecting would keep the ejected hosts within
// MaxEjectionPercent of the cluster's hosts (100×(ejected+1)/hosts ≤
// MaxEjectionPercent, or none ejected and AlwaysEjectOneHost), else it
// counts an overflow; then EnforcingConsecutive5xx percent of detections
// eject (a random draw). An ejection lasts min(BaseEjectionTime × m,
// max ejection time), where the host's multiplier m went up by one at
// the ejection (while BaseEjectionTime × m < max + base) and goes down by
// one each Interval the host then stays un-ejected. Results for a host
// while it is ejected are ignored, so after the ejection its counter
// starts at 0.
//
// Where it differs from Envoy: there is no sweep timer. An ejection ends
// exactly at its deadline (Envoy ends it at the first sweep after, up to
// one Interval late), and the multiplier decays by one per whole Interval
// since the ejection ended (Envoy's sweeps are phased with the cluster,
// not the host: one decrement fewer at most). Detection runs inline on the
// request's goroutine (Envoy posts it to the main thread). Jitter
// (max_ejection_time_jitter), success-rate, failure-percentage and
// gateway-error detection are not supported.
//
// An Outlier is safe for concurrent use. Ejected and a successful Result
// take no lock and allocate nothing; a failed Result takes a mutex.
type Outlier struct {
	now   func() time.Time
	epoch time.Time

	// hosts is copied on write (a new host, Forget) and read without a
	// lock.
	hosts atomic.Pointer[hostMap]

	mu   sync.Mutex
	cfg  OutlierConfig
	rand func() uint64

	ejections, detected, overflow, notEnforced uint64
}

type hostMap map[netip.AddrPort]*hostState

// hostState is one host's detector. Times are nanoseconds on the
// Outlier's clock (see Outlier.clock), never 0.
type hostState struct {
	// consecutive is the 5xx in a row; a success stores 0 without a lock,
	// failures add under Outlier.mu.
	consecutive atomic.Uint32
	// until is when the last ejection ends (0: never ejected).
	until atomic.Int64

	// Under Outlier.mu:
	ejectedAt int64  // start of the last ejection
	mult      uint32 // the ejection multiplier as of the last ejection
}

// NewOutlier returns a detector with config cfg and clock now (time.Now
// in production, a fake in tests); its random draws come from
// math/rand/v2 until SetRand.
func NewOutlier(cfg OutlierConfig, now func() time.Time) *Outlier {
	o := &Outlier{now: now, epoch: now(), cfg: cfg, rand: rand.Uint64}
	o.hosts.Store(&hostMap{})
	return o
}

// SetRand replaces the random source of enforcing_consecutive_5xx's draw:
// a detection is enforced when r()%100 < EnforcingConsecutive5xx, as
// Envoy's runtime featureEnabled draws. r is called under a lock.
func (o *Outlier) SetRand(r func() uint64) {
	o.mu.Lock()
	o.rand = r
	o.mu.Unlock()
}

// SetConfig applies a new config and keeps every host's state. The
// ejections in force end by the new BaseEjectionTime and max ejection
// time, as Envoy's sweep would compute them.
func (o *Outlier) SetConfig(cfg OutlierConfig) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cfg = cfg
	now := o.clock()
	for _, h := range *o.hosts.Load() {
		if h.until.Load() > now {
			h.until.Store(h.ejectedAt + int64(o.ejectionTime(h.mult)))
		}
	}
}

// Config returns the config in force.
func (o *Outlier) Config() OutlierConfig {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.cfg
}

// clock is the time now in nanoseconds since the Outlier was made, plus 1
// so that no time is 0. It keeps time.Time's monotonic reading.
func (o *Outlier) clock() int64 {
	return int64(o.now().Sub(o.epoch)) + 1
}

// ejectionTime is how long an ejection with multiplier m lasts. o.mu is
// held.
func (o *Outlier) ejectionTime(m uint32) time.Duration {
	return min(o.cfg.BaseEjectionTime*time.Duration(m), o.cfg.maxEjection())
}

// Result records one request's outcome at host: failure is a 5xx
// response, or a connect failure, reset or timeout (which Envoy counts as
// 5xx). hosts is the number of hosts in the cluster now, for
// MaxEjectionPercent (0: the hosts this detector has seen fail). It
// returns true when this result ejected the host.
func (o *Outlier) Result(host netip.AddrPort, failure bool, hosts int) (ejected bool) {
	if !failure {
		if h := (*o.hosts.Load())[host]; h != nil && h.consecutive.Load() != 0 {
			h.consecutive.Store(0)
		}
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	h := o.hostLocked(host)
	now := o.clock()
	if h.until.Load() > now {
		return false // ejected: Envoy's detector ignores it
	}
	if o.cfg.Consecutive5xx == 0 || h.consecutive.Add(1) < o.cfg.Consecutive5xx {
		return false
	}
	h.consecutive.Store(0)
	o.detected++

	all := *o.hosts.Load()
	if hosts <= 0 {
		hosts = len(all)
	}
	active := 0
	for _, x := range all {
		if x.until.Load() > now {
			active++
		}
	}
	pct := uint64(min(o.cfg.MaxEjectionPercent, 100))
	if 100*uint64(active+1) > pct*uint64(hosts) && !(o.cfg.AlwaysEjectOneHost && active == 0) {
		o.overflow++
		return false
	}
	if e := o.cfg.EnforcingConsecutive5xx; e < 100 && o.rand()%100 >= uint64(e) {
		o.notEnforced++
		return false
	}

	// The multiplier decays by one per Interval since the last ejection
	// ended, then goes up by one for this one.
	m := h.mult
	if m > 0 && o.cfg.Interval > 0 {
		if idle := now - h.until.Load(); idle > 0 {
			m -= uint32(min(int64(m), idle/int64(o.cfg.Interval)))
		}
	}
	base := o.cfg.BaseEjectionTime
	if base*time.Duration(m) < o.cfg.maxEjection()+base {
		m++
	}
	h.mult = m
	h.ejectedAt = now
	h.until.Store(now + int64(o.ejectionTime(m)))
	o.ejections++
	return true
}

// hostLocked returns host's state, adding it. o.mu is held.
func (o *Outlier) hostLocked(host netip.AddrPort) *hostState {
	old := *o.hosts.Load()
	if h := old[host]; h != nil {
		return h
	}
	h := &hostState{}
	m := make(hostMap, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[host] = h
	o.hosts.Store(&m)
	return h
}

// Ejected reports whether host is ejected now: the load balancer skips it
// (Envoy's FAILED_OUTLIER_CHECK; the proxy applies Envoy's panic
// threshold over it).
func (o *Outlier) Ejected(host netip.AddrPort) bool {
	h := (*o.hosts.Load())[host]
	if h == nil {
		return false
	}
	u := h.until.Load()
	return u != 0 && o.clock() < u
}

// Forget drops the hosts keep returns false for (hosts gone from the
// cluster's EDS assignment), as Envoy drops their detectors; a host that
// comes back starts afresh.
func (o *Outlier) Forget(keep func(netip.AddrPort) bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	old := *o.hosts.Load()
	m := make(hostMap, len(old))
	for k, v := range old {
		if keep(k) {
			m[k] = v
		}
	}
	if len(m) != len(old) {
		o.hosts.Store(&m)
	}
}

// Stats returns the counts now.
func (o *Outlier) Stats() OutlierStats {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.clock()
	s := OutlierStats{Ejections: o.ejections, Detected: o.detected, Overflow: o.overflow, NotEnforced: o.notEnforced}
	for _, h := range *o.hosts.Load() {
		if h.until.Load() > now {
			s.Ejected++
		}
	}
	return s
}
