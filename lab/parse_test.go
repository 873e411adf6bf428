package lab

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseNetnsList(t *testing.T) {
	out := "fm-node1-pod1 (id: 3)\nfm-fabric\nother (id: 0)\n\n"
	want := []string{"fm-node1-pod1", "fm-fabric", "other"}
	if diff := cmp.Diff(want, parseNetnsList(out)); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
}

func TestParseLinkList(t *testing.T) {
	out := "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n" +
		"7: fm-x@if6: <BROADCAST,MULTICAST> mtu 1500 qdisc noop state DOWN mode DEFAULT group default qlen 1000\\    link/ether 5a:1e:3d:00:00:01 brd ff:ff:ff:ff:ff:ff link-netns fm-y\n"
	want := []string{"lo", "fm-x"}
	if diff := cmp.Diff(want, parseLinkList(out)); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
}

func TestParseSNMP(t *testing.T) {
	const snmp = "Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos InDiscards InDelivers OutRequests OutDiscards OutNoRoutes\n" +
		"Ip: 1 64 120 0 0 42 0 0 78 90 0 0\n" +
		"Icmp: InMsgs InErrors\nIcmp: 1 2\n"
	got, err := parseSNMP([]byte(snmp))
	if err != nil {
		t.Fatal(err)
	}
	want := ForwardCounters{ForwDatagrams: 42, InReceives: 120, OutRequests: 90}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"", "Ip: Forwarding\n", "Ip: InReceives ForwDatagrams\nIp: 1 x\n", "Ip: InReceives ForwDatagrams\nIp: 1 2\n"} {
		if _, err := parseSNMP([]byte(bad)); err == nil {
			t.Errorf("parseSNMP(%q) = nil error, want one", bad)
		}
	}
}
