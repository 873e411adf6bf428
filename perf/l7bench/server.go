package l7bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// DefaultBodySize is the size of the server's answers: 1 KB.
const DefaultBodySize = 1024

// maxXFCC bounds the x-forwarded-client-cert the server returns in
// HeaderXFCC (a URI, a hash and a subject fit).
const maxXFCC = 512

// Handler answers every request with 200 and the same body of size bytes
// (text/plain, Content-Length set, the request's body read and dropped),
// and returns the request's x-forwarded-client-cert, if any, in
// HeaderXFCC. The answer is built once: the server's cost per request is
// net/http's and nothing more, the same for every row of the bench.
func Handler(size int) (http.Handler, error) {
	if size < 1 {
		return nil, fmt.Errorf("server: body size %d: want at least 1 byte", size)
	}
	body := make([]byte, size)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	ctype, clen := []string{"text/plain"}, []string{strconv.Itoa(size)}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		h := w.Header()
		h["Content-Type"] = ctype
		h["Content-Length"] = clen
		if x := r.Header.Get("X-Forwarded-Client-Cert"); x != "" {
			h.Set(HeaderXFCC, x[:min(len(x), maxXFCC)])
		}
		w.WriteHeader(http.StatusOK)
		w.Write(body)
	}), nil
}

// Serve answers HTTP/1.1 (and h2c with prior knowledge) on addr with
// Handler(size) until ctx ends. ready, if not nil, is called with the
// listener's address once it listens.
func Serve(ctx context.Context, addr string, size int, ready func(net.Addr)) error {
	h, err := Handler(size)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	if ready != nil {
		ready(ln.Addr())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
