//go:build !linux

package netnstest

import (
	"errors"
	"runtime"
	"testing"
)

var errUnsupported = errors.New("netnstest: network namespaces need Linux, not " + runtime.GOOS)

// nsHandle is an open network namespace (Linux only).
type nsHandle struct{}

func (nsHandle) do(func() error) error { return errUnsupported }

func newPair(pairConfig) (*Pair, error) { return nil, errUnsupported }

func (p *Pair) close() error { return nil }

// Capture records the TCP traffic on a peer's veth end (Linux only).
type Capture struct{}

func startCapture(*Peer, CaptureConfig) (*Capture, error) { return nil, errUnsupported }

// Stop ends the capture.
func (c *Capture) Stop() (*CaptureResult, error) { return nil, errUnsupported }

// Existing needs Linux.
func Existing(t testing.TB, nsPath, iface string) *Peer {
	t.Skip("netnstest: network namespaces need Linux")
	return nil
}
