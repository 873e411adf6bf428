package offloadbench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fibmesh/fibmesh/lab"
)

// The stream's wire format, the same in every mode: the client sends an
// 8-byte stream id (big endian), then the payload, then closes its write
// side; the server answers, at end of file, with the count of payload
// bytes it read (8 bytes) and closes. The id routes the server's accepted
// connection to the transfer that dialled it, whatever else connects.
const idLen = 8

// bufSize is each side's read and write size.
const bufSize = 256 << 10

// payload is what every transfer writes, over and over: random, so that
// nothing on the path can compress it.
var payload = func() []byte {
	b := make([]byte, bufSize)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return b
}()

// sinkResult is what the server end saw of one stream.
type sinkResult struct {
	// Bytes of payload read; First is when the first of them arrived,
	// End when the stream ended (end of file, or the error).
	Bytes      int64
	First, End time.Time
	// Err is the read error that ended the stream; nil at end of file.
	Err error
	// Client is the client end's address (set by transfer): the source
	// the agents' connection tables show.
	Client netip.AddrPort
}

// Seconds is the time from the first payload byte to the end.
func (r sinkResult) Seconds() float64 { return r.End.Sub(r.First).Seconds() }

// sink is the server end: a listener in a server pod's network namespace
// that reads every stream to its end.
type sink struct {
	ln      net.Listener
	mu      sync.Mutex
	waiting map[uint64]chan sinkResult
	wg      sync.WaitGroup
}

// listen opens a sink on port in the network namespace netns (every
// address of the pod: the server's agent delivers to the pod's IP); port
// 0 picks one (sink.port says which).
func listen(netns string, port int) (*sink, error) {
	var ln net.Listener
	err := inNetns(netns, func() (err error) {
		ln, err = net.Listen("tcp4", ":"+strconv.Itoa(port))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on port %d in %s: %w", port, netns, err)
	}
	s := &sink{ln: ln, waiting: map[uint64]chan sinkResult{}}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// port is the port the sink listens on.
func (s *sink) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// expect registers stream id before it is dialled; its result arrives on
// the channel.
func (s *sink) expect(id uint64) chan sinkResult {
	ch := make(chan sinkResult, 1)
	s.mu.Lock()
	s.waiting[id] = ch
	s.mu.Unlock()
	return ch
}

// forget drops a registration whose stream never came.
func (s *sink) forget(id uint64) {
	s.mu.Lock()
	delete(s.waiting, id)
	s.mu.Unlock()
}

// Close stops accepting and waits for the streams being read.
func (s *sink) Close() error {
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

func (s *sink) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.read(c.(*net.TCPConn))
		}()
	}
}

// read reads one stream: its id, then payload to its end.
func (s *sink) read(c *net.TCPConn) {
	defer c.Close()
	var hdr [idLen]byte
	c.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	c.SetReadDeadline(time.Time{})
	id := binary.BigEndian.Uint64(hdr[:])
	s.mu.Lock()
	ch := s.waiting[id]
	delete(s.waiting, id)
	s.mu.Unlock()
	if ch == nil {
		return // not a stream of this run (a stale one, a probe)
	}
	var r sinkResult
	buf := make([]byte, bufSize)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if r.Bytes == 0 {
				r.First = time.Now()
			}
			r.Bytes += int64(n)
		}
		if err != nil {
			r.End = time.Now()
			if !errors.Is(err, io.EOF) {
				r.Err = err
			}
			break
		}
	}
	if r.Err == nil {
		var cnt [8]byte
		binary.BigEndian.PutUint64(cnt[:], uint64(r.Bytes))
		c.Write(cnt[:])
	}
	ch <- r
}

// inNetns runs fn in the named network namespace, or where the caller
// is for "" (the package's tests over loopback).
func inNetns(netns string, fn func() error) error {
	if netns == "" {
		return fn()
	}
	return lab.InNetns(netns, fn)
}

// streamIDs numbers the run's streams.
var streamIDs atomic.Uint64

// dial connects to addr from inside the network namespace netns and
// sends the stream's id.
func dial(ctx context.Context, netns string, addr netip.AddrPort, id uint64, timeout time.Duration) (*net.TCPConn, error) {
	var c net.Conn
	err := inNetns(netns, func() (err error) {
		d := net.Dialer{Timeout: timeout}
		c, err = d.DialContext(ctx, "tcp4", addr.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("connect to %s from %s: %w", addr, netns, err)
	}
	var hdr [idLen]byte
	binary.BigEndian.PutUint64(hdr[:], id)
	if _, err := c.Write(hdr[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("stream to %s: %w", addr, err)
	}
	return c.(*net.TCPConn), nil
}

// transfer sends n bytes from the client pod's namespace (netns) to addr,
// where s reads them, and returns what s saw. It fails unless the server
// read every byte and said so. timeout bounds the whole transfer.
func transfer(ctx context.Context, netns string, addr netip.AddrPort, s *sink, n int64, timeout time.Duration) (sinkResult, error) {
	id := streamIDs.Add(1)
	ch := s.expect(id)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := dial(ctx, netns, addr, id, min(timeout, 10*time.Second))
	if err != nil {
		s.forget(id)
		return sinkResult{}, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	for left := n; left > 0; {
		k, err := c.Write(payload[:min(left, int64(len(payload)))])
		left -= int64(k)
		if err != nil {
			s.forget(id)
			return sinkResult{}, fmt.Errorf("stream to %s: write after %d of %d bytes: %w", addr, n-left, n, err)
		}
	}
	if err := c.CloseWrite(); err != nil {
		return sinkResult{}, fmt.Errorf("stream to %s: close write: %w", addr, err)
	}
	var cnt [8]byte
	if _, err := io.ReadFull(c, cnt[:]); err != nil {
		return sinkResult{}, fmt.Errorf("stream to %s: the server's count: %w", addr, err)
	}
	client := c.LocalAddr().(*net.TCPAddr).AddrPort()
	var r sinkResult
	select {
	case r = <-ch:
	case <-ctx.Done():
		return r, fmt.Errorf("stream to %s: the server end did not report: %w", addr, ctx.Err())
	}
	r.Client = client
	if got := int64(binary.BigEndian.Uint64(cnt[:])); got != n || r.Bytes != n || r.Err != nil {
		return r, fmt.Errorf("stream to %s: sent %d bytes, the server read %d (said %d, error %v)", addr, n, r.Bytes, got, r.Err)
	}
	return r, nil
}

// paced is a stream that writes chunk bytes every interval until it
// fails or is stopped: the revocation rounds' connection.
type paced struct {
	c       *net.TCPConn
	local   netip.AddrPort // the client end's address
	res     chan sinkResult
	done    chan struct{}
	sent    atomic.Int64
	errAt   time.Time // when a write first failed (valid once done is closed)
	err     error
	stopped atomic.Bool
}

// startPaced dials addr from netns and writes chunk bytes every interval
// on a goroutine of its own.
func startPaced(ctx context.Context, netns string, addr netip.AddrPort, s *sink, chunk int, interval time.Duration) (*paced, error) {
	id := streamIDs.Add(1)
	ch := s.expect(id)
	c, err := dial(ctx, netns, addr, id, 10*time.Second)
	if err != nil {
		s.forget(id)
		return nil, err
	}
	p := &paced{c: c, local: c.LocalAddr().(*net.TCPAddr).AddrPort(), res: ch, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for !p.stopped.Load() {
			k, err := c.Write(payload[:min(chunk, len(payload))])
			p.sent.Add(int64(k))
			if err != nil {
				p.errAt, p.err = time.Now(), err
				return
			}
			<-t.C
		}
	}()
	return p, nil
}

// stop ends the stream (a round that failed) and closes it.
func (p *paced) stop() {
	p.stopped.Store(true)
	p.c.SetLinger(0)
	p.c.Close()
	<-p.done
}
