package netnstest

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sort"
)

// Capture defaults.
const (
	// DefaultMaxBytes is the payload a Stream keeps by default.
	DefaultMaxBytes = 8 << 20
	// maxPending bounds the out-of-order bytes held per direction. On a
	// veth nothing is reordered or lost, so pending data means the
	// capture lost a packet (see CaptureResult.Dropped): past this much
	// the hole is given up as a Gap rather than holding a 100 MB
	// transfer in memory waiting for it.
	maxPending = 4 << 20
)

// Gap is a range of a stream's payload that the capture never saw.
type Gap struct {
	Offset int64 // from the first payload byte
	Len    int64
}

// Stream is one direction of a captured TCP connection: its payload in
// sequence order, with retransmitted bytes once and reordered segments in
// place.
type Stream struct {
	Src, Dst netip.AddrPort

	// Data is the payload from its first byte, up to the capture's
	// MaxBytes; bytes in a Gap are missing from it (not zero-filled).
	Data []byte
	// Len counts the payload bytes seen in sequence, past MaxBytes too.
	Len int64
	// Truncated is set when Len is more than len(Data).
	Truncated bool

	SYN bool // the capture saw the SYN: Data starts at the first byte
	FIN bool
	RST bool

	Segments      int   // TCP segments seen, with or without payload
	Retransmitted int64 // payload bytes seen more than once
	Gaps          []Gap
	// SinkErr is the first error the capture's Sink writer returned;
	// the sink gets no more bytes after it.
	SinkErr error
}

// Complete returns nil if the capture saw this direction from its SYN
// with no gap and its sink (if any) took every byte.
func (s *Stream) Complete() error {
	var errs []error
	if !s.SYN {
		errs = append(errs, errors.New("no SYN seen: the capture started after the connection"))
	}
	if len(s.Gaps) > 0 {
		var missing int64
		for _, g := range s.Gaps {
			missing += g.Len
		}
		errs = append(errs, fmt.Errorf("%d gaps, %d bytes missing, first at offset %d", len(s.Gaps), missing, s.Gaps[0].Offset))
	}
	if s.SinkErr != nil {
		errs = append(errs, fmt.Errorf("sink: %w", s.SinkErr))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stream %v -> %v: %w", s.Src, s.Dst, err)
	}
	return nil
}

// pendingSeg is payload that arrived ahead of the next expected byte.
type pendingSeg struct {
	off  int64
	data []byte
}

// reassembler rebuilds one direction's payload from segments.
type reassembler struct {
	st       *Stream
	max      int
	sink     io.Writer
	started  bool
	base     uint32 // sequence number of payload offset 0
	next     int64  // offset of the next payload byte expected
	pending  []pendingSeg
	pendingN int
	finOff   int64 // payload length the FIN declared, or -1
}

func newReassembler(src, dst netip.AddrPort, max int, sink io.Writer) *reassembler {
	return &reassembler{st: &Stream{Src: src, Dst: dst}, max: max, sink: sink, finOff: -1}
}

// offset maps a sequence number to a payload offset near next, so that
// sequence numbers wrap at 2^32 without harm.
func (r *reassembler) offset(seq uint32) int64 {
	nextSeq := r.base + uint32(r.next)
	return r.next + int64(int32(seq-nextSeq))
}

func (r *reassembler) add(seg segment) {
	st := r.st
	st.Segments++
	seq := seg.seq
	if seg.flags&tcpSYN != 0 {
		if !r.started {
			r.started, r.base, st.SYN = true, seq+1, true
		}
		seq++ // the SYN takes one sequence number before the payload
	}
	if !r.started {
		// Joined mid-connection: count from the first segment seen.
		r.started, r.base = true, seq
	}
	if seg.flags&tcpRST != 0 {
		st.RST = true
	}
	off := r.offset(seq)
	end := off + int64(len(seg.payload))
	if seg.flags&tcpFIN != 0 {
		st.FIN, r.finOff = true, end
	}
	p := seg.payload
	if len(p) == 0 {
		return
	}
	if end <= r.next {
		st.Retransmitted += int64(len(p))
		return
	}
	if off < r.next {
		st.Retransmitted += r.next - off
		p, off = p[r.next-off:], r.next
	}
	if off > r.next {
		r.hold(off, p)
		return
	}
	r.deliver(p)
	r.flush()
}

// hold keeps an early segment (copied: p aliases the read buffer).
func (r *reassembler) hold(off int64, p []byte) {
	i := sort.Search(len(r.pending), func(i int) bool { return r.pending[i].off > off })
	r.pending = append(r.pending, pendingSeg{})
	copy(r.pending[i+1:], r.pending[i:])
	r.pending[i] = pendingSeg{off: off, data: append([]byte(nil), p...)}
	r.pendingN += len(p)
	for r.pendingN > maxPending {
		r.skipTo(r.pending[0].off)
	}
}

// skipTo gives up on the bytes before off: a Gap.
func (r *reassembler) skipTo(off int64) {
	if off > r.next {
		r.st.Gaps = append(r.st.Gaps, Gap{Offset: r.next, Len: off - r.next})
		r.next = off
	}
	r.flush()
}

// flush delivers held segments that are now in sequence.
func (r *reassembler) flush() {
	for len(r.pending) > 0 && r.pending[0].off <= r.next {
		s := r.pending[0]
		r.pending = r.pending[1:]
		r.pendingN -= len(s.data)
		end := s.off + int64(len(s.data))
		switch {
		case end <= r.next:
			r.st.Retransmitted += int64(len(s.data))
		default:
			r.st.Retransmitted += r.next - s.off
			r.deliver(s.data[r.next-s.off:])
		}
	}
}

func (r *reassembler) deliver(p []byte) {
	st := r.st
	r.next += int64(len(p))
	st.Len += int64(len(p))
	if room := r.max - len(st.Data); room > 0 {
		st.Data = append(st.Data, p[:min(room, len(p))]...)
	}
	st.Truncated = st.Len > int64(len(st.Data))
	if r.sink != nil && st.SinkErr == nil {
		if _, err := r.sink.Write(p); err != nil {
			st.SinkErr = err
		}
	}
}

// finish ends the stream: held segments are delivered with the gaps
// before them, and a FIN beyond the last byte seen is a gap too.
func (r *reassembler) finish() *Stream {
	for len(r.pending) > 0 {
		r.skipTo(r.pending[0].off)
	}
	if r.finOff > r.next {
		r.skipTo(r.finOff)
	}
	return r.st
}
