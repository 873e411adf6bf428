package dns

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// ServeUDP answers the queries arriving on pc until ctx is done (it then
// waits for the queries being answered and returns nil) or pc fails (it
// returns the error). The caller keeps ownership of pc. On Linux, answers
// leave from the address each query was sent to (IP_PKTINFO), so pc may be
// bound to the wildcard address: a query redirected to 127.0.0.1 by
// capture is answered from 127.0.0.1, which conntrack maps back to the
// address the app asked.
func (s *Server) ServeUDP(ctx context.Context, pc net.PacketConn) error {
	rw := newPacketRW(pc)
	stop := context.AfterFunc(ctx, func() { pc.SetReadDeadline(time.Now()) })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	buf := make([]byte, MaxQuerySize+1)
	for {
		n, from, dst, err := rw.read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("dns: read on %v: %w", pc.LocalAddr(), err)
		}
		if n > MaxQuerySize {
			continue
		}
		select {
		case s.udpSem <- struct{}{}:
		default:
			continue // full: drop, the client retries
		}
		q := append([]byte(nil), buf[:n]...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-s.udpSem }()
			if resp := s.handle(ctx, q, true); resp != nil {
				rw.write(resp, from, dst)
			}
		}()
	}
}

// deadliner is a listener whose Accept can be interrupted by a deadline
// (*net.TCPListener), so that ServeTCP leaves the caller's listener open.
type deadliner interface {
	SetDeadline(time.Time) error
}

// ServeTCP answers the queries of the connections ln accepts until ctx is
// done (it then closes the connections, waits for their goroutines and
// returns nil) or ln fails (it returns the error). A TCP listener stays
// open for its owner; another kind of listener is closed when ctx is done.
// At most Config.MaxTCPConns connections are served at once (more are
// closed at once); each is closed after Config.Timeout without a query,
// and on a query larger than MaxQuerySize.
func (s *Server) ServeTCP(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() {
		if d, ok := ln.(deadliner); ok {
			d.SetDeadline(time.Now())
		} else {
			ln.Close()
		}
	})
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("dns: accept on %v: %w", ln.Addr(), err)
		}
		select {
		case s.tcpSem <- struct{}{}:
		default:
			c.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-s.tcpSem }()
			s.serveConn(ctx, c)
		}()
	}
}

// serveConn answers one TCP client's queries, one at a time, in order.
func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	q := make([]byte, MaxQuerySize)
	for {
		c.SetDeadline(time.Now().Add(s.cfg.Timeout))
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(l[:]))
		if n > MaxQuerySize {
			return
		}
		if _, err := io.ReadFull(c, q[:n]); err != nil {
			return
		}
		resp := s.handle(ctx, q[:n], false)
		if resp == nil {
			return
		}
		c.SetDeadline(time.Now().Add(s.cfg.Timeout))
		msg := make([]byte, 2+len(resp))
		binary.BigEndian.PutUint16(msg, uint16(len(resp)))
		copy(msg[2:], resp)
		if _, err := c.Write(msg); err != nil {
			return
		}
	}
}
