// Package fastpath is the only part of fibmesh that touches the kernel's
// fast path: BPF maps, XDP attachment, AF_XDP sockets, kTLS and sockmap. Everything above it gets a typed Go API from its sub-packages:
//
//   - fib: loads the XDP FIB (xdp/fib), pins its maps under
//     /sys/fs/bpf/fibmesh/<node>/, attaches it to interfaces and offers
//     Routes, Flows, Policy and Stats over its maps;
//   - punt: AF_XDP sockets that receive the packets the FIB punts, hand
//     them to a Go callback for a verdict, install the resulting flow
//     entry and re-inject the packet;
//   - xsk: AF_XDP sockets (UMEM and rings);
//   - ktls: hands a crypto/tls connection's record layer to the kernel
//     (TLS 1.2/1.3 keys from the handshake, control records, a capability
//     probe and a typed fallback);
//   - splice: joins a plaintext socket and a kTLS socket so the kernel
//     moves the payload both ways (pipe splice, or the xdp/splice sockmap
//     where a self-test proves it).
package fastpath
