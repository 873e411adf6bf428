package echo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
)

// UDPReply is ServeUDP's answer to a datagram, as JSON: who answered,
// who asked and what it sent.
type UDPReply struct {
	Info
	// Peer is the datagram's source address as the app saw it: behind a
	// service VIP translated in XDP, the client's own address.
	Peer string `json:"peer"`
	// Data is the datagram's payload, its first MaxUDPEcho bytes.
	Data []byte `json:"data"`
	// Bytes is the payload's length as received.
	Bytes int `json:"bytes"`
}

// MaxUDPEcho bounds the payload a UDPReply carries back, so that the
// reply (JSON, the payload in base64) fits in one 1500-byte frame: a
// fragmented reply would not be translated back by the XDP FIB.
const MaxUDPEcho = 768

// ServeUDP answers every datagram on pc with a UDPReply to its sender,
// until ctx is done (then it closes pc and returns nil) or pc fails.
func ServeUDP(ctx context.Context, pc net.PacketConn, info Info) error {
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("udp echo: read: %w", err)
		}
		rep := UDPReply{Info: info, Peer: from.String(), Data: buf[:min(n, MaxUDPEcho)], Bytes: n}
		b, err := json.Marshal(rep)
		if err != nil {
			return fmt.Errorf("udp echo: %w", err)
		}
		// A datagram that cannot be answered (the peer's route gone) is
		// not the server's failure: the next one is served.
		_, _ = pc.WriteTo(b, from)
	}
}
