package ktls

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// From include/uapi/linux/tls.h (golang.org/x/sys/unix has SOL_TLS and
// TCP_ULP but not these).
const (
	tlsTX            = 1 // TLS_TX
	tlsRX            = 2 // TLS_RX
	tlsSetRecordType = 1 // TLS_SET_RECORD_TYPE (cmsg on send)
	tlsGetRecordType = 2 // TLS_GET_RECORD_TYPE (cmsg on receive)
)

// cryptoInfo marshals k as the kernel's struct tls12_crypto_info_* for its
// cipher: {u16 version; u16 cipher_type; iv; key; salt; rec_seq}. For the
// AES-GCM ciphers the kernel splits the 12-byte nonce into a 4-byte salt
// and an 8-byte iv; ChaCha20-Poly1305 takes all 12 bytes as iv, no salt.
func cryptoInfo(k Keys) ([]byte, error) {
	if err := k.validate(); err != nil {
		return nil, err
	}
	b := make([]byte, 4, 56)
	binary.NativeEndian.PutUint16(b[0:], uint16(k.Version))
	binary.NativeEndian.PutUint16(b[2:], uint16(k.Cipher))
	if k.Cipher == CipherChaCha20Poly1305 {
		b = append(b, k.IV...)
		b = append(b, k.Key...)
	} else {
		b = append(b, k.IV[4:12]...)
		b = append(b, k.Key...)
		b = append(b, k.IV[:4]...)
	}
	return binary.BigEndian.AppendUint64(b, k.Seq), nil
}

// EnableULP sets the "tls" upper-layer protocol on an established TCP
// socket. A kernel without kTLS refuses it (ENOENT once the tls module
// cannot be loaded): that is an *UnsupportedError and the socket is left as
// it was.
func EnableULP(rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_ULP, "tls")
	}); err != nil {
		return fmt.Errorf("ktls: set TCP_ULP: %w", err)
	}
	switch serr {
	case nil:
		return nil
	case unix.ENOENT:
		return &UnsupportedError{Reason: "the kernel has no tls ULP (CONFIG_TLS off or tls.ko not loadable; see /proc/sys/net/ipv4/tcp_available_ulp)"}
	}
	return fmt.Errorf("ktls: setsockopt TCP_ULP tls: %w", serr)
}

// SetKeys installs one direction's keys on a socket that has the tls ULP.
// The kernel rejects an unknown cipher or version with EINVAL or
// ENOPROTOOPT (an *UnsupportedError), and a second install in the same
// direction with EBUSY on kernels without TLS 1.3 re-keying.
func SetKeys(rc syscall.RawConn, dir Direction, k Keys) error {
	info, err := cryptoInfo(k)
	if err != nil {
		return err
	}
	opt := tlsTX
	if dir == RX {
		opt = tlsRX
	} else if dir != TX {
		return fmt.Errorf("ktls: direction %v: want TX or RX", dir)
	}
	return setCryptoInfo(rc, dir, opt, info, k.Version, k.Cipher)
}

func setCryptoInfo(rc syscall.RawConn, dir Direction, opt int, info []byte, v Version, c Cipher) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptString(int(fd), unix.SOL_TLS, opt, string(info))
	}); err != nil {
		return fmt.Errorf("ktls: set TLS_%v: %w", dir, err)
	}
	switch serr {
	case nil:
		return nil
	case unix.EINVAL, unix.ENOPROTOOPT, unix.EOPNOTSUPP, unix.ENOENT:
		return &UnsupportedError{Version: v, Cipher: c, Direction: dir,
			Reason: fmt.Sprintf("setsockopt(SOL_TLS, TLS_%v): %v", dir, serr)}
	}
	return fmt.Errorf("ktls: setsockopt(SOL_TLS, TLS_%v) %v %v: %w", dir, v, c, serr)
}
