package proxy

import (
	"net"
	"sync"
)

// batchConn is the socket under a tunnel's TLS where tunnels stay in
// userspace: between begin and flush, what crypto/tls writes (one
// system call per record) is gathered and sent with one. A relay write of
// 64 KiB is four records: one write instead of four.
type batchConn struct {
	*net.TCPConn

	mu       sync.Mutex
	batching bool
	buf      []byte
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	if b.batching {
		b.buf = append(b.buf, p...)
		b.mu.Unlock()
		return len(p), nil
	}
	b.mu.Unlock()
	return b.TCPConn.Write(p)
}

// begin starts gathering writes.
func (b *batchConn) begin() {
	b.mu.Lock()
	b.batching = true
	b.mu.Unlock()
}

// flush sends what was gathered and stops gathering.
func (b *batchConn) flush() error {
	b.mu.Lock()
	b.batching = false
	buf := b.buf
	b.buf = b.buf[:0]
	var err error
	if len(buf) > 0 {
		// Held across the write: a record crypto/tls writes meanwhile
		// (from a reader answering a KeyUpdate) goes after the batch.
		_, err = b.TCPConn.Write(buf)
	}
	if cap(b.buf) > 4*bufSize+4096 {
		b.buf = nil // do not keep an outsized buffer per connection
	}
	b.mu.Unlock()
	return err
}
