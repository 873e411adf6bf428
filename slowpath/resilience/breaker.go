package resilience

import (
	"context"
	"sync"
	"sync/atomic"
)

// Limits are a cluster's circuit breaker thresholds (Envoy's
// circuit_breakers.thresholds of the DEFAULT priority; Istio's
// DestinationRule trafficPolicy.connectionPool). 0 means no limit, as
// slowpath/xdsconf compiles Istio's "unset" (2³²−1) and Envoy's
// defaults (1024, 1024, 1024, 3) before they get here.
type Limits struct {
	// MaxConnections is max_connections (Istio tcp.maxConnections): for
	// an HTTP/1 upstream, the requests in flight at once, since each holds
	// one connection.
	MaxConnections uint32
	// MaxPendingRequests is max_pending_requests (Istio
	// http.http1MaxPendingRequests): requests queued while every
	// connection is busy.
	MaxPendingRequests uint32
	// MaxRequests is max_requests (Istio http.http2MaxRequests): requests
	// in flight at once, whatever the protocol.
	MaxRequests uint32
	// MaxRetries is max_retries (Istio http.maxRetries): retries in
	// flight at once.
	MaxRetries uint32
	// HTTP2 says the upstream speaks HTTP/2: one connection multiplexes
	// every request, so MaxConnections and the pending queue do not bound
	// requests.
	HTTP2 bool
}

// Overflow kinds: Overflow.Kind is one of these.
const (
	// OverflowPending: the pending queue was full (Envoy's
	// upstream_rq_pending_overflow).
	OverflowPending = "pending"
	// OverflowRequests: max_requests was reached when the request would
	// have been given a connection. Envoy counts it as
	// upstream_rq_pending_overflow too (ConnPoolImplBase::
	// attachStreamToClient); Stats keeps it apart.
	OverflowRequests = "requests"
	// OverflowRetries: max_retries was reached (Envoy's
	// upstream_rq_retry_overflow); the retry is not made.
	OverflowRetries = "retries"
	// OverflowConnections: a request wanted a new connection and
	// max_connections stopped it, so it waits in the pending queue
	// (Envoy's upstream_cx_overflow). No Acquire fails with this kind; it
	// is counted in BreakerStats.
	OverflowConnections = "connections"
)

// Overflow is the error of a request the circuit breaker refused. The
// proxy answers it as Envoy does: 503 with response flag UO
// (upstream overflow) and body "upstream connect error or disconnect/reset
// before headers. reset reason: overflow".
type Overflow struct {
	// Kind is OverflowPending, OverflowRequests, OverflowRetries or
	// OverflowConnections.
	Kind string
}

// Error names the overflow after Envoy's stat for it.
func (o *Overflow) Error() string {
	switch o.Kind {
	case OverflowPending:
		return "circuit breaker overflow: pending requests queue full (upstream_rq_pending_overflow)"
	case OverflowRequests:
		return "circuit breaker overflow: max requests reached (upstream_rq_pending_overflow)"
	case OverflowRetries:
		return "circuit breaker overflow: max retries reached (upstream_rq_retry_overflow)"
	case OverflowConnections:
		return "circuit breaker overflow: max connections reached (upstream_cx_overflow)"
	}
	return "circuit breaker overflow: " + o.Kind
}

// The errors are shared: an overflow allocates nothing.
var (
	errPending  = &Overflow{Kind: OverflowPending}
	errRequests = &Overflow{Kind: OverflowRequests}
)

// BreakerStats is a snapshot of a Breaker.
type BreakerStats struct {
	// Active is the requests in flight (Envoy's upstream_rq_active and
	// the remaining_rq gauge's complement).
	Active int
	// Connections is the connection slots held: the HTTP/1 requests in
	// flight (HTTP/2 requests hold none).
	Connections int
	// Pending is the requests in the pending queue
	// (upstream_rq_pending_active).
	Pending int
	// Retries is the retries in flight.
	Retries int
	// Overflow counts, cumulative, per kind. Envoy's
	// upstream_rq_pending_overflow is OverflowPending+OverflowRequests.
	OverflowPending, OverflowRequests, OverflowRetries, OverflowConnections uint64
}

// Breaker is one cluster's circuit breaker as one client pod's sidecar
// sees it.
//
// Envoy's HTTP/1 connection pool runs one request per connection, so a
// request in flight to an HTTP/1 upstream holds one of MaxConnections
// connection slots and one of MaxRequests request slots; when every
// connection is busy it waits in the pending queue (MaxPendingRequests),
// FIFO, and overflows at once when the queue is full. An HTTP/2 upstream
// multiplexes one connection: only MaxRequests bounds, and a request over
// it overflows at once (Envoy never queues once its HTTP/2 connection is
// up). Where Envoy finds max_requests reached at the moment it would give
// a request a connection (a ready one, or the one a queued request was
// waiting for) the request fails (ConnPoolImplBase::attachStreamToClient);
// Breaker does the same, with OverflowRequests.
//
// Where it differs from Envoy: connections are counted as requests in
// flight, not as sockets (the proxy pools its own connections, and an
// idle keep-alive connection does not hold a slot); and SetLimits keeps
// the counts, where a CDS update in Envoy builds a new cluster with fresh
// ones.
//
// A Breaker is safe for concurrent use. Its state is under one mutex,
// held for a few counter updates: an uncontended Acquire and release is
// about 30 ns.
type Breaker struct {
	mu     sync.Mutex
	limits Limits
	active uint32 // requests in flight
	conns  uint32 // connection slots held (HTTP/1 requests in flight)
	// retries and maxRetries (limits.MaxRetries) are atomic:
	// AcquireRetry does not take mu.
	retries, maxRetries atomic.Uint32
	queue               waitQueue
	pending             uint32 // len(queue)

	ovPending, ovRequests, ovConnections uint64
	ovRetries                            atomic.Uint64
}

// NewBreaker returns a breaker with limits l and nothing in flight.
func NewBreaker(l Limits) *Breaker {
	b := &Breaker{limits: l}
	b.maxRetries.Store(l.MaxRetries)
	return b
}

// SetLimits applies new limits and keeps the counts: requests admitted
// under the old limits stay admitted (lowering a limit revokes nothing,
// it only stops new admissions until the counts fall below it), and
// raising one admits waiters at once, oldest first. Requests already in
// the queue stay there even when MaxPendingRequests falls below their
// number.
func (b *Breaker) SetLimits(l Limits) {
	b.mu.Lock()
	b.limits = l
	b.maxRetries.Store(l.MaxRetries)
	b.dispatch()
	b.mu.Unlock()
}

// Limits returns the limits in force.
func (b *Breaker) Limits() Limits {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.limits
}

// Ticket is one admitted request's hold on the breaker, returned by
// Admit. The zero Ticket holds nothing.
type Ticket struct {
	b    *Breaker
	conn bool // holds a connection slot too
}

// Release returns the ticket's slots and admits the oldest waiter that
// now fits. Releasing twice through the same Ticket variable is a no-op;
// a copy of the Ticket is a second handle to the same slots, so release
// through one variable only, from one goroutine.
func (t *Ticket) Release() {
	b := t.b
	if b == nil {
		return
	}
	t.b = nil
	b.release(t.conn)
}

// Acquire admits one request: it returns at once when a slot is free,
// waits in the pending queue (bounded by MaxPendingRequests) until a slot
// frees or ctx ends, and fails at once with an *Overflow error when the
// queue is full (OverflowPending) or max requests is reached when the
// request would get a connection (OverflowRequests). When ctx ends first
// it returns ctx.Err() and holds nothing. ctx is only looked at when the
// request has to wait: with a slot free it is admitted whatever ctx. release frees the slots; it is
// idempotent and safe to call from any goroutine.
//
// Acquire allocates the release closure (two small objects); Admit is the
// same without allocating.
func (b *Breaker) Acquire(ctx context.Context) (release func(), err error) {
	t, err := b.Admit(ctx)
	if err != nil {
		return nil, err
	}
	r := &releaser{t: t}
	return r.release, nil
}

// releaser makes Acquire's release idempotent across goroutines.
type releaser struct {
	done atomic.Bool
	t    Ticket
}

func (r *releaser) release() {
	if r.done.CompareAndSwap(false, true) {
		r.t.Release()
	}
}

// Admit is Acquire returning a Ticket: no allocation when a slot is free.
// Call Release on the returned Ticket (defer t.Release()) when the
// request ends; an error Ticket is the zero Ticket.
func (b *Breaker) Admit(ctx context.Context) (Ticket, error) {
	b.mu.Lock()
	l := &b.limits
	connFree := l.HTTP2 || l.MaxConnections == 0 || b.conns < l.MaxConnections
	reqFree := l.MaxRequests == 0 || b.active < l.MaxRequests
	if b.pending == 0 && connFree {
		if !reqFree {
			b.ovRequests++
			b.mu.Unlock()
			return Ticket{}, errRequests
		}
		t := b.admitLocked()
		b.mu.Unlock()
		return t, nil
	}
	// Every connection is busy (or others wait already): queue behind
	// them, or overflow when the queue is full.
	if l.MaxPendingRequests != 0 && b.pending >= l.MaxPendingRequests {
		b.ovPending++
		b.mu.Unlock()
		return Ticket{}, errPending
	}
	if err := ctx.Err(); err != nil {
		b.mu.Unlock()
		return Ticket{}, err
	}
	if !connFree {
		// Envoy's pool counts the connection a queued request could not
		// open (tryCreateNewConnection).
		b.ovConnections++
	}
	w := &waiter{ready: make(chan struct{})}
	b.queue.push(w)
	b.pending++
	b.mu.Unlock()

	select {
	case <-w.ready:
		return w.ticket, w.err
	case <-ctx.Done():
	}
	b.mu.Lock()
	if w.queued {
		// Still waiting: leave the queue holding nothing.
		b.queue.remove(w)
		b.pending--
		b.mu.Unlock()
		return Ticket{}, ctx.Err()
	}
	b.mu.Unlock()
	// Decided while ctx ended: give back a slot it was given.
	<-w.ready
	if w.err == nil {
		w.ticket.Release()
	}
	return Ticket{}, ctx.Err()
}

// admitLocked takes the slots of one request. b.mu is held.
func (b *Breaker) admitLocked() Ticket {
	b.active++
	conn := !b.limits.HTTP2
	if conn {
		b.conns++
	}
	return Ticket{b: b, conn: conn}
}

func (b *Breaker) release(conn bool) {
	b.mu.Lock()
	b.active--
	if conn {
		b.conns--
	}
	if b.pending != 0 {
		b.dispatch()
	}
	b.mu.Unlock()
}

// dispatch admits waiters, oldest first, while a connection is free; one
// that finds max requests reached fails with OverflowRequests, as Envoy's
// pool fails a pending request it attaches over max_requests. b.mu is
// held.
func (b *Breaker) dispatch() {
	for b.pending != 0 {
		l := &b.limits
		if !l.HTTP2 && l.MaxConnections != 0 && b.conns >= l.MaxConnections {
			return
		}
		w := b.queue.pop()
		b.pending--
		if l.MaxRequests != 0 && b.active >= l.MaxRequests {
			b.ovRequests++
			w.err = errRequests
		} else {
			w.ticket = b.admitLocked()
		}
		close(w.ready)
	}
}

// AcquireRetry admits one retry: ok is false, and the retry must not be
// made, when MaxRetries retries are in flight already (Envoy's
// upstream_rq_retry_overflow; counted in Stats). The retry's request
// still goes through Acquire. release frees the retry slot; it is
// idempotent and safe to call from any goroutine.
func (b *Breaker) AcquireRetry() (release func(), ok bool) {
	if !b.TryRetry() {
		return nil, false
	}
	var done atomic.Bool
	return func() {
		if done.CompareAndSwap(false, true) {
			b.DoneRetry()
		}
	}, true
}

// TryRetry is AcquireRetry without the closure: when it returns true the
// caller must call DoneRetry exactly once when the retry ends.
func (b *Breaker) TryRetry() bool {
	for {
		n, limit := b.retries.Load(), b.maxRetries.Load()
		if limit != 0 && n >= limit {
			b.ovRetries.Add(1)
			return false
		}
		if b.retries.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// DoneRetry frees the retry slot TryRetry took.
func (b *Breaker) DoneRetry() {
	b.retries.Add(^uint32(0))
}

// Stats returns the counts now.
func (b *Breaker) Stats() BreakerStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return BreakerStats{
		Active:              int(b.active),
		Connections:         int(b.conns),
		Pending:             int(b.pending),
		Retries:             int(b.retries.Load()),
		OverflowPending:     b.ovPending,
		OverflowRequests:    b.ovRequests,
		OverflowRetries:     b.ovRetries.Load(),
		OverflowConnections: b.ovConnections,
	}
}

// waiter is one request in the pending queue.
type waiter struct {
	prev, next *waiter
	queued     bool
	// ready is closed once the waiter is decided: ticket admitted, or
	// err. Both are written under Breaker.mu before the close.
	ready  chan struct{}
	ticket Ticket
	err    error
}

// waitQueue is a FIFO of waiters with O(1) removal from the middle (a
// waiter whose context ends).
type waitQueue struct {
	head, tail *waiter
}

func (q *waitQueue) push(w *waiter) {
	w.queued = true
	w.prev = q.tail
	if q.tail != nil {
		q.tail.next = w
	} else {
		q.head = w
	}
	q.tail = w
}

func (q *waitQueue) pop() *waiter {
	w := q.head
	q.remove(w)
	return w
}

func (q *waitQueue) remove(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		q.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		q.tail = w.prev
	}
	w.prev, w.next, w.queued = nil, nil, false
}
