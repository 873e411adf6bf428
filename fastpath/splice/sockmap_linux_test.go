package splice

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/fibmesh/fibmesh/fastpath/ktls"
	"github.com/fibmesh/fibmesh/internal/loopback"
	xsplice "github.com/fibmesh/fibmesh/xdp/splice"
)

// TestStatNames checks that the Go names follow enum stat_reason.
func TestStatNames(t *testing.T) {
	want := map[xsplice.SpliceStatReason]string{
		xsplice.SpliceStatReasonSTAT_REDIRECT:         "redirect",
		xsplice.SpliceStatReasonSTAT_DROP_NO_ENTRY:    "drop_no_entry",
		xsplice.SpliceStatReasonSTAT_DROP_NOT_JOINED:  "drop_not_joined",
		xsplice.SpliceStatReasonSTAT_DROP_PEER_GONE:   "drop_peer_gone",
		xsplice.SpliceStatReasonSTAT_DROP_TLS_EMPTY:   "drop_tls_empty",
		xsplice.SpliceStatReasonSTAT_PASS_TLS_CONTROL: "pass_tls_control",
		xsplice.SpliceStatReasonSTAT_PASS_TLS_SHORT:   "pass_tls_short",
		xsplice.SpliceStatReasonSTAT_PASS_TLS_TAIL:    "pass_tls_tail",
		xsplice.SpliceStatReasonSTAT_PASS_TLS_HEAD:    "pass_tls_head",
		xsplice.SpliceStatReasonSTAT_PASS_HOLD:        "pass_hold",
	}
	if len(statNames) != int(xsplice.SpliceStatReasonSTAT_REASON_LEN) || len(want) != len(statNames) {
		t.Fatalf("%d stat names, %d in the test, STAT_REASON_LEN is %d", len(statNames), len(want), xsplice.SpliceStatReasonSTAT_REASON_LEN)
	}
	for r, name := range want {
		if statNames[r] != name {
			t.Errorf("statNames[%d] = %q, want %q", r, statNames[r], name)
		}
	}
}

// TestSockmapRace checks that bytes dropped on a prepared socket (here a
// far end that sends far more than the receive window before Join) fail
// the join with ErrSockmapRace, and that the sockets are then closed.
func TestSockmapRace(t *testing.T) {
	noLeaks(t)
	sm := sharedSockmap(t)
	app, plain, err := loopback.TCPPair()
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	tlsEnd, far, err := loopback.TCPPair()
	if err != nil {
		t.Fatal(err)
	}
	defer far.Close()
	pr, err := sm.Prepare(tlsEnd)
	if err != nil {
		t.Fatal(err)
	}
	// Writes until the verdict drops (the receive window filled) or the
	// socket is closed by the failed Join.
	done := make(chan struct{})
	go func() {
		defer close(done)
		far.SetWriteDeadline(time.Now().Add(20 * time.Second))
		far.Write(make([]byte, 64<<20))
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := sm.sockStats(pr.cookie)
		if err != nil {
			t.Fatal(err)
		}
		if st.DropBytes > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the verdict dropped nothing after 20 s of writes to a prepared socket")
		}
		time.Sleep(time.Millisecond) // polling a kernel counter, not ordering goroutines
	}
	_, err = Join(plain, &standIn{TCPConn: tlsEnd}, Options{Mode: ModeSockmap, Prepared: pr})
	if !errors.Is(err, ErrSockmapRace) {
		t.Fatalf("Join = %v, want ErrSockmapRace", err)
	}
	app.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(app); err == nil {
		t.Error("application read EOF after a failed Join, want a reset")
	}
	<-done
}

// TestPrepareAbort checks that an aborted Prepare leaves a socket that
// works in userspace.
func TestPrepareAbort(t *testing.T) {
	noLeaks(t)
	sm := sharedSockmap(t)
	a, b, err := loopback.TCPPair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	low0, _ := rcvlowat(mustRC(t, a))
	pr, err := sm.Prepare(a)
	if err != nil {
		t.Fatal(err)
	}
	if err := pr.Abort(); err != nil {
		t.Fatal(err)
	}
	if low, _ := rcvlowat(mustRC(t, a)); low != low0 {
		t.Errorf("SO_RCVLOWAT %d after Abort, want %d", low, low0)
	}
	b.Write([]byte("plain again"))
	a.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 11)
	if _, err := io.ReadFull(a, got); err != nil || !bytes.Equal(got, []byte("plain again")) {
		t.Errorf("read after Abort: %q, %v", got, err)
	}
	if _, err := Join(a, &standIn{TCPConn: b}, Options{Mode: ModeSockmap, Prepared: pr}); err == nil {
		t.Error("Join with an aborted Prepared succeeded")
	}
}

// TestSelfTestWithoutKTLS checks that the self-test says clearly that it
// cannot prove anything on a kernel without kTLS (this development host).
func TestSelfTestWithoutKTLS(t *testing.T) {
	noLeaks(t)
	if ok, _ := haveKTLS(); ok {
		t.Skip("the kernel has kTLS: TestKTLSSelfTest covers it")
	}
	err := sharedSockmap(t).SelfTest()
	var ue *UnprovenError
	if !errors.As(err, &ue) || ue.Step != "ktls" || !errors.Is(err, ErrSockmapUnproven) || !errors.Is(err, ktls.ErrUnsupported) {
		t.Fatalf("SelfTest() = %v, want an *UnprovenError at step \"ktls\" matching ErrSockmapUnproven and ktls.ErrUnsupported", err)
	}
	t.Logf("SelfTest: %v", err)
}
