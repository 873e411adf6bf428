package splice

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
)

// Join joins plain, the application's socket, and tls, the kTLS socket of
// its mTLS connection, and starts moving bytes both ways with the engine of
// opts.Mode. The pair owns both sockets from then on: it closes them when it
// ends. Before any byte the kernel moves, Join writes tls.Pending() to plain
// and opts.PlainPending to tls.
//
// On error Join has reset and closed both sockets, unless the error wraps
// ErrUnsupported: then it touched neither and the caller may keep the
// connection in userspace, except a socket prepared for ModeSockmap, which
// must be closed (a kTLS socket cannot leave a sockhash and keep
// receiving).
func Join(plain *net.TCPConn, tls Offloaded, opts Options) (*Pair, error) {
	if plain == nil || tls == nil {
		return nil, fmt.Errorf("splice: Join needs both sockets: %w", ErrUnsupported)
	}
	mode := opts.Mode
	if mode == 0 {
		mode = DefaultMode()
	}
	var p *Pair
	var err error
	switch mode {
	case ModeSplice:
		p, err = joinSplice(plain, tls, opts)
	case ModeSockmap:
		if opts.Prepared == nil {
			return nil, fmt.Errorf("splice: ModeSockmap needs Options.Prepared (Sockmap.Prepare before the tls ULP): %w", ErrUnsupported)
		}
		p, err = opts.Prepared.s.join(plain, tls, opts)
	default:
		return nil, fmt.Errorf("splice: unknown mode %v: %w", mode, ErrUnsupported)
	}
	if err != nil && !errors.Is(err, ErrUnsupported) {
		if rc, rerr := tls.SyscallConn(); rerr == nil {
			resetTLS(tls, rc)
		} else {
			tls.Close()
		}
		plain.SetLinger(0)
		plain.Close()
	}
	return p, err
}

// writeCounted writes b to w and adds what it wrote to c, also on error.
// The error is w's, for the caller to wrap.
func writeCounted(w io.Writer, b []byte, c *atomic.Uint64) error {
	n, err := w.Write(b)
	c.Add(uint64(n))
	return err
}
