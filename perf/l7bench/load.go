package l7bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// HeaderXFCC is the response header in which the bench's server returns
// the x-forwarded-client-cert the request reached it with (none: no
// header): the proof that the request went through an L7 proxy that
// verified the caller's certificate, and whose.
const HeaderXFCC = "X-Bench-Xfcc"

// LoadOptions configure RunLoad.
type LoadOptions struct {
	// Addr is the host:port dialled; Host the request's Host header
	// (default Addr); Path its path (default /).
	Addr, Host, Path string
	// Conns is the number of keep-alive connections, each carrying one
	// request at a time (default 32).
	Conns int
	// Rate, when above 0, makes the run open loop: requests are due at
	// a constant rate (Intended) whatever the answers, and each one's
	// latency is measured from when it was due, so time spent waiting
	// for a free connection counts (no coordinated omission). At 0 the
	// run is closed loop: every connection sends its next request as
	// soon as the last answer is read, as fast as the path allows.
	Rate float64
	// Warmup is run first and not measured (connections and tunnels are
	// set up in it); Duration is measured.
	Warmup, Duration time.Duration
	// Timeout bounds one request (default 2 s).
	Timeout time.Duration
	// RequestSize pads the request head with a header to about this many
	// bytes (default 256: a browser's or an SDK's request is a few
	// hundred bytes of headers); BodySize is the size every answer's
	// body must have (0: not checked).
	RequestSize, BodySize int
}

func (o LoadOptions) withDefaults() LoadOptions {
	if o.Conns <= 0 {
		o.Conns = 32
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.Host == "" {
		o.Host = o.Addr
	}
	if o.Path == "" {
		o.Path = "/"
	}
	if o.RequestSize <= 0 {
		o.RequestSize = 256
	}
	return o
}

// Request returns the bytes of the run's HTTP/1.1 request: GET o.Path
// with Host, User-Agent, Accept and an X-Bench-Pad header that brings it
// to o.RequestSize bytes (never shorter than the head without padding).
func (o LoadOptions) Request() []byte {
	o = o.withDefaults()
	head := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: fibmesh-bench-l7\r\nAccept: */*\r\n", o.Path, o.Host)
	const padHead = "X-Bench-Pad: \r\n"
	pad := max(0, o.RequestSize-len(head)-len(padHead)-2)
	return []byte(head + padHead[:len(padHead)-2] + strings.Repeat("p", pad) + "\r\n\r\n")
}

// LoadResult is one run of the generator: what it measured over
// Duration, warm-up excluded.
type LoadResult struct {
	// Requests answered with 200 and a body of the right size, whose
	// send was due (open loop) or which completed (closed loop) inside
	// the measured window; Errors, those that failed.
	Requests int64 `json:"requests"`
	Errors   int64 `json:"errors"`
	// Answered counts every request answered, the warm-up's too: what
	// the proxies' CPU, read around the whole run, is divided by.
	Answered int64 `json:"answered"`
	// Due is how many requests the schedule had due in the window (open
	// loop; 0 in closed loop).
	Due     int64   `json:"due,omitempty"`
	Seconds float64 `json:"seconds"`
	// Drain is how long after the window's end the last of its answers
	// came (seconds): near 0 when the path keeps up with an open loop's
	// rate, the backlog's length when it does not.
	Drain float64 `json:"drainSeconds"`
	// Latency of the requests counted in Requests.
	Latency Summary `json:"latency"`
	// XFCC counts the answers that carried HeaderXFCC; XFCCSample is the
	// first such header's value.
	XFCC       int64  `json:"xfcc"`
	XFCCSample string `json:"xfccSample,omitempty"`
	FirstError string `json:"firstError,omitempty"`
}

// Rate is requests answered per second of the window.
func (r LoadResult) Rate() float64 {
	if r.Seconds <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Seconds
}

// ErrorRate is the share of the window's requests that failed.
func (r LoadResult) ErrorRate() float64 {
	if n := r.Requests + r.Errors; n > 0 {
		return float64(r.Errors) / float64(n)
	}
	return 0
}

// worker is one keep-alive connection and what it measured.
type worker struct {
	o         LoadOptions
	req       []byte
	conn      net.Conn
	br        *bufio.Reader
	lat       Latencies
	ok, errs  int64
	answered  int64 // warm-up included
	xfcc      int64
	xfccFirst string
	firstErr  error
	last      time.Time // when the last counted answer came
}

// RunLoad runs the generator against o.Addr in the caller's network
// namespace (bench-l7 load is started inside a client pod's) and returns
// what it measured. It returns early, with what it has, when ctx ends.
func RunLoad(ctx context.Context, o LoadOptions) LoadResult {
	o = o.withDefaults()
	req := o.Request()
	ws := make([]*worker, o.Conns)
	for i := range ws {
		ws[i] = &worker{o: o, req: req}
	}
	start := time.Now()
	measure := start.Add(o.Warmup)
	end := measure.Add(o.Duration)
	var (
		wg  sync.WaitGroup
		due int64
	)
	if o.Rate > 0 {
		// Every due request is queued with its intended send time; a
		// connection takes the oldest when it is free. The queue holds
		// the whole run, so the schedule never waits for the server.
		n := int64((o.Warmup+o.Duration).Seconds()*o.Rate) + 1
		jobs := make(chan time.Time, min(n, 1<<22))
		for _, w := range ws {
			wg.Go(func() {
				for t := range jobs {
					w.do(ctx, t, !t.Before(measure))
				}
			})
		}
		p := newPacer()
	schedule:
		for i := int64(0); ; i++ {
			t := Intended(start, o.Rate, i)
			if !t.Before(end) {
				break
			}
			if p.sleepUntil(ctx, t) != nil {
				break
			}
			if !t.Before(measure) {
				due++
			}
			select {
			case jobs <- t:
			case <-ctx.Done():
				break schedule
			}
		}
		p.stop()
		close(jobs)
	} else {
		for _, w := range ws {
			wg.Go(func() {
				for ctx.Err() == nil {
					t := time.Now()
					if !t.Before(end) {
						return
					}
					w.do(ctx, t, !t.Before(measure))
				}
			})
		}
	}
	wg.Wait()
	var (
		res LoadResult
		all Latencies
	)
	for _, w := range ws {
		if w.conn != nil {
			w.conn.Close()
		}
		res.Requests += w.ok
		res.Answered += w.answered
		res.Errors += w.errs
		res.XFCC += w.xfcc
		if res.XFCCSample == "" {
			res.XFCCSample = w.xfccFirst
		}
		if res.FirstError == "" && w.firstErr != nil {
			res.FirstError = w.firstErr.Error()
		}
		all = append(all, w.lat...)
		if d := w.last.Sub(end).Seconds(); d > res.Drain {
			res.Drain = d
		}
	}
	res.Due = due
	res.Seconds = o.Duration.Seconds()
	if ctx.Err() != nil {
		res.Seconds = max(0, time.Since(measure).Seconds())
	}
	res.Latency = all.Summarize()
	return res
}

// do sends one request, due at t, and reads its answer; counted says
// whether it falls in the measured window.
func (w *worker) do(ctx context.Context, t time.Time, counted bool) {
	xfcc, err := w.roundTrip(ctx)
	if err == nil {
		w.answered++
	}
	if !counted {
		return
	}
	if err != nil {
		w.errs++
		if w.firstErr == nil {
			w.firstErr = err
		}
		return
	}
	w.ok++
	w.last = time.Now()
	w.lat = append(w.lat, w.last.Sub(t))
	if xfcc != "" {
		w.xfcc++
		if w.xfccFirst == "" {
			w.xfccFirst = xfcc
		}
	}
}

// roundTrip writes the request on the worker's connection (dialling one
// if it has none) and reads the answer whole; on any failure the
// connection is closed, and the next request dials a new one.
func (w *worker) roundTrip(ctx context.Context) (xfcc string, err error) {
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	if w.conn == nil {
		d := net.Dialer{Timeout: w.o.Timeout}
		c, err := d.DialContext(ctx, "tcp", w.o.Addr)
		if err != nil {
			return "", err
		}
		w.conn, w.br = c, bufio.NewReaderSize(c, 16<<10)
	}
	fail := func(err error) (string, error) {
		w.conn.Close()
		w.conn = nil
		return "", err
	}
	if err := w.conn.SetDeadline(time.Now().Add(w.o.Timeout)); err != nil {
		return fail(err)
	}
	if _, err := w.conn.Write(w.req); err != nil {
		return fail(fmt.Errorf("write to %s: %w", w.o.Addr, err))
	}
	resp, err := http.ReadResponse(w.br, nil)
	if err != nil {
		return fail(fmt.Errorf("read the answer from %s: %w", w.o.Addr, err))
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return fail(fmt.Errorf("read the body from %s: %w", w.o.Addr, err))
	}
	if resp.StatusCode != http.StatusOK {
		return fail(fmt.Errorf("%s answered %s", w.o.Addr, resp.Status))
	}
	if w.o.BodySize > 0 && n != int64(w.o.BodySize) {
		return fail(fmt.Errorf("%s answered %d bytes of body, want %d", w.o.Addr, n, w.o.BodySize))
	}
	if resp.Close {
		w.conn.Close()
		w.conn = nil
	}
	return resp.Header.Get(HeaderXFCC), nil
}
