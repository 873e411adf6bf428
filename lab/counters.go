package lab

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ForwardCounters are IP counters of one network namespace, from the "Ip:"
// lines of /proc/net/snmp. Tests take them before and after sending
// traffic to prove whether the kernel's forwarding path carried it (an XDP
// fast path that redirects packets leaves ForwDatagrams unchanged).
type ForwardCounters struct {
	// ForwDatagrams counts IPv4 packets the kernel forwarded.
	ForwDatagrams uint64
	// InReceives counts IPv4 packets received, including forwarded ones.
	InReceives uint64
	// OutRequests counts IPv4 packets sent by local protocols.
	OutRequests uint64
}

// Counters reads the IPv4 counters of the named network namespace from
// /proc/thread-self/net/snmp, inside InNetns.
func Counters(netns string) (ForwardCounters, error) {
	var data []byte
	err := InNetns(netns, func() (err error) {
		data, err = os.ReadFile("/proc/thread-self/net/snmp")
		return err
	})
	if err != nil {
		return ForwardCounters{}, fmt.Errorf("read IP counters of %q: %w", netns, err)
	}
	c, err := parseSNMP(data)
	if err != nil {
		return ForwardCounters{}, fmt.Errorf("read IP counters of %q: %w", netns, err)
	}
	return c, nil
}

// parseSNMP extracts ForwardCounters from /proc/net/snmp, whose "Ip:" line
// pairs are a header of names followed by a line of values.
func parseSNMP(data []byte) (ForwardCounters, error) {
	var header, values []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Ip:" {
			continue
		}
		if header == nil {
			header = f[1:]
		} else {
			values = f[1:]
			break
		}
	}
	if header == nil || values == nil || len(header) != len(values) {
		return ForwardCounters{}, fmt.Errorf("snmp: no well-formed Ip: header and value lines")
	}
	want := map[string]*uint64{}
	var c ForwardCounters
	want["ForwDatagrams"], want["InReceives"], want["OutRequests"] = &c.ForwDatagrams, &c.InReceives, &c.OutRequests
	for i, name := range header {
		p, ok := want[name]
		if !ok {
			continue
		}
		v, err := strconv.ParseUint(values[i], 10, 64)
		if err != nil {
			return ForwardCounters{}, fmt.Errorf("snmp: Ip %s: %w", name, err)
		}
		*p = v
		delete(want, name)
	}
	for name := range want {
		return ForwardCounters{}, fmt.Errorf("snmp: Ip line has no %s", name)
	}
	return c, nil
}
