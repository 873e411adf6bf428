//go:build !linux

package vmcheck

// loadULP does nothing: TCP ULPs are Linux's.
func loadULP(string) {}
