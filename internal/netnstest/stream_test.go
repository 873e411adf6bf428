package netnstest

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// seg is a test segment from hostA to hostB.
func seg(seq uint32, flags uint8, payload string) segment {
	return segment{src: hostA, dst: hostB, seq: seq, flags: flags, payload: []byte(payload)}
}

type errWriter struct{ n int }

func (w *errWriter) Write(p []byte) (int, error) {
	w.n += len(p)
	return 0, errors.New("sink full")
}

func TestReassembler(t *testing.T) {
	const isn = 1000 // payload starts at isn+1
	tests := []struct {
		name string
		segs []segment
		max  int
		want Stream
	}{
		{
			name: "in order with SYN and FIN",
			segs: []segment{seg(isn, tcpSYN, ""), seg(isn+1, 0, "hello "), seg(isn+7, tcpFIN, "world")},
			want: Stream{Data: []byte("hello world"), Len: 11, SYN: true, FIN: true, Segments: 3},
		},
		{
			name: "out of order",
			segs: []segment{seg(isn, tcpSYN, ""), seg(isn+7, 0, "world"), seg(isn+1, 0, "hello ")},
			want: Stream{Data: []byte("hello world"), Len: 11, SYN: true, Segments: 3},
		},
		{
			name: "retransmit and overlap",
			segs: []segment{seg(isn, tcpSYN, ""), seg(isn+1, 0, "hello "), seg(isn+1, 0, "hello "), seg(isn+4, 0, "lo world"), seg(isn+4, 0, "lo")},
			want: Stream{Data: []byte("hello world"), Len: 11, SYN: true, Segments: 5, Retransmitted: 6 + 3 + 2},
		},
		{
			name: "held segments overlapping each other",
			segs: []segment{seg(isn, tcpSYN, ""), seg(isn+5, 0, "o wor"), seg(isn+7, 0, "world"), seg(isn+1, 0, "hell")},
			want: Stream{Data: []byte("hello world"), Len: 11, SYN: true, Segments: 4, Retransmitted: 3},
		},
		{
			name: "sequence numbers wrap",
			segs: []segment{seg(0xfffffffd, tcpSYN, ""), seg(0xfffffffe, 0, "abc"), seg(1, 0, "def")},
			want: Stream{Data: []byte("abcdef"), Len: 6, SYN: true, Segments: 3},
		},
		{
			name: "a hole becomes a gap",
			segs: []segment{seg(isn, tcpSYN, ""), seg(isn+1, 0, "ab"), seg(isn+6, tcpFIN, "fg")},
			want: Stream{Data: []byte("abfg"), Len: 4, SYN: true, FIN: true, Segments: 3, Gaps: []Gap{{Offset: 2, Len: 3}}},
		},
		{
			name: "FIN past the data seen",
			segs: []segment{seg(isn, tcpSYN, ""), seg(isn+1, 0, "ab"), seg(isn+5, tcpFIN, "")},
			want: Stream{Data: []byte("ab"), Len: 2, SYN: true, FIN: true, Segments: 3, Gaps: []Gap{{Offset: 2, Len: 2}}},
		},
		{
			name: "joined mid-connection",
			segs: []segment{seg(5000, 0, "mid"), seg(5003, tcpRST, "")},
			want: Stream{Data: []byte("mid"), Len: 3, RST: true, Segments: 2},
		},
		{
			name: "capped",
			max:  4,
			segs: []segment{seg(isn, tcpSYN, ""), seg(isn+1, 0, "hello world")},
			want: Stream{Data: []byte("hell"), Len: 11, Truncated: true, SYN: true, Segments: 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			max := tt.max
			if max == 0 {
				max = 1 << 20
			}
			var sink bytes.Buffer
			r := newReassembler(hostA, hostB, max, &sink)
			for _, s := range tt.segs {
				r.add(s)
			}
			got := r.finish()
			tt.want.Src, tt.want.Dst = hostA, hostB
			if diff := cmp.Diff(&tt.want, got, cmp.Comparer(func(a, b error) bool { return a == b }), cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
				t.Errorf("stream (-want +got):\n%s", diff)
			}
			// The sink sees every in-sequence byte, past the cap too.
			if int64(sink.Len()) != got.Len {
				t.Errorf("sink got %d bytes, stream Len %d", sink.Len(), got.Len)
			}
			if !bytes.HasPrefix(sink.Bytes(), got.Data) {
				t.Errorf("sink %q does not start with Data %q", sink.Bytes(), got.Data)
			}
		})
	}
}

func TestReassemblerPendingBound(t *testing.T) {
	// A lost segment never arrives: the held data is given up as a gap
	// once more than maxPending waits, instead of growing without end.
	r := newReassembler(hostA, hostB, 0, nil)
	r.add(seg(0, tcpSYN, ""))
	chunk := string(make([]byte, 64<<10))
	seq := uint32(1 + 100) // 100 bytes lost at offset 0
	for range maxPending/len(chunk) + 2 {
		r.add(seg(seq, 0, chunk))
		seq += uint32(len(chunk))
	}
	if r.pendingN > maxPending {
		t.Fatalf("%d bytes held, more than %d", r.pendingN, maxPending)
	}
	st := r.finish()
	if diff := cmp.Diff([]Gap{{Offset: 0, Len: 100}}, st.Gaps); diff != "" {
		t.Errorf("gaps (-want +got):\n%s", diff)
	}
	if want := int64(seq - 101); st.Len != want {
		t.Errorf("Len %d, want %d", st.Len, want)
	}
	if err := st.Complete(); err == nil {
		t.Error("Complete: nil for a stream with a gap")
	}
}

func TestStreamComplete(t *testing.T) {
	w := &errWriter{}
	r := newReassembler(hostA, hostB, 10, w)
	r.add(seg(0, tcpSYN, ""))
	r.add(seg(1, 0, "abc"))
	r.add(seg(4, 0, "def"))
	st := r.finish()
	if w.n != 3 {
		t.Errorf("sink got %d bytes after failing, want only the first write (3)", w.n)
	}
	if err := st.Complete(); err == nil || st.SinkErr == nil {
		t.Errorf("Complete = %v, SinkErr = %v; want the sink's error", err, st.SinkErr)
	}
	ok := newReassembler(hostA, hostB, 10, nil)
	ok.add(seg(0, tcpSYN, ""))
	ok.add(seg(1, 0, "abc"))
	if err := ok.finish().Complete(); err != nil {
		t.Errorf("Complete: %v", err)
	}
}
