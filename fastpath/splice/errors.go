package splice

import (
	"errors"
	"fmt"
)

// ErrUnsupported is wrapped when an engine cannot join this pair on this
// kernel or platform (for ModeSockmap: TLS 1.2, a missing Prepare). The
// caller picks another engine or keeps the connection in userspace.
var ErrUnsupported = errors.New("unsupported by this engine")

// ErrSockmapUnproven is wrapped by every SelfTest failure: the sockmap
// path is not proven on this kernel, so ModeSockmap must not be used.
var ErrSockmapUnproven = errors.New("sockmap byte path not proven on this kernel")

// ErrSockmapRace is wrapped by Join when bytes reached a prepared kTLS
// socket after Prepare put it in the sockhash but before its tls ULP took
// over: the verdict dropped them (they were ciphertext kTLS now lacks), so
// the connection cannot be used and the caller must close it.
var ErrSockmapRace = errors.New("bytes arrived between Prepare and the tls ULP")

// UnprovenError is a SelfTest failure: Step names what was being proven,
// Err what went wrong. It matches ErrSockmapUnproven with errors.Is and
// unwraps to Err (errors.Is(err, ktls.ErrUnsupported) where the kernel has
// no kTLS).
type UnprovenError struct {
	Step string
	// Limit is true when the kernel refuses the path outright (no kTLS,
	// no kTLS sockets in a sockhash, records the verdict cannot cut to
	// their plaintext): a property of the kernel. False means bytes were
	// lost, corrupted or sent in the clear: a fault to report.
	Limit bool
	Err   error
}

func (e *UnprovenError) Error() string {
	return fmt.Sprintf("sockmap self-test: %s: %v", e.Step, e.Err)
}

// Unwrap returns the cause.
func (e *UnprovenError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrSockmapUnproven) true.
func (e *UnprovenError) Is(target error) bool { return target == ErrSockmapUnproven }

// Stat is one of the sockmap verdict's outcome counters (Sockmap.Stats),
// summed over CPUs. Reason is enum stat_reason of xdp/splice/prog.c in
// lower case without STAT_: "redirect", "drop_not_joined", "pass_tls_tail"...
type Stat struct {
	Reason string
	Msgs   uint64
	Bytes  uint64
}
