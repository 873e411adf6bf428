package ktls

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKeys13RFC8448 checks HKDF-Expand-Label against RFC 8448's simple
// 1-RTT handshake: the server's application write key and IV.
func TestKeys13RFC8448(t *testing.T) {
	s, _ := suiteOf(0x1301)
	secret := unhex(t, "a1 1a f9 f0 55 31 f8 56 ad 47 11 6b 45 a9 50 32 82 04 b4 f4 4b fb 6b 3a 4b 4f 1f 3f cb 63 16 43")
	k := keys13(s, secret, 0)
	if want := unhex(t, "9f 02 28 3b 6c 9c 07 ef c2 6b b9 f2 ac 92 e3 56"); !bytes.Equal(k.Key, want) {
		t.Errorf("key = %x, want %x", k.Key, want)
	}
	if want := unhex(t, "cf 78 2b 88 dd 83 54 9a ad f1 e9 84"); !bytes.Equal(k.IV, want) {
		t.Errorf("iv = %x, want %x", k.IV, want)
	}
}

// TestPRF12 checks the TLS 1.2 PRF against the widely used P_SHA256 test
// vector (IETF TLS list, 2009).
func TestPRF12(t *testing.T) {
	secret := unhex(t, "9b be 43 6b a9 40 f0 17 b1 76 52 84 9a 71 db 35")
	seed := unhex(t, "a0 ba 9f 93 6c da 31 18 27 a6 f7 96 ff d5 19 8c")
	want := unhex(t, "e3 f2 29 ba 72 7b e1 7b 8d 12 26 20 55 7c d4 53 c2 aa b2 1d 07 c3 d4 95 32 9b 52 d4 e6 1e db 5a"+
		"6b 30 17 91 e9 0d 35 c9 c9 a4 6b 4e 14 ba f9 af 0f a0 22 f7 07 7d ef 17 ab fd 37 97 c0 56 4b ab"+
		"4f bc 91 66 6e 9d ef 9b 97 fc e3 4f 79 67 89 ba a4 80 82 d1 22 ee 42 c5 a7 2e 5a 51 10 ff f7 01"+
		"87 34 7b 66")
	if got := prf12(sha256.New, secret, "test label", seed, len(want)); !bytes.Equal(got, want) {
		t.Errorf("PRF = %x\nwant  %x", got, want)
	}
}

// TestCryptoInfo checks the byte layout of the kernel structs.
func TestCryptoInfo(t *testing.T) {
	iv := unhex(t, "000102030405060708090a0b")
	tests := []struct {
		name string
		k    Keys
		want string // hex of the struct after the 4-byte header
		size int
	}{
		{"aes128", Keys{Version: VersionTLS13, Cipher: CipherAESGCM128, Key: bytes.Repeat([]byte{0xaa}, 16), IV: iv, Seq: 1},
			"0405060708090a0b" + strings.Repeat("aa", 16) + "00010203" + "0000000000000001", 40},
		{"aes256", Keys{Version: VersionTLS12, Cipher: CipherAESGCM256, Key: bytes.Repeat([]byte{0xbb}, 32), IV: iv, Seq: 0x0102},
			"0405060708090a0b" + strings.Repeat("bb", 32) + "00010203" + "0000000000000102", 56},
		{"chacha", Keys{Version: VersionTLS13, Cipher: CipherChaCha20Poly1305, Key: bytes.Repeat([]byte{0xcc}, 32), IV: iv},
			"000102030405060708090a0b" + strings.Repeat("cc", 32) + "0000000000000000", 56},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := cryptoInfoForTest(tt.k)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != tt.size {
				t.Errorf("size %d, want %d (sizeof struct tls12_crypto_info_*)", len(b), tt.size)
			}
			if got := hex.EncodeToString(b[4:]); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
	if _, err := cryptoInfoForTest(Keys{Version: VersionTLS13, Cipher: CipherAESGCM128, Key: make([]byte, 32), IV: iv}); err == nil {
		t.Error("a 32-byte AES-128 key was accepted")
	}
	if _, err := cryptoInfoForTest(Keys{Version: 0x0302, Cipher: CipherAESGCM128, Key: make([]byte, 16), IV: iv}); err == nil {
		t.Error("TLS 1.1 was accepted")
	}
}

func TestWithSeq(t *testing.T) {
	k := Keys{Version: VersionTLS12, Cipher: CipherAESGCM128, Key: make([]byte, 16), IV: unhex(t, "0102030400000000000000ff")}
	got := k.withSeq(7)
	if want := unhex(t, "010203040000000000000007"); !bytes.Equal(got.IV, want) || got.Seq != 7 {
		t.Errorf("withSeq(7) = %x seq %d, want %x seq 7", got.IV, got.Seq, want)
	}
	c := Keys{Version: VersionTLS12, Cipher: CipherChaCha20Poly1305, IV: unhex(t, "0102030400000000000000ff")}
	if got := c.withSeq(7); !bytes.Equal(got.IV, c.IV) {
		t.Errorf("ChaCha IV changed by withSeq: %x", got.IV)
	}
}
