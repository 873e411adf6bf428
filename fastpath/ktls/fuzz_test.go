package ktls

import (
	"bytes"
	"io"
	"testing"
)

// FuzzRecordConn feeds arbitrary peer bytes, in arbitrary chunks, through
// the handshake reader: the bytes come out unchanged, no Read crosses a
// record end (as an independent parse of the headers places them), and
// nothing panics.
func FuzzRecordConn(f *testing.F) {
	f.Add(record(recordHandshake, "\x02\x00\x00\x26\x03\x03"), uint8(7), uint16(4096))
	f.Add(append(record(recordChangeCipherSpec, "\x01"), record(recordApplicationData, "")...), uint8(1), uint16(1))
	f.Add([]byte{0x17, 3, 3, 0xff, 0xff, 1}, uint8(3), uint16(2))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8, bufLen uint16) {
		if chunk == 0 || bufLen == 0 {
			return
		}
		sc := &scriptConn{}
		for rest := stream; len(rest) > 0; {
			n := min(int(chunk), len(rest))
			sc.chunks = append(sc.chunks, rest[:n])
			sc.errs = append(sc.errs, n%3 == 0)
			rest = rest[n:]
		}
		ends := map[int]bool{}
		for off := 0; off+5 <= len(stream); {
			off += 5 + (int(stream[off+3])<<8 | int(stream[off+4]))
			ends[off] = true
		}
		rc := &recordConn{Conn: sc, isClient: true}
		var got []byte
		buf := make([]byte, bufLen)
		for range 1 << 16 {
			n, err := rc.Read(buf)
			for i := len(got) + 1; i < len(got)+n; i++ {
				if ends[i] {
					t.Fatalf("a Read of %d bytes at %d crosses the record end at %d", n, len(got), i)
				}
			}
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
		}
		// Everything comes out unchanged, except a trailing partial
		// header, which is held back (never invented).
		if !bytes.HasPrefix(stream, got) || len(stream)-len(got) >= 5 {
			t.Fatalf("read %x from %x", got, stream)
		}
		rc.serverRandom()
		rc.counts()
	})
}
