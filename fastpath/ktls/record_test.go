package ktls

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// scriptConn returns its data in the chunks given, with an error (a
// deadline) after each chunk marked so.
type scriptConn struct {
	net.Conn
	chunks [][]byte
	errs   []bool
}

var errTimeout = errors.New("i/o timeout")

func (s *scriptConn) Read(p []byte) (int, error) {
	if len(s.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.chunks[0])
	s.chunks[0] = s.chunks[0][n:]
	if len(s.chunks[0]) == 0 {
		s.chunks = s.chunks[1:]
		fail := s.errs[0]
		s.errs = s.errs[1:]
		if fail {
			return n, errTimeout
		}
	}
	return n, nil
}

func (s *scriptConn) SetReadDeadline(time.Time) error { return nil }

func record(typ byte, body string) []byte {
	return append([]byte{typ, 3, 3, byte(len(body) >> 8), byte(len(body))}, body...)
}

// TestRecordConnBoundaries: whatever the chunking and errors of the
// socket, and however large the caller's buffer, no Read returns bytes
// of two records, the bytes come out unchanged, and the records are
// counted.
func TestRecordConnBoundaries(t *testing.T) {
	stream := bytes.Join([][]byte{
		record(recordHandshake, "\x02\x00\x00\x46\x03\x03"+string(bytes.Repeat([]byte{0xab}, 32))),
		record(recordChangeCipherSpec, "\x01"),
		record(recordApplicationData, ""),
		record(recordApplicationData, "hello world"),
	}, nil)
	tests := []struct {
		name   string
		chunks []int // sizes the socket returns
		errAt  map[int]bool
		bufLen int
	}{
		{"one chunk, big buffer", []int{len(stream)}, nil, 4096},
		{"byte by byte", nil, nil, 4096},
		{"timeouts inside headers", []int{2, 1, 3, 40, 3, 2, 1, 5, 100}, map[int]bool{0: true, 2: true, 5: true}, 4096},
		{"tiny buffer", []int{len(stream)}, nil, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc := &scriptConn{}
			rest := stream
			sizes := tt.chunks
			if sizes == nil {
				for range stream {
					sizes = append(sizes, 1)
				}
			}
			for i, n := range sizes {
				n = min(n, len(rest))
				if n == 0 {
					break
				}
				sc.chunks = append(sc.chunks, rest[:n])
				sc.errs = append(sc.errs, tt.errAt[i])
				rest = rest[n:]
			}
			if len(rest) > 0 {
				sc.chunks = append(sc.chunks, rest)
				sc.errs = append(sc.errs, false)
			}
			rc := &recordConn{Conn: sc, isClient: true}
			var got []byte
			buf := make([]byte, tt.bufLen)
			ends := map[int]bool{} // offsets where records end
			off := 0
			for _, r := range []int{38 + 5, 6, 5, 16} {
				off += r
				ends[off] = true
			}
			for {
				n, err := rc.Read(buf)
				if n > 0 {
					// No Read spans a record end.
					for i := len(got) + 1; i < len(got)+n; i++ {
						if ends[i] {
							t.Fatalf("a Read of %d bytes at %d crosses the record end at %d", n, len(got), i)
						}
					}
					got = append(got, buf[:n]...)
				}
				if err == io.EOF {
					break
				}
				if err != nil && err != errTimeout {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(got, stream) {
				t.Fatalf("read %x\nwant %x", got, stream)
			}
			r, rCCS, _, _, clean := rc.counts()
			if r != 4 || rCCS != 2 || !clean {
				t.Errorf("counts: records %d, after CCS %d, clean %v; want 4, 2, true", r, rCCS, clean)
			}
			sr, err := rc.serverRandom()
			if err != nil || !bytes.Equal(sr, bytes.Repeat([]byte{0xab}, 32)) {
				t.Errorf("serverRandom = %x, %v", sr, err)
			}
		})
	}
}

// TestRecordConnWrites: written records are counted, however the writes
// split them, and a server's ServerHello random is noted.
func TestRecordConnWrites(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go io.Copy(io.Discard, b)
	rc := &recordConn{Conn: a}
	hello := record(recordHandshake, "\x02\x00\x00\x46\x03\x03"+string(bytes.Repeat([]byte{0xcd}, 32)))
	stream := append(append(hello, record(recordChangeCipherSpec, "\x01")...), record(recordApplicationData, "data")...)
	for _, cut := range [][2]int{{0, 3}, {3, 44}, {44, 46}, {46, len(stream)}} {
		if _, err := rc.Write(stream[cut[0]:cut[1]]); err != nil {
			t.Fatal(err)
		}
	}
	_, _, w, wCCS, clean := rc.counts()
	if w != 3 || wCCS != 2 || !clean {
		t.Errorf("written records %d, after CCS %d, clean %v; want 3, 2, true", w, wCCS, clean)
	}
	if sr, err := rc.serverRandom(); err != nil || !bytes.Equal(sr, bytes.Repeat([]byte{0xcd}, 32)) {
		t.Errorf("serverRandom = %x, %v", sr, err)
	}
	rc.detach()
	if _, err := rc.Write([]byte{1}); err == nil {
		t.Error("Write after detach succeeded")
	}
	if _, err := rc.Read(make([]byte, 1)); !errors.Is(err, errDetached) {
		t.Errorf("Read after detach = %v, want errDetached", err)
	}
	if err := rc.Close(); err != nil {
		t.Errorf("Close after detach = %v", err)
	}
	if _, err := a.Write([]byte{1}); err != nil {
		t.Errorf("Close after detach closed the socket: %v", err)
	}
}

// shortConn accepts only the first n bytes of a Write, then fails (a
// deadline).
type shortConn struct {
	net.Conn
	n int
}

func (s *shortConn) Write(p []byte) (int, error) { return min(s.n, len(p)), errTimeout }

// TestShortWriteUnclean: a record only partly sent is not counted as sent,
// so Offload refuses a connection whose wire has a torn record.
func TestShortWriteUnclean(t *testing.T) {
	rc := &recordConn{Conn: &shortConn{n: 7}}
	if n, err := rc.Write(record(recordApplicationData, "0123456789")); n != 7 || err == nil {
		t.Fatalf("Write = %d, %v; want 7 and the error", n, err)
	}
	if _, _, w, _, clean := rc.counts(); w != 1 || clean {
		t.Errorf("after a short write: records %d, clean %v; want 1, false", w, clean)
	}
}
