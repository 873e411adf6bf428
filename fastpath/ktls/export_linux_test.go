package ktls

func cryptoInfoForTest(k Keys) ([]byte, error) { return cryptoInfo(k) }

// setRawCipherForTest installs a cipher this package does not know (to see
// the kernel refuse one) with AES-128-GCM's struct layout.
func setRawCipherForTest(c *Conn, dir Direction, cipher Cipher) error {
	k := Keys{Version: VersionTLS13, Cipher: CipherAESGCM128, Key: make([]byte, 16), IV: make([]byte, 12)}
	info, _ := cryptoInfo(k)
	info[2], info[3] = byte(cipher), byte(cipher>>8)
	opt := tlsTX
	if dir == RX {
		opt = tlsRX
	}
	return setCryptoInfo(c.rc, dir, opt, info, VersionTLS13, cipher)
}

// sendRecordForTest sends a raw record of type typ (a peer's KeyUpdate, an
// alert) through the kernel.
func sendRecordForTest(c *Conn, typ byte, b []byte) error { return c.sendRecord(typ, b) }
