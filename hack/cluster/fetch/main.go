// Command fetch is the demo client of hack/cluster (busybox-static's wget
// crashes): it GETs each URL and prints the status and body, and exits 1
// at the first failure.
//
//	fetch [-n COUNT] [-timeout 5s] URL...
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	n := flag.Int("n", 1, "GET each URL `COUNT` times")
	timeout := flag.Duration("timeout", 5*time.Second, "per request")
	flag.Parse()
	c := &http.Client{Timeout: *timeout}
	for i := 0; i < *n; i++ {
		for _, u := range flag.Args() {
			if err := get(c, u); err != nil {
				fmt.Fprintf(os.Stderr, "fetch: %v\n", err)
				os.Exit(1)
			}
		}
	}
}

func get(c *http.Client, u string) error {
	start := time.Now()
	resp, err := c.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("GET %s: body: %w", u, err)
	}
	fmt.Printf("GET %s: %s in %v: %s", u, resp.Status, time.Since(start).Round(time.Microsecond), body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return nil
}
