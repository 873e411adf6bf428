//go:build !linux

package splice

import (
	"fmt"
	"net"
	"runtime"
	"syscall"
)

var errNotLinux = fmt.Errorf("splice and sockmap are Linux only, this is %s: %w", runtime.GOOS, ErrUnsupported)

// Join fails: the byte path is Linux only.
func Join(plain *net.TCPConn, tls Offloaded, opts Options) (*Pair, error) {
	return nil, errNotLinux
}

// SockmapOptions configure OpenSockmap.
type SockmapOptions struct {
	MaxSockets uint32
}

// Sockmap is the loaded sockmap program; none can be loaded on this OS.
type Sockmap struct{}

// OpenSockmap fails: sockmap is Linux only.
func OpenSockmap(opts SockmapOptions) (*Sockmap, error) { return nil, errNotLinux }

// Close does nothing.
func (s *Sockmap) Close() error { return nil }

// SelfTest fails: sockmap is Linux only.
func (s *Sockmap) SelfTest() error { return &UnprovenError{Step: "ktls", Err: errNotLinux} }

// Stats fails: sockmap is Linux only.
func (s *Sockmap) Stats() ([]Stat, error) { return nil, errNotLinux }

// Prepare fails: sockmap is Linux only.
func (s *Sockmap) Prepare(tcp *net.TCPConn) (*Prepared, error) { return nil, errNotLinux }

// Prepared is a socket prepared for ModeSockmap; none exist on this OS.
type Prepared struct{}

// Abort does nothing.
func (pr *Prepared) Abort() error { return nil }

func resetTLS(t Offloaded, rc syscall.RawConn) { t.Close() }
