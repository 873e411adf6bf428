package admin

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

type fakeServiceSource struct {
	fakeSource
	svcs []Service
	err  error
}

func (f *fakeServiceSource) Services() ([]Service, error) { return f.svcs, f.err }

func TestServices(t *testing.T) {
	// A Source without services: no /services.
	if code, _ := get(t, Handler(&fakeSource{}), "/services"); code != http.StatusNotFound {
		t.Errorf("/services of a Source without services: %d, want 404", code)
	}
	src := &fakeServiceSource{}
	h := Handler(src)
	if code, body := get(t, h, "/services"); code != http.StatusOK || body != "[]\n" {
		t.Errorf("/services with none: %d %q, want 200 []", code, body)
	}
	src.svcs = []Service{{VIP: netip.MustParseAddr("10.96.0.10"), Port: 53, Proto: "udp", Hostname: "dns", Slots: 211, Flows: 2,
		Backends: []ServiceBackend{{Addr: netip.MustParseAddrPort("10.200.1.11:5353"), Node: "node1", Weight: 1, Slots: 211, Share: 1, Flows: 2}}}}
	code, body := get(t, h, "/services")
	var got []Service
	if err := json.Unmarshal([]byte(body), &got); code != http.StatusOK || err != nil {
		t.Fatalf("/services: %d %v\n%s", code, err, body)
	}
	if d := cmp.Diff(src.svcs, got, cmpopts.EquateComparable(netip.Addr{}, netip.AddrPort{})); d != "" {
		t.Errorf("/services round trip (-want +got):\n%s", d)
	}
	src.err = errors.New("services: list the flow entries: operation not permitted")
	if code, body := get(t, h, "/services"); code != http.StatusInternalServerError || body != src.err.Error()+"\n" {
		t.Errorf("/services failing: %d %q", code, body)
	}
}
