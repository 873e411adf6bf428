package admission

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// KeyPairFiles is a TLS serving certificate read from a PEM certificate
// (chain) file and a PEM key file, such as a Secret mounted by
// cert-manager, and read again at the first handshake after either file
// changes (its size or modification time), so that a renewed certificate
// is served without a restart. A pair that does not load (the key written
// but not yet the certificate) leaves the previous one in use.
type KeyPairFiles struct {
	certFile, keyFile string

	mu        sync.Mutex
	cert      *tls.Certificate
	certStamp stamp
	keyStamp  stamp
}

type stamp struct {
	size int64
	mod  time.Time
}

func stampOf(path string) (stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}, err
	}
	return stamp{fi.Size(), fi.ModTime()}, nil
}

// LoadKeyPair reads the pair once, so that a bad pair fails at start-up.
func LoadKeyPair(certFile, keyFile string) (*KeyPairFiles, error) {
	k := &KeyPairFiles{certFile: certFile, keyFile: keyFile}
	if err := k.reload(); err != nil {
		return nil, err
	}
	return k, nil
}

func (k *KeyPairFiles) reload() error {
	cs, err := stampOf(k.certFile)
	if err != nil {
		return fmt.Errorf("webhook certificate: %w", err)
	}
	ks, err := stampOf(k.keyFile)
	if err != nil {
		return fmt.Errorf("webhook key: %w", err)
	}
	if k.cert != nil && cs == k.certStamp && ks == k.keyStamp {
		return nil
	}
	c, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		return fmt.Errorf("webhook certificate %s and key %s: %w", k.certFile, k.keyFile, err)
	}
	k.cert, k.certStamp, k.keyStamp = &c, cs, ks
	return nil
}

// GetCertificate implements tls.Config.GetCertificate: the pair as the
// files hold it now, or the last one that loaded.
func (k *KeyPairFiles) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	_ = k.reload() // on error, the previous pair serves on
	return k.cert, nil
}
