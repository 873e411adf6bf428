// Package loopback makes connected TCP socket pairs over the loopback
// interface, for the probes and self-tests that must try a socket option
// on a real connection before trusting it (kTLS, splice, sockmap), and for
// their tests.
package loopback

import (
	"fmt"
	"net"
	"time"
)

// dialTimeout bounds the connect: over loopback it takes microseconds,
// so a slow one means the listener is not accepting.
const dialTimeout = 5 * time.Second

// Pair connects to the TCP listener ln and returns both ends: client (the
// dialled one) and server (the accepted one). Nothing else may Accept on
// ln meanwhile. If the connect fails, ln is closed (to end the Accept
// waiting for it).
func Pair(ln net.Listener) (client, server *net.TCPConn, err error) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), dialTimeout)
	if err != nil {
		ln.Close() // unblocks Accept
		if r := <-ch; r.c != nil {
			r.c.Close()
		}
		return nil, nil, fmt.Errorf("connect over loopback: %w", err)
	}
	r := <-ch
	if r.err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("accept over loopback: %w", r.err)
	}
	client, cok := c.(*net.TCPConn)
	server, sok := r.c.(*net.TCPConn)
	if !cok || !sok {
		c.Close()
		r.c.Close()
		return nil, nil, fmt.Errorf("loopback pair over %s: not TCP", ln.Addr().Network())
	}
	return client, server, nil
}

// TCPPair is Pair over a fresh listener on 127.0.0.1, closed before it
// returns.
func TCPPair() (client, server *net.TCPConn, err error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, nil, fmt.Errorf("listen on loopback: %w", err)
	}
	defer ln.Close()
	return Pair(ln)
}
