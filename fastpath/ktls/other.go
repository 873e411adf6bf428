//go:build !linux

package ktls

import (
	"net"
	"runtime"
	"syscall"
)

var errNotLinux = &UnsupportedError{Reason: "kTLS is Linux only, this is " + runtime.GOOS}

// Conn is a kTLS connection; on this OS none can be made.
type Conn struct {
	net.Conn
	pending []byte
	rerr    error
}

// NewConn fails: kTLS is Linux only.
func NewConn(tcp *net.TCPConn, tx, rx Keys, txSecret, rxSecret []byte) (*Conn, error) {
	return nil, errNotLinux
}

// EnableULP fails: kTLS is Linux only.
func EnableULP(rc syscall.RawConn) error { return errNotLinux }

func install(tcp *net.TCPConn, rc syscall.RawConn, tx, rx Keys, txSecret, rxSecret []byte) (*Conn, error) {
	return nil, errNotLinux
}

// Pending returns nothing: no Conn exists on this OS.
func (c *Conn) Pending() []byte { return nil }

// Probe reports no kTLS.
func Probe() (*Capabilities, error) {
	return &Capabilities{ULPError: errNotLinux.Reason}, nil
}

// ProbeNow reports no kTLS.
func ProbeNow() (*Capabilities, error) { return Probe() }
