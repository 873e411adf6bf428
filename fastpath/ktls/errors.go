package ktls

import (
	"errors"
	"fmt"
)

// ErrUnsupported is wrapped by every error that means "this kernel cannot
// take this connection's record layer": the caller keeps the connection in
// userspace (correct, slower, never broken).
var ErrUnsupported = errors.New("kTLS unsupported")

// ErrKeyUpdate is wrapped when the peer sent a TLS 1.3 KeyUpdate and the
// kernel cannot install the next key (Linux before 6.14 accepts TLS_RX only
// once). The connection is failed: its next records could not be decrypted.
var ErrKeyUpdate = errors.New("peer KeyUpdate cannot be applied in the kernel")

// ErrTruncated is wrapped when the peer closed TCP without a close_notify
// alert: the stream may have been cut short.
var ErrTruncated = errors.New("connection closed without close_notify")

// UnsupportedError says what the kernel could not do and why. It wraps
// ErrUnsupported.
type UnsupportedError struct {
	Version   Version
	Cipher    Cipher
	Direction Direction // 0 when the whole ULP is missing
	Reason    string
}

func (e *UnsupportedError) Error() string {
	what := "kTLS"
	if e.Cipher != 0 {
		what = fmt.Sprintf("kTLS %v %v", e.Version, e.Cipher)
		if e.Direction != 0 {
			what += " " + e.Direction.String()
		}
	}
	return fmt.Sprintf("%s unsupported: %s", what, e.Reason)
}

// Unwrap makes errors.Is(err, ErrUnsupported) true.
func (e *UnsupportedError) Unwrap() error { return ErrUnsupported }

// AlertError is a TLS alert received from the peer (other than
// close_notify, which ends the stream with io.EOF).
type AlertError struct {
	Level       uint8 // 1 warning, 2 fatal
	Description uint8 // RFC 8446 section 6
}

func (e *AlertError) Error() string {
	return fmt.Sprintf("ktls: peer sent %s alert %s (%d)", alertLevel(e.Level), alertName(e.Description), e.Description)
}

func alertLevel(l uint8) string {
	switch l {
	case 1:
		return "warning"
	case 2:
		return "fatal"
	}
	return fmt.Sprintf("level-%d", l)
}

// alertName names the alerts a peer is likely to send.
func alertName(d uint8) string {
	switch d {
	case alertCloseNotify:
		return "close_notify"
	case 10:
		return "unexpected_message"
	case 20:
		return "bad_record_mac"
	case 22:
		return "record_overflow"
	case 40:
		return "handshake_failure"
	case 42:
		return "bad_certificate"
	case 46:
		return "certificate_unknown"
	case 48:
		return "unknown_ca"
	case 50:
		return "decode_error"
	case 51:
		return "decrypt_error"
	case 80:
		return "internal_error"
	case 90:
		return "user_canceled"
	case 116:
		return "certificate_required"
	}
	return "unknown"
}

// TLS record content types and the alert and handshake codes this package
// acts on.
const (
	recordChangeCipherSpec = 20
	recordAlert            = 21
	recordHandshake        = 22
	recordApplicationData  = 23

	alertCloseNotify       = 0
	alertUnexpectedMessage = 10
	alertInternalError     = 80

	handshakeNewSessionTicket = 4
	handshakeKeyUpdate        = 24
)
