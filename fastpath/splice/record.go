package splice

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// recordLayer is one direction of a TLS 1.3 AES-GCM record layer in Go
// (RFC 8446 section 5.2), the far end of SelfTest's kTLS socket: it reads
// what kTLS really put on the wire and checks it is TLS records that
// decrypt to the expected plaintext, and writes records for kTLS to
// decrypt. It never pads and accepts only unpadded records, like kTLS.
type recordLayer struct {
	aead cipher.AEAD
	iv   [12]byte
	seq  uint64
}

// TLS 1.3 record content types (RFC 8446 section 5.1).
const (
	recordAlert           = 21
	recordApplicationData = 23
)

func newRecordLayer(key, iv []byte) (*recordLayer, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	if len(iv) != 12 {
		return nil, fmt.Errorf("IV is %d bytes, want 12", len(iv))
	}
	r := &recordLayer{aead: aead}
	copy(r.iv[:], iv)
	return r, nil
}

// nonce is the TLS 1.3 per-record nonce: the IV XOR the 64-bit sequence
// number, left-padded to 12 bytes.
func (r *recordLayer) nonce() []byte {
	n := r.iv
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], r.seq)
	for i := range s {
		n[4+i] ^= s[i]
	}
	return n[:]
}

// seal returns one record carrying data of content type typ.
func (r *recordLayer) seal(typ byte, data []byte) []byte {
	inner := make([]byte, 0, len(data)+1)
	inner = append(append(inner, data...), typ)
	n := len(inner) + r.aead.Overhead()
	hdr := []byte{recordApplicationData, 3, 3, byte(n >> 8), byte(n)}
	out := r.aead.Seal(hdr, r.nonce(), inner, hdr)
	r.seq++
	return out
}

// open reads one record from rd and returns its content type and data.
// The additional data is the 5-byte header, as on the wire.
func (r *recordLayer) open(rd io.Reader) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(rd, hdr[:]); err != nil {
		return 0, nil, err
	}
	if hdr[0] != recordApplicationData || hdr[1] != 3 || hdr[2] != 3 {
		return 0, nil, fmt.Errorf("record header % x is not a TLS 1.3 record (plaintext on the wire?)", hdr)
	}
	n := int(binary.BigEndian.Uint16(hdr[3:]))
	if n < r.aead.Overhead()+1 || n > 1<<14+256 {
		return 0, nil, fmt.Errorf("record of %d bytes", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(rd, body); err != nil {
		return 0, nil, fmt.Errorf("record body: %w", err)
	}
	inner, err := r.aead.Open(body[:0], r.nonce(), body, hdr[:])
	if err != nil {
		return 0, nil, fmt.Errorf("record %d does not decrypt: %w", r.seq, err)
	}
	r.seq++
	if len(inner) == 0 || inner[len(inner)-1] == 0 {
		return 0, nil, errors.New("padded or empty inner plaintext")
	}
	return inner[len(inner)-1], inner[:len(inner)-1], nil
}
