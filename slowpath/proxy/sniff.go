package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/fibmesh/fibmesh/slowpath/xdsconf"
)

// Server name sniffing, as Envoy's tls_inspector: on a destination port
// for which the outbound listener has chains with server names (the
// VirtualService tls rules the controller translates), the proxy reads
// the app's ClientHello before choosing the chain and replays the bytes
// to the upstream. Other ports are not read before the chain is chosen,
// so server-first protocols are not delayed.

const (
	// sniffTimeout bounds the wait for a ClientHello; an app that sends
	// nothing by then (or not TLS) is matched without a server name.
	sniffTimeout = time.Second
	// maxSniff bounds the bytes read for it: a ClientHello is at most a
	// few records (crypto/tls takes handshake messages of up to 64 KiB).
	maxSniff = 64<<10 + 5*5
)

// sniPorts says which destination ports of a listener have chains with
// server names. any: a chain without a port has some.
type sniPorts struct {
	l     *xdsconf.Listener
	ports map[uint32]bool
	any   bool
}

// sniCache holds the sniPorts of the last outbound listener seen: a new
// snapshot's listener recomputes it once.
var sniCache atomic.Pointer[sniPorts]

func sniffPorts(l *xdsconf.Listener) *sniPorts {
	if s := sniCache.Load(); s != nil && s.l == l {
		return s
	}
	s := &sniPorts{l: l, ports: map[uint32]bool{}}
	for _, fc := range l.Chains {
		if len(fc.ServerNames) == 0 {
			continue
		}
		if fc.Port == 0 {
			s.any = true
		} else {
			s.ports[fc.Port] = true
		}
	}
	sniCache.Store(s)
	return s
}

func (s *sniPorts) has(port uint16) bool { return s.any || s.ports[uint32(port)] }

// sniffConn feeds crypto/tls what the app sent, records it, and swallows
// what crypto/tls would answer.
type sniffConn struct {
	net.Conn
	r   io.Reader
	buf bytes.Buffer
}

func (s *sniffConn) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.buf.Write(p[:n])
	return n, err
}
func (s *sniffConn) Write(p []byte) (int, error) { return len(p), nil }

var errSniffed = errors.New("sniffed")

// sniffServerName reads the app's ClientHello from c and returns its
// server name ("" if none, not TLS, or nothing within sniffTimeout) and
// every byte read, which the caller must relay first.
func sniffServerName(c *net.TCPConn, deadline time.Time) (string, []byte) {
	c.SetReadDeadline(time.Now().Add(sniffTimeout))
	defer c.SetReadDeadline(deadline)
	sc := &sniffConn{Conn: c, r: io.LimitReader(c, maxSniff)}
	var name string
	srv := tls.Server(sc, &tls.Config{GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		name = chi.ServerName
		return nil, errSniffed
	}})
	srv.Handshake()
	return name, sc.buf.Bytes()
}
