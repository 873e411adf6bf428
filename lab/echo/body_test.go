package echo

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

func TestBodies(t *testing.T) {
	addr := start(t)
	for cname, c := range clients() {
		for _, n := range []int64{0, 1, 15, 16, 17, 100_000, 3<<20 + 5} {
			t.Run(fmt.Sprintf("%s/%d bytes", cname, n), func(t *testing.T) {
				// Upload: the reply counts and hashes the body.
				body := bytes.Repeat([]byte("fibmesh!"), int(n/8+1))[:n]
				req, _ := http.NewRequest("POST", "http://"+addr+"/upload", bytes.NewReader(body))
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				r := decode(t, b)
				sum := sha256.Sum256(body)
				wantSum := hex.EncodeToString(sum[:])
				if n == 0 {
					wantSum = ""
				}
				if r.BodyBytes != n || r.BodySHA256 != wantSum {
					t.Errorf("upload of %d bytes: reply bodyBytes %d sha256 %q, want %d %q", n, r.BodyBytes, r.BodySHA256, n, wantSum)
				}
				// Download: n bytes of the pattern.
				req, _ = http.NewRequest("GET", "http://"+addr+"/download", nil)
				req.Header.Set(HeaderBodyBytes, strconv.FormatInt(n, 10))
				req.Header.Set(HeaderStatus, "202")
				resp, err = c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 202 || int64(len(b)) != n || resp.Header.Get("Content-Type") != "application/octet-stream" {
					t.Fatalf("download of %d bytes: %s, %d bytes, %q, %v", n, resp.Status, len(b), resp.Header.Get("Content-Type"), err)
				}
				if err := CheckPattern(b); err != nil {
					t.Error(err)
				}
			})
		}
	}
}

func TestCheckPattern(t *testing.T) {
	var b bytes.Buffer
	if err := WritePattern(&b, 100_000); err != nil {
		t.Fatal(err)
	}
	good := b.Bytes()
	if string(good[:32]) != "000000000000000\n000000000000010\n" {
		t.Fatalf("pattern starts %q", good[:32])
	}
	for _, tt := range []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"whole", good, true},
		{"cut mid-line", good[:50_007], true},
		{"a line lost", append(append([]byte{}, good[:4096]...), good[4112:]...), false},
		{"a byte changed", append(append(append([]byte{}, good[:777]...), 'x'), good[778:]...), false},
	} {
		if err := CheckPattern(tt.b); (err == nil) != tt.ok {
			t.Errorf("%s: CheckPattern = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}

func TestBodyBytesBad(t *testing.T) {
	addr := start(t)
	for _, v := range []string{"-1", "x", strconv.Itoa(MaxBodyBytes + 1)} {
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		req.Header.Set(HeaderBodyBytes, v)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if r := decode(t, b); resp.StatusCode != 400 || !strings.Contains(r.Error, "x-echo-body-bytes") {
			t.Errorf("x-echo-body-bytes: %s: got %s %q, want 400 naming the header", v, resp.Status, r.Error)
		}
	}
}
