package splice

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"testing"
)

// TestRecordLayer checks the Go record layer the self-test reads the wire
// with: a round trip, the nonce (IV XOR sequence number) and the header as
// additional data, each checked by a record that must then not decrypt.
func TestRecordLayer(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 16)
	iv := []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}
	tx, _ := newRecordLayer(key, iv)
	rx, _ := newRecordLayer(key, iv)
	var wire []byte
	for i, msg := range []string{"first", "", "third"} {
		typ := byte(recordApplicationData)
		if i == 1 {
			typ = recordAlert
		}
		wire = append(wire, tx.seal(typ, []byte(msg))...)
	}
	rd := bytes.NewReader(wire)
	for i, want := range []string{"first", "", "third"} {
		typ, got, err := rx.open(rd)
		if err != nil || string(got) != want || (i == 1) != (typ == recordAlert) {
			t.Fatalf("record %d: type %d %q %v, want %q", i, typ, got, err, want)
		}
	}

	// Record 0 sealed by hand: nonce = IV (sequence 0), AAD = header.
	block, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(block)
	hdr := []byte{23, 3, 3, 0, 6 + 16}
	want := gcm.Seal(append([]byte{}, hdr...), iv, []byte("first\x17"), hdr)
	if got := wire[:len(want)]; !bytes.Equal(got, want) {
		t.Errorf("first record\n got % x\nwant % x", got, want)
	}

	for name, mutate := range map[string]func([]byte){
		"sequence 1 as 0": func(b []byte) { copy(b, tx2(key, iv)) },
		"header":          func(b []byte) { b[1] = 1 },
		"ciphertext":      func(b []byte) { b[7] ^= 1 },
	} {
		b := append([]byte{}, wire[:len(want)]...)
		mutate(b)
		r, _ := newRecordLayer(key, iv)
		if _, _, err := r.open(bytes.NewReader(b)); err == nil {
			t.Errorf("%s: a tampered record decrypted", name)
		}
	}
}

// tx2 is "first" sealed as the second record (sequence 1).
func tx2(key, iv []byte) []byte {
	r, _ := newRecordLayer(key, iv)
	r.seq = 1
	return r.seal(recordApplicationData, []byte("first"))
}
