package l4bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Ping is what each connection of the connections-per-second run sends
// and expects back from the echo app. It must not start like an HTTP
// request (the echo app would answer it as HTTP): 'x' starts no method.
var Ping = []byte("x-bench-l4-ping\n")

// CPSResult is one connections-per-second run: connections that completed
// (connect, send Ping, read it back, close) and those that failed.
type CPSResult struct {
	Conns   int64   `json:"conns"`
	Errors  int64   `json:"errors"`
	Seconds float64 `json:"seconds"`
	// FirstError is the first failure, as text.
	FirstError string `json:"firstError,omitempty"`
}

// Rate is completed connections per second.
func (r CPSResult) Rate() float64 {
	if r.Seconds <= 0 {
		return 0
	}
	return float64(r.Conns) / r.Seconds
}

// ErrorRate is the share of attempts that failed.
func (r CPSResult) ErrorRate() float64 {
	if n := r.Conns + r.Errors; n > 0 {
		return float64(r.Errors) / float64(n)
	}
	return 0
}

// CPSOptions configure RunCPS.
type CPSOptions struct {
	// Addr is host:port of an echo server.
	Addr string
	// Workers each make one connection after the other (default 8).
	Workers int
	// Duration of the run; Count, when above 0, stops each worker after
	// that many attempts instead (a probe).
	Duration time.Duration
	Count    int
	// Timeout bounds one connection (default 2 s).
	Timeout time.Duration
}

// RunCPS opens connections to o.Addr from o.Workers goroutines, one after
// the other per worker: connect, write Ping, read it back, close. It
// runs in the caller's network namespace (bench-l4 cps is started inside
// a pod's).
func RunCPS(ctx context.Context, o CPSOptions) CPSResult {
	if o.Workers <= 0 {
		o.Workers = 8
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	var (
		conns, errs atomic.Int64
		first       sync.Once
		firstErr    string
		wg          sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(o.Duration)
	for range o.Workers {
		wg.Go(func() {
			buf := make([]byte, len(Ping))
			d := net.Dialer{Timeout: o.Timeout}
			for n := 0; ; n++ {
				if ctx.Err() != nil || (o.Count > 0 && n >= o.Count) || (o.Count <= 0 && time.Now().After(end)) {
					return
				}
				if err := ping(ctx, &d, o.Addr, o.Timeout, buf); err != nil {
					errs.Add(1)
					first.Do(func() { firstErr = err.Error() })
					continue
				}
				conns.Add(1)
			}
		})
	}
	wg.Wait()
	return CPSResult{Conns: conns.Load(), Errors: errs.Load(), Seconds: time.Since(start).Seconds(), FirstError: firstErr}
}

func ping(ctx context.Context, d *net.Dialer, addr string, timeout time.Duration, buf []byte) error {
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if _, err := c.Write(Ping); err != nil {
		return fmt.Errorf("write to %s: %w", addr, err)
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("read the echo from %s: %w", addr, err)
	}
	if !bytes.Equal(buf, Ping) {
		return fmt.Errorf("%s echoed %q, want %q", addr, buf, Ping)
	}
	return nil
}
