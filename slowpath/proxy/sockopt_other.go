//go:build !linux

package proxy

import (
	"errors"
)

var errNotLinux = errors.New("proxy: needs Linux (network namespaces, SO_MARK)")

func dupFD(int) (int, error) { return -1, errNotLinux }

func closeFD(int) {}
