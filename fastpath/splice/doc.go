// Package splice joins an application's plaintext socket and the kTLS
// socket of its mTLS connection so that the kernel moves the payload both
// ways and userspace never reads it (the "socket fast path" of
// docs/ARCHITECTURE.md).
//
// Two engines do the moving:
//
//   - ModeSplice: per direction a pipe and splice(2), socket to pipe to
//     socket, driven from Go's netpoller (no busy loop). kTLS decrypts on
//     splice out of its socket and encrypts on splice into it, so this works
//     on every kernel that has kTLS. At a TLS control record the kernel
//     refuses the splice (EINVAL); the engine then lets the kTLS side's Read
//     consume it (close_notify ends the direction, an alert fails the join).
//   - ModeSockmap: both sockets in the sockhash of the xdp/splice program,
//     whose stream verdict redirects every message to the peer socket's
//     egress. No goroutine touches the bytes; one goroutine per pair sits in
//     the kTLS side's Read, because kTLS runs the verdict from its receive
//     path. The socket must enter the sockhash before its tls ULP is set
//     (Sockmap.Prepare), and Sockmap.SelfTest proves the path on the running
//     kernel: ciphertext on the wire, plaintext intact, both ways, the bulk
//     in the kernel. Debian 12's 6.1 refuses kTLS sockets in a sockhash, and
//     6.12 cannot cut the peer's full-size records in the verdict (they go
//     through the reader, correct but in userspace); see docs/splice.md.
//
// Join starts an engine on a pair and returns a Pair: byte counters per
// direction (readable live), Wait for the end, Close to tear it down. A
// half-close is propagated: EOF from the application becomes close_notify
// and a TCP FIN on the kTLS side; close_notify from the kTLS peer becomes a
// FIN to the application. Any other end (a reset, an alert, TCP closing
// without close_notify) fails the join and resets both connections, so
// neither end can mistake a cut stream for a complete one.
//
// DefaultMode says which engine Join uses when Options.Mode is zero, and why.
package splice
