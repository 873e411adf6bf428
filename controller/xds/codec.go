package xds

import (
	"fmt"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// exactCodec is gRPC's proto codec with two changes for the server's
// responses:
//
//   - A discovery response is encoded around its resources' bytes
//     without copying them: the resources are the store's entries,
//     marshalled once when pushed, and every stream's response refers to
//     the same bytes (encodeDelta, encodeSotW). Marshalling each
//     response whole copied every resource once more per stream: at
//     1,000 agents, ~15 % of the controller's CPU on an endpoint change,
//     and 3.4 GB of garbage during a first sync. Values under
//     inlineBelow are copied into the response's own buffer, see there.
//   - Any other message is marshalled into a buffer of its own size:
//     gRPC's codec takes each message's buffer from a pool whose tiers
//     jump from 32 KiB to 1 MiB, so every message over 32 KiB held 1 MiB.
//
// Requests are decoded by gRPC's codec.
type exactCodec struct{ encoding.CodecV2 }

func (exactCodec) Marshal(v any) (mem.BufferSlice, error) {
	switch r := v.(type) {
	case *discovery.DeltaDiscoveryResponse:
		if bs, ok := encodeDelta(r); ok {
			return bs, nil
		}
	case *discovery.DiscoveryResponse:
		if bs, ok := encodeSotW(r); ok {
			return bs, nil
		}
	}
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("xds codec: %T is not a proto message", v)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

// encodeDelta encodes r as proto.Marshal would, except for field order
// (protobuf parsers accept any: a Resource's name and version come before
// its Any, and the response's other fields before its resources), with
// every resource's value referenced rather than copied. ok is false for a
// response using fields the server does not set; those are marshalled
// whole.
func encodeDelta(r *discovery.DeltaDiscoveryResponse) (_ mem.BufferSlice, ok bool) {
	if r.ControlPlane != nil || len(r.RemovedResourceNames) > 0 || len(r.ResourceErrors) > 0 || len(r.ProtoReflect().GetUnknown()) > 0 {
		return nil, false
	}
	for _, x := range r.Resources {
		if !plainResource(x) {
			return nil, false
		}
	}
	inline := 0
	for _, x := range r.Resources {
		inline += inlined(x.GetResource())
	}
	var w wire
	w.grow(len(r.SystemVersionInfo) + len(r.TypeUrl) + len(r.Nonce) + 16 + len(r.Resources)*(len(r.TypeUrl)+96) + inline)
	w.str(1, r.SystemVersionInfo)
	w.str(4, r.TypeUrl)
	w.str(5, r.Nonce)
	for _, n := range r.RemovedResources {
		w.strAlways(6, n)
	}
	for _, x := range r.Resources {
		a := x.GetResource()
		size := sizeStr(3, x.Name) + sizeStr(1, x.Version)
		if a != nil {
			size += sizeMsg(anySize(a))
		}
		w.tag(2, protowire.BytesType)
		w.varint(uint64(size))
		w.str(3, x.Name)
		w.str(1, x.Version)
		if a != nil {
			w.tag(2, protowire.BytesType)
			w.anyHead(a)
			w.value(a.Value)
		}
	}
	return w.slice(), true
}

// encodeSotW is encodeDelta for a state-of-the-world response: its Anys'
// values are referenced.
func encodeSotW(r *discovery.DiscoveryResponse) (_ mem.BufferSlice, ok bool) {
	if r.ControlPlane != nil || len(r.ResourceErrors) > 0 || len(r.ProtoReflect().GetUnknown()) > 0 {
		return nil, false
	}
	for _, a := range r.Resources {
		if a == nil || len(a.ProtoReflect().GetUnknown()) > 0 {
			return nil, false
		}
	}
	inline := 0
	for _, a := range r.Resources {
		inline += inlined(a)
	}
	var w wire
	w.grow(len(r.VersionInfo) + len(r.TypeUrl) + len(r.Nonce) + 16 + len(r.Resources)*(len(r.TypeUrl)+16) + inline)
	w.str(1, r.VersionInfo)
	if r.Canary {
		w.tag(3, protowire.VarintType)
		w.varint(1)
	}
	w.str(4, r.TypeUrl)
	w.str(5, r.Nonce)
	for _, a := range r.Resources {
		w.tag(2, protowire.BytesType)
		w.anyHead(a)
		w.value(a.Value)
	}
	return w.slice(), true
}

// plainResource reports whether x has only the fields the server sets:
// name, version and the resource.
func plainResource(x *discovery.Resource) bool {
	if x == nil || x.ResourceName != nil || len(x.Aliases) > 0 || x.Ttl != nil || x.CacheControl != nil || x.Metadata != nil ||
		len(x.ProtoReflect().GetUnknown()) > 0 {
		return false
	}
	a := x.GetResource()
	return a == nil || len(a.ProtoReflect().GetUnknown()) == 0
}

// wire builds an encoding as small pieces written into one buffer and
// large values referenced (value): pieces are offsets into buf until slice, as buf
// may move while it grows.
type wire struct {
	buf   []byte
	parts []wirePart
	from  int // start of the piece of buf being written
}

// wirePart is buf[from:to], or ref when ref is not nil.
type wirePart struct {
	from, to int
	ref      []byte
}

func (w *wire) grow(n int) { w.buf = make([]byte, 0, n) }

func (w *wire) tag(num protowire.Number, typ protowire.Type) {
	w.buf = protowire.AppendTag(w.buf, num, typ)
}

func (w *wire) varint(v uint64) { w.buf = protowire.AppendVarint(w.buf, v) }

// str writes a string field, left out when empty (proto3).
func (w *wire) str(num protowire.Number, s string) {
	if s != "" {
		w.strAlways(num, s)
	}
}

// strAlways writes a string field even when empty (a repeated string).
func (w *wire) strAlways(num protowire.Number, s string) {
	w.tag(num, protowire.BytesType)
	w.buf = protowire.AppendString(w.buf, s)
}

// anyHead writes an Any's length, its type URL and its value's tag and
// length: all but the value's bytes.
func (w *wire) anyHead(a *anypb.Any) {
	w.varint(uint64(anySize(a)))
	w.str(1, a.TypeUrl)
	if len(a.Value) > 0 {
		w.tag(2, protowire.BytesType)
		w.varint(uint64(len(a.Value)))
	}
}

// inlineBelow is the size under which a resource's value is copied into
// the response's buffer rather than referenced. Each reference is a
// piece gRPC handles on its own (a boxed mem.Buffer, a reader step):
// referencing every value was 61 % of the controller's allocations in
// bench-xds (7.7 million 24-byte objects, most of them for clusters and
// load assignments of a few hundred bytes), and the churn of such small
// objects during a first sync left the heap's spans fragmented. Copying
// a value of under 2 KiB costs less than the piece it saves; the large
// values (listeners, route configurations, flow tables) stay shared.
const inlineBelow = 2 << 10

// inlined is how many bytes of a's value the encoding copies.
func inlined(a *anypb.Any) int {
	if n := len(a.GetValue()); n < inlineBelow {
		return n
	}
	return 0
}

// value writes b: copied when under inlineBelow, else referenced.
func (w *wire) value(b []byte) {
	if len(b) < inlineBelow {
		w.buf = append(w.buf, b...)
		return
	}
	w.ref(b)
}

// ref ends the current piece and references b (not copied).
func (w *wire) ref(b []byte) {
	if len(b) == 0 {
		return
	}
	w.parts = append(w.parts, wirePart{from: w.from, to: len(w.buf)}, wirePart{ref: b})
	w.from = len(w.buf)
}

// slice is the encoding's buffers, in order.
func (w *wire) slice() mem.BufferSlice {
	w.parts = append(w.parts, wirePart{from: w.from, to: len(w.buf)})
	out := make(mem.BufferSlice, 0, len(w.parts))
	for _, p := range w.parts {
		b := p.ref
		if b == nil {
			b = w.buf[p.from:p.to]
		}
		if len(b) > 0 {
			out = append(out, mem.SliceBuffer(b))
		}
	}
	return out
}

// anySize is the encoded size of a's fields.
func anySize(a *anypb.Any) int {
	n := sizeStr(1, a.TypeUrl)
	if len(a.Value) > 0 {
		n += protowire.SizeTag(2) + protowire.SizeBytes(len(a.Value))
	}
	return n
}

// sizeStr is a string field's encoded size (0 when empty).
func sizeStr(num protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(len(s))
}

// sizeMsg is an embedded message field's encoded size, given its content's.
func sizeMsg(n int) int { return protowire.SizeTag(2) + protowire.SizeBytes(n) }
