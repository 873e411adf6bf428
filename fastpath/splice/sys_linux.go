package splice

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fibmesh/fibmesh/fastpath/ktls"
)

// control runs fn on the socket's fd and returns the first error.
func control(rc syscall.RawConn, fn func(fd int) error) error {
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// socketCookie is the kernel's id of the socket (SO_COOKIE), what
// bpf_get_socket_cookie returns to the verdict.
func socketCookie(rc syscall.RawConn) (uint64, error) {
	var c uint64
	err := control(rc, func(fd int) error {
		v, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
		c = v
		return os.NewSyscallError("getsockopt SO_COOKIE", err)
	})
	return c, err
}

// rcvlowat reads SO_RCVLOWAT.
func rcvlowat(rc syscall.RawConn) (int, error) {
	var v int
	err := control(rc, func(fd int) error {
		n, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT)
		v = n
		return os.NewSyscallError("getsockopt SO_RCVLOWAT", err)
	})
	return v, err
}

// setRcvlowat sets SO_RCVLOWAT. For TCP the kernel then checks whether the
// socket is readable at the new mark and, if it is, calls sk_data_ready:
// Join relies on that to hand the sockmap verdict (and kTLS) bytes that
// arrived while no data_ready could reach them.
func setRcvlowat(rc syscall.RawConn, v int) error {
	return control(rc, func(fd int) error {
		return os.NewSyscallError("setsockopt SO_RCVLOWAT", unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT, v))
	})
}

// maxRcvlowat asks for the highest low-water mark; the kernel caps it at
// half of tcp_rmem[2] (or of a locked SO_RCVBUF).
const maxRcvlowat = math.MaxInt32

// inq is the number of bytes readable from the direction's source, a plain
// TCP socket (SIOCINQ).
func (d *spliceDir) inq() (int, error) {
	d.q, d.qerr = 0, nil
	if err := d.src.Control(d.inqFn); err != nil {
		return 0, err
	}
	return d.q, d.qerr
}

// inqOnce is inq's RawConn.Control callback.
func (d *spliceDir) inqOnce(fd uintptr) {
	n, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	d.q = n
	if err != nil {
		d.qerr = os.NewSyscallError("ioctl SIOCINQ", err)
	}
}

// tcpWritten counts the bytes written into the socket's TCP stream so far,
// up to a per-connection constant: acknowledged bytes plus what is still
// queued (sent or not). Reading the ack count first means a concurrent ack
// can only make the sum smaller than the truth, never larger, so "written
// >= target" never holds early.
func tcpWritten(rc syscall.RawConn) (uint64, error) {
	var w uint64
	err := control(rc, func(fd int) error {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return os.NewSyscallError("getsockopt TCP_INFO", err)
		}
		outq, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
		if err != nil {
			return os.NewSyscallError("ioctl SIOCOUTQ", err)
		}
		w = info.Bytes_acked + uint64(outq)
		return nil
	})
	return w, err
}

// consumedSeq is how many of the bytes the socket received were read (or
// eaten by a stream parser) so far, up to a per-connection constant: bytes
// received minus bytes queued. The two are read under separate locks, so
// it reads until the received count is the same before and after.
// SIOCINQ must be TCP's here: call it before the socket joins a sockhash.
func consumedSeq(rc syscall.RawConn) (uint64, error) {
	var c uint64
	err := control(rc, func(fd int) error {
		for {
			a, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
			if err != nil {
				return os.NewSyscallError("getsockopt TCP_INFO", err)
			}
			q, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
			if err != nil {
				return os.NewSyscallError("ioctl SIOCINQ", err)
			}
			b, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
			if err != nil {
				return os.NewSyscallError("getsockopt TCP_INFO", err)
			}
			if a.Bytes_received == b.Bytes_received {
				c = a.Bytes_received - uint64(q)
				return nil
			}
		}
	})
	return c, err
}

// tcpReceived counts the payload bytes the socket received so far.
func tcpReceived(rc syscall.RawConn) (uint64, error) {
	var r uint64
	err := control(rc, func(fd int) error {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return os.NewSyscallError("getsockopt TCP_INFO", err)
		}
		r = info.Bytes_received
		return nil
	})
	return r, err
}

// tlsTXSeq is the sequence number of the next record kTLS will send
// (getsockopt SOL_TLS TLS_TX returns the cipher's crypto_info, rec_seq
// last). The kernel wants the exact size of the cipher's structure.
func tlsTXSeq(rc syscall.RawConn, c ktls.Cipher) (uint64, error) {
	var size int
	switch c {
	case ktls.CipherAESGCM128:
		size = 40 // tls12_crypto_info_aes_gcm_128
	case ktls.CipherAESGCM256, ktls.CipherChaCha20Poly1305:
		size = 56
	default:
		return 0, fmt.Errorf("splice: TLS_TX of %v: unknown layout", c)
	}
	buf := make([]byte, size)
	err := control(rc, func(fd int) error {
		l := uint32(size)
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_TLS, 1 /* TLS_TX */, uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&l)), 0)
		if e != 0 {
			return os.NewSyscallError("getsockopt SOL_TLS TLS_TX", e)
		}
		if int(l) != size {
			return fmt.Errorf("getsockopt SOL_TLS TLS_TX: %d bytes, want %d", l, size)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(buf[size-8:]), nil
}

// resetTLS ends the kTLS side without close_notify, so its peer sees a cut
// stream: the send half is shut first (the close_notify Close would send
// then fails), then the socket is closed with a zero linger (RST).
func resetTLS(t Offloaded, rc syscall.RawConn) {
	control(rc, func(fd int) error {
		unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		return unix.Shutdown(fd, unix.SHUT_RDWR)
	})
	t.Close()
}
