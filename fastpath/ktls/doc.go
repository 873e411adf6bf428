// Package ktls hands the record layer of a TLS connection that Go's
// crypto/tls has just handshaken to the kernel (kTLS), so that the payload
// bytes no longer cross into userspace for encryption.
//
// The flow is:
//
//	tc, err := ktls.Client(ctx, rawTCP, cfg) // or ktls.Server
//	// tc is a *tls.Conn wrapper: read or write through it as long as L7
//	// work is needed (sniff a request, check authorization, ...).
//	kc, err := tc.Offload()                  // kernel does the crypto from now on
//	if errors.Is(err, ktls.ErrUnsupported) {
//		// the kernel lacks kTLS or this suite/direction: keep using tc
//	}
//
// Client and Server run the handshake over a reader that never reads past a
// TLS record boundary, so when the handshake returns no ciphertext sits in
// Go's buffers; they record the traffic secrets through tls.Config's key log
// and count the records each way, so Offload knows the exact keys, IVs and
// sequence numbers (TLS 1.3: HKDF-Expand-Label of the traffic secrets; TLS
// 1.2: the PRF key block). Plaintext that crypto/tls decrypted but the caller
// has not read yet is handed back by Conn.Read first (and by Conn.Pending).
// Server disables session tickets: a ticket sent under the application key
// would shift the sequence numbers.
//
// A Conn reads with recvmsg and the TLS_GET_RECORD_TYPE control message, so
// control records are never mistaken for data: close_notify ends the stream
// with io.EOF, any other alert is an *AlertError, a NewSessionTicket is
// dropped, and a KeyUpdate re-keys the direction where the kernel accepts a
// second TLS_RX/TLS_TX (Linux 6.14 and later for TLS 1.3) or fails the
// connection with ErrKeyUpdate where it does not. Nothing is ever passed on
// undecrypted: a record that fails authentication is an error (EBADMSG).
//
// Probe reports what the running kernel offers (the ULP, each suite and
// direction, device offload counters). Offload checks it first and returns
// an *UnsupportedError (errors.Is ErrUnsupported) without touching the
// socket when the suite cannot be installed, so the caller keeps the
// connection in userspace.
package ktls
