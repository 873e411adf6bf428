//go:build !linux

package nicprofiles

import (
	"fmt"
	"runtime"
)

var errNotSupported = fmt.Errorf("NIC detection is not supported on %s: it reads Linux ethtool and netdev netlink", runtime.GOOS)

// Detect is Linux-only; elsewhere it returns an error saying so.
func Detect(ifname string) (*Detection, error) { return nil, errNotSupported }

// DetectAll is Linux-only; elsewhere it returns an error saying so.
func DetectAll() ([]*Detection, error) { return nil, errNotSupported }

// ReadFacts is Linux-only; elsewhere it returns an error saying so.
func ReadFacts(ifname string) (Facts, error) { return Facts{}, errNotSupported }
