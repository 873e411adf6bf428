package ktls

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"hash"
)

// Version is a TLS protocol version as the kernel names it (the wire value).
type Version uint16

// The TLS versions kTLS supports.
const (
	VersionTLS12 Version = tls.VersionTLS12
	VersionTLS13 Version = tls.VersionTLS13
)

func (v Version) String() string {
	switch v {
	case VersionTLS12:
		return "TLS1.2"
	case VersionTLS13:
		return "TLS1.3"
	}
	return fmt.Sprintf("TLS(0x%04x)", uint16(v))
}

// Cipher is a kTLS cipher type (TLS_CIPHER_* in linux/tls.h).
type Cipher uint16

// The ciphers fibmesh installs. The values are the kernel's.
const (
	CipherAESGCM128        Cipher = 51
	CipherAESGCM256        Cipher = 52
	CipherChaCha20Poly1305 Cipher = 54
)

// Ciphers lists every cipher this package can install, in probe order.
var Ciphers = []Cipher{CipherAESGCM128, CipherAESGCM256, CipherChaCha20Poly1305}

func (c Cipher) String() string {
	switch c {
	case CipherAESGCM128:
		return "AES-128-GCM"
	case CipherAESGCM256:
		return "AES-256-GCM"
	case CipherChaCha20Poly1305:
		return "ChaCha20-Poly1305"
	}
	return fmt.Sprintf("cipher(%d)", uint16(c))
}

// keyLen is the cipher's key length in bytes.
func (c Cipher) keyLen() int {
	if c == CipherAESGCM128 {
		return 16
	}
	return 32
}

// Direction is one half of a connection's record layer.
type Direction int

// TX protects what this side sends, RX verifies what it receives.
const (
	TX Direction = 1 // TLS_TX
	RX Direction = 2 // TLS_RX
)

func (d Direction) String() string {
	switch d {
	case TX:
		return "TX"
	case RX:
		return "RX"
	}
	return fmt.Sprintf("direction(%d)", int(d))
}

// Keys is one direction's record protection state, as the kernel takes it.
type Keys struct {
	Version Version
	Cipher  Cipher
	// Key is the traffic key (16 or 32 bytes).
	Key []byte
	// IV is the 12-byte per-record nonce base: for TLS 1.3 and for
	// ChaCha20-Poly1305 the full write IV; for TLS 1.2 AES-GCM the 4-byte
	// implicit salt followed by the 8-byte explicit nonce of the next
	// record (Go, like most stacks, uses the sequence number).
	IV []byte
	// Seq is the sequence number of the next record.
	Seq uint64
}

// validate checks lengths, so a bad Keys never reaches setsockopt.
func (k Keys) validate() error {
	if k.Version != VersionTLS12 && k.Version != VersionTLS13 {
		return fmt.Errorf("ktls: version %v: want TLS1.2 or TLS1.3", k.Version)
	}
	switch k.Cipher {
	case CipherAESGCM128, CipherAESGCM256, CipherChaCha20Poly1305:
	default:
		return fmt.Errorf("ktls: %v is not supported: want AES-128-GCM, AES-256-GCM or ChaCha20-Poly1305", k.Cipher)
	}
	if len(k.Key) != k.Cipher.keyLen() {
		return fmt.Errorf("ktls: %v key is %d bytes, want %d", k.Cipher, len(k.Key), k.Cipher.keyLen())
	}
	if len(k.IV) != 12 {
		return fmt.Errorf("ktls: IV is %d bytes, want 12", len(k.IV))
	}
	return nil
}

// suite is what Offload needs to know about a negotiated cipher suite.
type suite struct {
	cipher Cipher
	hash   func() hash.Hash
}

// suiteOf maps a crypto/tls cipher suite to its kTLS cipher and hash; ok is
// false for suites kTLS cannot take (CBC, 3DES, ...).
func suiteOf(id uint16) (suite, bool) {
	switch id {
	case tls.TLS_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_RSA_WITH_AES_128_GCM_SHA256:
		return suite{CipherAESGCM128, sha256.New}, true
	case tls.TLS_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_RSA_WITH_AES_256_GCM_SHA384:
		return suite{CipherAESGCM256, sha512.New384}, true
	case tls.TLS_CHACHA20_POLY1305_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256:
		return suite{CipherChaCha20Poly1305, sha256.New}, true
	}
	return suite{}, false
}

// expandLabel is TLS 1.3's HKDF-Expand-Label (RFC 8446, section 7.1).
func expandLabel(h func() hash.Hash, secret []byte, label string, context []byte, length int) []byte {
	full := "tls13 " + label
	info := make([]byte, 0, 2+1+len(full)+1+len(context))
	info = binary.BigEndian.AppendUint16(info, uint16(length))
	info = append(info, byte(len(full)))
	info = append(info, full...)
	info = append(info, byte(len(context)))
	info = append(info, context...)
	out, err := hkdf.Expand(h, secret, string(info), length)
	if err != nil {
		// Only possible for length > 255*hash size: never for keys and IVs.
		panic("ktls: HKDF-Expand-Label: " + err.Error())
	}
	return out
}

// keys13 derives TLS 1.3 traffic keys from an application traffic secret.
func keys13(s suite, secret []byte, seq uint64) Keys {
	return Keys{
		Version: VersionTLS13,
		Cipher:  s.cipher,
		Key:     expandLabel(s.hash, secret, "key", nil, s.cipher.keyLen()),
		IV:      expandLabel(s.hash, secret, "iv", nil, 12),
		Seq:     seq,
	}
}

// nextSecret is the TLS 1.3 KeyUpdate step:
// application_traffic_secret_N+1 = HKDF-Expand-Label(secret_N, "traffic upd", "", Hash.length).
func nextSecret(s suite, secret []byte) []byte {
	return expandLabel(s.hash, secret, "traffic upd", nil, s.hash().Size())
}

// prf12 is the TLS 1.2 PRF, P_hash(secret, label + seed) (RFC 5246, section 5).
func prf12(h func() hash.Hash, secret []byte, label string, seed []byte, n int) []byte {
	ls := append([]byte(label), seed...)
	mac := hmac.New(h, secret)
	mac.Write(ls)
	a := mac.Sum(nil)
	out := make([]byte, 0, n+mac.Size())
	for len(out) < n {
		mac.Reset()
		mac.Write(a)
		mac.Write(ls)
		out = mac.Sum(out)
		mac.Reset()
		mac.Write(a)
		a = mac.Sum(nil)
	}
	return out[:n]
}

// keys12 derives both directions' TLS 1.2 AEAD keys from the master secret
// (RFC 5246 section 6.3; RFC 5288 and RFC 7905 for the IV lengths). client
// is the client's write state, server the server's; sequence numbers are
// set by the caller.
func keys12(s suite, master, clientRandom, serverRandom []byte) (client, server Keys) {
	kl := s.cipher.keyLen()
	ivl := 4 // AES-GCM: implicit salt; the explicit nonce travels per record
	if s.cipher == CipherChaCha20Poly1305 {
		ivl = 12
	}
	seed := append(append([]byte{}, serverRandom...), clientRandom...)
	kb := prf12(s.hash, master, "key expansion", seed, 2*kl+2*ivl)
	mk := func(key, iv []byte) Keys {
		k := Keys{Version: VersionTLS12, Cipher: s.cipher, Key: key, IV: make([]byte, 12)}
		copy(k.IV, iv)
		return k
	}
	client = mk(kb[:kl], kb[2*kl:2*kl+ivl])
	server = mk(kb[kl:2*kl], kb[2*kl+ivl:2*kl+2*ivl])
	return client, server
}

// withSeq returns k for the record numbered seq. For TLS 1.2 AES-GCM the
// explicit nonce of the next record is the sequence number (what Go and
// the kernel both send), so it is written into IV[4:].
func (k Keys) withSeq(seq uint64) Keys {
	k.Seq = seq
	if k.Version == VersionTLS12 && k.Cipher != CipherChaCha20Poly1305 {
		iv := make([]byte, 12)
		copy(iv, k.IV[:4])
		binary.BigEndian.PutUint64(iv[4:], seq)
		k.IV = iv
	}
	return k
}
