package ktls

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// recordConn sits between crypto/tls and the TCP socket during the
// handshake and until Offload. It never lets a Read cross a TLS record
// boundary, so Go's buffer holds no ciphertext that the kernel would then
// miss; and it counts the records each way and notes the ChangeCipherSpec
// and the ServerHello's random, which Offload needs to compute the kernel's
// starting state.
type recordConn struct {
	net.Conn
	isClient bool

	rmu      sync.Mutex
	rhdr     [5]byte
	inRecord bool // a header has been read and its record is not done
	rhdrN    int  // header bytes read of the next or current record
	rhdrOut  int  // header bytes handed to the caller
	rleft    int  // body bytes left in the current record
	rtyp     byte
	rRecords uint64 // records whose header has been read
	rCCS     uint64 // rRecords just after the last ChangeCipherSpec

	// detached is set once the kernel owns the socket: reads fail with
	// errDetached, writes are refused, Close and deadlines are no-ops.
	// Atomic, so a deadline or Close can always get through while a
	// Write blocks (crypto/tls breaks a stuck write by closing).
	detached atomic.Bool
	// passthrough is set once the connection will never be offloaded
	// (TLSConn.KeepInUserspace): from the next record boundary on, reads
	// and writes go straight to the socket, neither cut at records nor
	// counted.
	passthrough atomic.Bool

	wmu      sync.Mutex
	whdr     [5]byte
	whdrN    int
	wleft    int
	wtyp     byte
	wRecords uint64
	wCCS     uint64

	// hello collects the start of the server's first handshake messages
	// (read on a client, written on a server) up to the random.
	hmu   sync.Mutex
	hello []byte
}

const helloPrefix = 4 + 2 + 32 // handshake header, legacy_version, random

var errDetached = &detachedError{}

// detachedError is what crypto/tls sees once the kernel owns the socket. It
// is a temporary net.Error so crypto/tls does not latch it.
type detachedError struct{}

func (*detachedError) Error() string   { return "ktls: the socket is owned by the kernel's TLS now" }
func (*detachedError) Timeout() bool   { return true }
func (*detachedError) Temporary() bool { return true }

func (c *recordConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.detached.Load() {
		return 0, errDetached
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !c.inRecord && c.rhdrN == 0 && c.passthrough.Load() {
		return c.Conn.Read(p)
	}
	if !c.inRecord {
		// Between records: read the whole 5-byte header first (it cannot
		// cross a boundary), then hand it out. A partial header is kept
		// across an error (a deadline) for the retry.
		for c.rhdrN < 5 {
			n, err := c.Conn.Read(c.rhdr[c.rhdrN:5])
			c.rhdrN += n
			if err != nil && c.rhdrN < 5 {
				return 0, err
			}
		}
		c.inRecord = true
		c.rtyp = c.rhdr[0]
		c.rleft = int(c.rhdr[3])<<8 | int(c.rhdr[4])
		c.rhdrOut = 0
		c.rRecords++
		if c.rtyp == recordChangeCipherSpec {
			c.rCCS = c.rRecords
		}
	}
	if c.rhdrOut < 5 {
		n := copy(p, c.rhdr[c.rhdrOut:5])
		c.rhdrOut += n
		if c.rhdrOut == 5 && c.rleft == 0 {
			c.endRecord()
		}
		return n, nil
	}
	if len(p) > c.rleft {
		p = p[:c.rleft]
	}
	n, err := c.Conn.Read(p)
	if n > 0 && c.isClient && c.rtyp == recordHandshake {
		c.noteHello(p[:n])
	}
	c.rleft -= n
	if c.rleft == 0 {
		c.endRecord()
	}
	return n, err
}

func (c *recordConn) endRecord() {
	c.inRecord = false
	c.rhdrN = 0
}

// Write passes p on and then accounts for what was sent: a write cut short
// (a deadline) leaves a half-written record, which Offload refuses.
// crypto/tls serialises its writes, so only the accounting is locked.
func (c *recordConn) Write(p []byte) (int, error) {
	if c.detached.Load() {
		return 0, errDetached
	}
	if c.passthrough.Load() {
		return c.Conn.Write(p)
	}
	n, err := c.Conn.Write(p)
	c.wmu.Lock()
	c.scanWrite(p[:n])
	c.wmu.Unlock()
	return n, err
}

// scanWrite follows the record framing of what crypto/tls writes (always
// whole records, possibly several per Write).
func (c *recordConn) scanWrite(p []byte) {
	for len(p) > 0 {
		if c.wleft == 0 {
			n := copy(c.whdr[c.whdrN:], p)
			c.whdrN += n
			p = p[n:]
			if c.whdrN < 5 {
				return
			}
			c.whdrN = 0
			c.wtyp = c.whdr[0]
			c.wleft = int(c.whdr[3])<<8 | int(c.whdr[4])
			c.wRecords++
			if c.wtyp == recordChangeCipherSpec {
				c.wCCS = c.wRecords
			}
			continue
		}
		n := min(len(p), c.wleft)
		if !c.isClient && c.wtyp == recordHandshake {
			c.noteHello(p[:n])
		}
		c.wleft -= n
		p = p[n:]
	}
}

func (c *recordConn) noteHello(b []byte) {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	if need := helloPrefix - len(c.hello); need > 0 {
		c.hello = append(c.hello, b[:min(need, len(b))]...)
	}
}

// serverRandom returns ServerHello.random, or an error if the handshake
// did not start with a ServerHello from the server.
func (c *recordConn) serverRandom() ([]byte, error) {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	if len(c.hello) < helloPrefix || c.hello[0] != 2 {
		return nil, errors.New("ktls: no ServerHello seen in the handshake")
	}
	return c.hello[6:helloPrefix], nil
}

// counts returns records read and written, and the counts just after each
// direction's last ChangeCipherSpec.
func (c *recordConn) counts() (r, rCCS, w, wCCS uint64, clean bool) {
	c.rmu.Lock()
	r, rCCS = c.rRecords, c.rCCS
	clean = !c.inRecord && c.rhdrN == 0
	c.rmu.Unlock()
	c.wmu.Lock()
	w, wCCS = c.wRecords, c.wCCS
	clean = clean && c.wleft == 0 && c.whdrN == 0
	c.wmu.Unlock()
	return
}

// detach stops all further I/O through crypto/tls: reads fail with a
// temporary error and writes (a late close_notify from tls.Conn.Close)
// are refused, so the kernel's record sequence is never disturbed.
func (c *recordConn) detach() { c.detached.Store(true) }

// Close closes the socket unless the kernel owns it now (tls.Conn.Close
// after Offload must not close the kTLS socket).
func (c *recordConn) Close() error {
	if c.detached.Load() {
		return nil
	}
	return c.Conn.Close()
}

func (c *recordConn) SetDeadline(t time.Time) error {
	if c.detached.Load() {
		return nil
	}
	return c.Conn.SetDeadline(t)
}

func (c *recordConn) SetReadDeadline(t time.Time) error {
	if c.detached.Load() {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *recordConn) SetWriteDeadline(t time.Time) error {
	if c.detached.Load() {
		return nil
	}
	return c.Conn.SetWriteDeadline(t)
}
