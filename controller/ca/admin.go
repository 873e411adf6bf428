package ca

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"time"
)

// RootInfo describes one root of the bundle, as AdminHandler shows it.
type RootInfo struct {
	Subject   string    `json:"subject"`
	SHA256    string    `json:"sha256"` // of the DER certificate
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
	Signing   bool      `json:"signing"` // signs new SVIDs
}

// Roots describes the bundle, newest first.
func (c *CA) Roots() []RootInfo {
	signer := c.Root()
	var out []RootInfo
	for _, r := range c.Bundle() {
		sum := sha256.Sum256(r.Raw)
		out = append(out, RootInfo{Subject: r.Subject.String(), SHA256: hex.EncodeToString(sum[:]),
			NotBefore: r.NotBefore, NotAfter: r.NotAfter, Signing: r.Equal(signer)})
	}
	return out
}

// AdminHandler serves the CA's operations, to clients on loopback only
// (the monitoring port is reachable from the network; these change who is
// trusted):
//
//	GET  /debug/ca/roots    the bundle (JSON)
//	POST /debug/ca/rotate   a new signing root; the old one stays trusted
//	POST /debug/ca/retire   every root but the signing one leaves the bundle
//	POST /debug/ca/reload   re-read the Secret (a CA from --ca-secret)
//
// Each POST answers the bundle after it; the xDS server pushes the new
// bundle through OnBundleChange.
func (c *CA) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, err error) {
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			code := http.StatusInternalServerError
			if errors.Is(err, ErrReadOnly) {
				code = http.StatusConflict
			}
			w.WriteHeader(code)
			json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		json.NewEncoder(w).Encode(c.Roots())
	}
	mux.HandleFunc("GET /debug/ca/roots", func(w http.ResponseWriter, r *http.Request) { reply(w, nil) })
	mux.HandleFunc("POST /debug/ca/rotate", func(w http.ResponseWriter, r *http.Request) {
		_, err := c.RotateRoot()
		reply(w, err)
	})
	mux.HandleFunc("POST /debug/ca/retire", func(w http.ResponseWriter, r *http.Request) {
		signer := c.Root()
		var err error
		for _, root := range c.Bundle() {
			if root.Equal(signer) {
				continue
			}
			if err = c.Retire(root); errors.Is(err, ErrSigningRoot) {
				err = nil // an intermediate's issuer: kept
			}
			if err != nil {
				break
			}
		}
		reply(w, err)
	})
	mux.HandleFunc("POST /debug/ca/reload", func(w http.ResponseWriter, r *http.Request) {
		reply(w, c.Reload(r.Context()))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			http.Error(w, "the CA's admin endpoints answer on loopback only: run curl on the controller's host (or kubectl port-forward)", http.StatusForbidden)
			return
		}
		mux.ServeHTTP(w, r)
	})
}
