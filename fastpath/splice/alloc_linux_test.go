package splice

import (
	"io"
	"sync/atomic"
	"testing"

	"github.com/fibmesh/fibmesh/internal/loopback"
)

// TestSpliceDirNoAllocs checks that ModeSplice's per-chunk work (fill,
// inq, drain) allocates nothing, over plain loopback sockets.
func TestSpliceDirNoAllocs(t *testing.T) {
	in, src, err := loopback.TCPPair()
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	defer src.Close()
	dst, out, err := loopback.TCPPair()
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	defer out.Close()
	for _, records := range []bool{false, true} {
		pp, err := newPipe(64 << 10)
		if err != nil {
			t.Fatal(err)
		}
		var moved atomic.Uint64
		d := newSpliceDir(mustRC(t, src), mustRC(t, dst), pp, records, &moved)
		wbuf := make([]byte, 4096)
		rbuf := make([]byte, len(wbuf))
		var ferr error
		chunk := func() {
			if ferr != nil {
				return
			}
			if _, ferr = in.Write(wbuf); ferr != nil {
				return
			}
			n, err := d.fill()
			if err != nil {
				ferr = err
				return
			}
			if _, err := d.inq(); err != nil {
				ferr = err
				return
			}
			if err := d.drain(n, 0); err != nil {
				ferr = err
				return
			}
			_, ferr = io.ReadFull(out, rbuf[:n])
		}
		chunk() // warm up the netpoller registration
		allocs := testing.AllocsPerRun(100, chunk)
		pp.close()
		if ferr != nil {
			t.Fatalf("records=%v: %v", records, ferr)
		}
		if allocs != 0 {
			t.Errorf("records=%v: %v allocations per chunk, want 0", records, allocs)
		}
	}
}
