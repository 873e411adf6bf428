package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fibmesh/fibmesh/fastpath/ktls"
)

// stream is one side of a relayed connection.
type stream interface {
	io.ReadWriter
	// closeWrite ends the direction toward this side: a FIN on TCP; on
	// the tunnel a TLS close_notify, then a FIN.
	closeWrite() error
	// tcp is the socket underneath, for deadlines, resets and close.
	tcp() *net.TCPConn
}

type tcpStream struct{ *net.TCPConn }

func (s tcpStream) closeWrite() error { return s.CloseWrite() }
func (s tcpStream) tcp() *net.TCPConn { return s.TCPConn }

// tlsStream is the tunnel: the handshaken connection from fastpath/ktls
// (still in userspace; a later step offloads it) and its socket.
type tlsStream struct {
	tc  *ktls.TLSConn
	raw *net.TCPConn
	// batch, when set, is the socket under tc: a Write's records are
	// sent with one system call.
	batch *batchConn
}

func (s tlsStream) Read(p []byte) (int, error) { return s.tc.Read(p) }
func (s tlsStream) Write(p []byte) (int, error) {
	if s.batch == nil {
		return s.tc.Write(p)
	}
	s.batch.begin()
	n, err := s.tc.Write(p)
	if ferr := s.batch.flush(); err == nil && ferr != nil {
		return 0, ferr
	}
	return n, err
}
func (s tlsStream) tcp() *net.TCPConn { return s.raw }

// closeWrite sends close_notify (tls.Conn.CloseWrite, which the embedded
// *tls.Conn of ktls.TLSConn provides; it does not shut the socket) and
// then shuts the socket's write side, so the peer reads io.EOF either
// from the alert or from the FIN.
func (s tlsStream) closeWrite() error {
	err := s.tc.CloseWrite()
	if e := s.raw.CloseWrite(); err == nil {
		err = e
	}
	return err
}

// bufSize is the relay's read size: four TLS records' payload (sent with
// one system call where the tunnel batches).
const bufSize = 64 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// relay copies both ways until both directions ended (EOF, half-closed
// in turn) or one failed (the other side is then reset), or the
// connection was idle for the idle timeout. It returns when both copiers
// have ended and both sockets are closed.
func (p *Proxy) relay(c *conn, down, up stream) {
	idle := p.cfg.IdleTimeout
	c.mu.Lock()
	if c.idle != 0 {
		idle = c.idle // the chain's; negative (xdsconf.NoIdleTimeout): none
	}
	c.mu.Unlock()
	o, err := p.offload(c, &down, &up)
	switch {
	case err != nil:
		// The kernel took part of the connection and its sockets are
		// closed.
		p.fail(c, refuse(ReasonOffloadFailed, err))
		return
	case o != nil:
		p.relayOffloaded(c, o, idle)
		return
	}
	c.update(func(i *ConnInfo) { i.State = StateEstablished })
	p.recheck(c) // the copiers below end on the resets of a revocation
	p.m.conns.WithLabelValues(c.direction, c.result()).Inc()
	active := p.m.active.WithLabelValues(c.direction)
	active.Inc()
	if p.cfg.Events != nil {
		p.cfg.Events(Event{Kind: EventEstablished, Conn: c.snapshot(), PeerWorkload: c.peerWorkload(), EndpointWorkload: c.endpointWorkload()})
	}
	bytes := p.m.bytes.WithLabelValues(c.direction)
	// Outbound, the app is downstream; inbound, upstream.
	fromDown, fromUp := &c.out, &c.in
	if c.direction == DirectionInbound {
		fromDown, fromUp = &c.in, &c.out
	}
	r := &relayState{idle: idle}
	r.touch()
	errc := make(chan error, 1)
	go func() { errc <- r.copy(up, down, fromDown, bytes) }()
	err1 := r.copy(down, up, fromUp, bytes)
	err2 := <-errc
	reason := "done"
	switch {
	case r.idleOut.Load():
		reason = "idle timeout"
	case err1 != nil || err2 != nil:
		reason = "reset"
	}
	active.Dec()
	info := c.finish(reason)
	if p.cfg.Events != nil {
		p.cfg.Events(Event{Kind: EventClosed, Conn: info, PeerWorkload: c.peerWorkload(), EndpointWorkload: c.endpointWorkload(), Reason: reason, Err: errors.Join(err1, err2)})
	}
}

type relayState struct {
	idle    time.Duration
	last    atomic.Int64 // unix nanos of the last byte either way
	idleOut atomic.Bool
	// failed is set by the copier that hit an error; the other one
	// then stops (its sockets were reset under it).
	failed atomic.Bool
}

func (r *relayState) touch() { r.last.Store(time.Now().UnixNano()) }

// copy relays src to dst. At src's EOF it half-closes dst and returns
// nil; on an error either way, or idleness, it resets the side that did
// not fail (SO_LINGER 0, so the peer sees RST), closes both and returns
// the error.
func (r *relayState) copy(dst, src stream, n *atomic.Uint64, bytes prometheus.Counter) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	srcTCP := src.tcp()
	if r.idle > 0 {
		srcTCP.SetReadDeadline(time.Now().Add(r.idle))
	}
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			r.touch()
			if r.idle > 0 {
				// A peer that stops reading for the idle timeout
				// ends the connection too.
				dst.tcp().SetWriteDeadline(time.Now().Add(r.idle))
			}
			nw, werr := dst.Write(buf[:nr])
			if nw > 0 {
				n.Add(uint64(nw))
				bytes.Add(float64(nw))
			}
			if werr != nil {
				r.abort(src, dst, true)
				return werr
			}
		}
		switch {
		case rerr == nil:
			continue
		case errors.Is(rerr, io.EOF):
			if err := dst.closeWrite(); err != nil && !r.failed.Load() {
				r.abort(src, dst, false)
				return err
			}
			return nil
		case errors.Is(rerr, os.ErrDeadlineExceeded) && !r.failed.Load():
			last := time.Unix(0, r.last.Load())
			if time.Since(last) < r.idle {
				srcTCP.SetReadDeadline(last.Add(r.idle))
				continue
			}
			r.idleOut.Store(true)
			r.failed.Store(true)
			src.tcp().Close()
			dst.tcp().Close()
			return nil
		}
		if r.failed.Load() {
			// The other copier failed and closed our sockets.
			return nil
		}
		r.abort(dst, src, false)
		return rerr
	}
}

// abort resets keep's peer (keep's socket had no error) and closes both;
// resetBoth also resets the failed side.
func (r *relayState) abort(keep, failed stream, resetBoth bool) {
	r.failed.Store(true)
	keep.tcp().SetLinger(0)
	if resetBoth {
		failed.tcp().SetLinger(0)
	}
	keep.tcp().Close()
	failed.tcp().Close()
}
