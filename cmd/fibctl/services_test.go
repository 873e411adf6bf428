package main

import (
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"testing"

	"github.com/fibmesh/fibmesh/agent/admin"
)

// fakeServices is fakeAgent with service VIPs.
type fakeServices struct{ fakeAgent }

func (fakeServices) Services() ([]admin.Service, error) {
	return []admin.Service{
		{VIP: netip.MustParseAddr("10.96.0.5"), Port: 9, Proto: "udp", Hostname: "nobody.shop.svc.cluster.local", Backends: []admin.ServiceBackend{}},
		{VIP: netip.MustParseAddr("10.96.0.10"), Port: 53, Proto: "udp", Hostname: "dns.kube-system.svc.cluster.local", Slots: 307, Flows: 1002,
			Backends: []admin.ServiceBackend{
				{Addr: netip.MustParseAddrPort("10.200.1.11:5353"), Node: "node1", Weight: 1, Slots: 103, Share: 103.0 / 307, Flows: 330},
				{Addr: netip.MustParseAddrPort("10.200.2.11:5353"), Node: "node2", Weight: 1, Slots: 102, Share: 102.0 / 307, Flows: 340},
				{Addr: netip.MustParseAddrPort("10.200.2.12:5353"), Node: "node2", Weight: 1, Slots: 102, Share: 102.0 / 307, Flows: 330},
				{Addr: netip.MustParseAddrPort("10.200.2.13:5353"), Flows: 2},
			}},
		{VIP: netip.MustParseAddr("10.96.0.20"), Port: 80, Proto: "tcp", Hostname: "web.shop.svc.cluster.local", Pending: "map full",
			Backends: []admin.ServiceBackend{{Addr: netip.MustParseAddrPort("10.200.1.11:8080"), Node: "node1", Weight: 3}}},
		{VIP: netip.MustParseAddr("10.96.0.21"), Port: 80, Proto: "tcp", Hostname: "gone.shop.svc.cluster.local", Backends: []admin.ServiceBackend{}},
	}, nil
}

func TestServicesCommand(t *testing.T) {
	srv := httptest.NewServer(admin.Handler(fakeServices{}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	plain := httptest.NewServer(admin.Handler(fakeAgent{})) // an agent without /services
	defer plain.Close()
	pu, _ := url.Parse(plain.URL)
	for _, tt := range []struct {
		name        string
		args        []string
		code        int
		contains    []string
		notContains []string
	}{
		{"table", []string{"--admin", u.Host}, 0, []string{
			"SERVICE                            VIP            PROTO  BACKEND                          NODE   WEIGHT  SHARE  FLOWS\n" +
				"nobody.shop.svc.cluster.local      10.96.0.5:9    udp    none: answered ICMP unreachable  -      -       -      0\n" +
				"dns.kube-system.svc.cluster.local  10.96.0.10:53  udp    10.200.1.11:5353                 node1  1       33.6%  330\n" +
				"dns.kube-system.svc.cluster.local  10.96.0.10:53  udp    10.200.2.11:5353                 node2  1       33.2%  340\n" +
				"dns.kube-system.svc.cluster.local  10.96.0.10:53  udp    10.200.2.12:5353                 node2  1       33.2%  330\n" +
				"dns.kube-system.svc.cluster.local  10.96.0.10:53  udp    10.200.2.13:5353                 -      -       left   2\n" +
				"web.shop.svc.cluster.local         10.96.0.20:80  tcp    10.200.1.11:8080                 node1  3       -      0\n" +
				"gone.shop.svc.cluster.local        10.96.0.21:80  tcp    none: answered TCP RST           -      -       -      0\n" +
				"tcp 10.96.0.20:80: not in the FIB as the flow tables say: map full\n",
		}, nil},
		{"by VIP:port, json", []string{"--admin", u.Host, "-o", "json", "10.96.0.10:53"}, 0, []string{
			`"vip": "10.96.0.10"`, `"slots": 307`, `"addr": "10.200.2.11:5353"`, `"flows": 340`, `"share": 0.33`,
		}, []string{"web.shop", "nobody"}},
		{"by VIP", []string{"10.96.0.20", "--admin", u.Host}, 0, []string{"web.shop.svc.cluster.local"}, []string{"dns.kube-system"}},
		{"by hostname prefix", []string{"--admin", u.Host, "dns.kube-system"}, 0, []string{"10.96.0.10:53"}, []string{"web.shop"}},
		{"yaml", []string{"--admin", u.Host, "-o", "yaml", "nobody.shop.svc.cluster.local"}, 0, []string{"hostname: nobody.shop.svc.cluster.local", "backends: []"}, nil},
		{"unknown service", []string{"--admin", u.Host, "10.96.9.9"}, 1, []string{`no service "10.96.9.9" in the node's FIB (4 services`}, nil},
		{"two services", []string{"--admin", u.Host, "a", "b"}, 2, []string{"too many arguments"}, nil},
		{"bad format", []string{"--admin", u.Host, "-o", "xml"}, 2, []string{`-o "xml": want table, json or yaml`}, nil},
		{"agent without services", []string{"--admin", pu.Host}, 1, []string{"/services: 404 Not Found"}, nil},
		{"no agent", []string{"--admin", "127.0.0.1:1"}, 1, []string{"agent admin API at 127.0.0.1:1", "is fibmesh-agent running there"}, nil},
		{"help", []string{"--help"}, 0, []string{"fibctl services: the service VIPs", "ICMP port unreachable", "-admin string", "-node string"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			checkRun(t, append([]string{"services"}, tt.args...), tt.code, tt.contains, tt.notContains)
		})
	}
	// The global flags' place: fibctl --node N -o F services.
	if got, want := globalFlagsLast([]string{"--node", "fm-node1", "-o", "json", "services", "dns"}), []string{"services", "--node", "fm-node1", "-o", "json", "dns"}; !slices.Equal(got, want) {
		t.Errorf("globalFlagsLast = %q, want %q", got, want)
	}
}
