package splice

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fibmesh/fibmesh/fastpath/ktls"
	"github.com/fibmesh/fibmesh/internal/loopback"
)

// TestKernelSockhashKTLSOrder pins what the design rests on: a socket
// with the tls ULP cannot join a sockhash (EINVAL), so Prepare must come
// before the ULP. It also records whether this kernel then takes kTLS keys
// on a socket in a sockhash (Debian's 6.1 does not, in any order; the
// self-test is what decides).
func TestKernelSockhashKTLSOrder(t *testing.T) {
	needKTLS(t)
	sm := sharedSockmap(t)

	a, b, err := loopback.TCPPair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	rc := mustRC(t, a)
	if err := ktls.EnableULP(rc); err != nil {
		t.Fatal(err)
	}
	ck, _ := socketCookie(rc)
	if err := sm.insert(rc, ck); !errors.Is(err, unix.EINVAL) {
		t.Errorf("inserting a socket with the tls ULP into a sockhash: %v, want EINVAL", err)
		sm.objs.Socks.Delete(ck)
	}

	c, d, err := loopback.TCPPair()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	defer d.Close()
	rc = mustRC(t, c)
	ck, _ = socketCookie(rc)
	if err := sm.insert(rc, ck); err != nil {
		t.Fatalf("inserting a plain TCP socket: %v", err)
	}
	defer sm.objs.Socks.Delete(ck)
	steps := []string{"ulp=" + errString(ktls.EnableULP(rc))}
	k := randomKeys()
	steps = append(steps, "tx="+errString(ktls.SetKeys(rc, ktls.TX, k)), "rx="+errString(ktls.SetKeys(rc, ktls.RX, k)))
	t.Logf("a socket in a sockhash, then: %s", strings.Join(steps, ", "))
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}
