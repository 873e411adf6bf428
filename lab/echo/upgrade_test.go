package echo

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

func TestUpgrade(t *testing.T) {
	addr := start(t)
	tests := []struct {
		name       string
		req        string
		early      string // bytes sent in the same write as the request
		wantAccept string // Sec-WebSocket-Accept, "" for none
	}{
		{"websocket", "GET /ws HTTP/1.1\r\nHost: reviews\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
			"", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="}, // RFC 6455's example
		{"other protocol, bytes right behind the request", "GET / HTTP/1.1\r\nHost: reviews\r\nConnection: keep-alive, Upgrade\r\nUpgrade: fibtest/1\r\n\r\n",
			"early bytes|", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(c, tt.req+tt.early); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status %s, want 101", resp.Status)
			}
			for h, want := range map[string]string{"Sec-WebSocket-Accept": tt.wantAccept, HeaderPod: testInfo.Pod, HeaderVersion: testInfo.Version, HeaderService: testInfo.Service} {
				if got := resp.Header.Get(h); got != want {
					t.Errorf("header %s %q, want %q", h, got, want)
				}
			}
			msg := tt.early + "after the 101, in both directions"
			if _, err := io.WriteString(c, msg[len(tt.early):]); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(br, got); err != nil {
				t.Fatalf("reading the echo: %v (got %q)", err, got)
			}
			if string(got) != msg {
				t.Errorf("echo %q, want %q", got, msg)
			}
			// Closing our side ends the echo: the server closes too.
			c.(*net.TCPConn).CloseWrite()
			if n, err := br.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("after our close: read %d bytes, %v; want EOF", n, err)
			}
		})
	}
}

func TestUpgradeNotAsked(t *testing.T) {
	// An Upgrade header without Connection: Upgrade is an ordinary
	// request (RFC 9110 §7.8), answered with JSON.
	addr := start(t)
	req, _ := http.NewRequest("GET", "http://"+addr+"/x", nil)
	req.Header.Set("Upgrade", "websocket")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %s, want 200", resp.Status)
	}
	if r := decode(t, body); r.Pod != testInfo.Pod || resp.Header.Get(HeaderPod) != testInfo.Pod {
		t.Errorf("reply pod %q, header %q, want %q", r.Pod, resp.Header.Get(HeaderPod), testInfo.Pod)
	}
}
