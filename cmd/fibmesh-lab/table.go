package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/fibmesh/fibmesh/lab"
)

// printTable writes the lab's fabric, nodes and pods as a table. With
// status, a STATE column says whether each network namespace exists.
func printTable(w io.Writer, l *lab.Lab, status bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	state := func(netns string) string {
		if !status {
			return ""
		}
		if lab.NetnsExists(netns) {
			return "\tok"
		}
		return "\tMISSING"
	}
	header := "KIND\tNAME\tNETNS\tIP\tINTERFACES\tMAC"
	if status {
		header += "\tSTATE"
	}
	fmt.Fprintln(tw, header)
	fmt.Fprintf(tw, "fabric\tfabric\t%s\t-\t%s (bridge), n1..n%d\t-%s\n", l.FabricNetns, lab.Bridge, len(l.Nodes), state(l.FabricNetns))
	for i, n := range l.Nodes {
		fmt.Fprintf(tw, "node\t%s\t%s\t%s/24\t%s <-> fabric/n%d, pods %s\t%s%s\n",
			n.Name, n.Netns, n.IP, n.NIC, i+1, n.PodCIDR, n.MAC, state(n.Netns))
		for _, p := range n.Pods {
			fmt.Fprintf(tw, "pod\t%s\t%s\t%s/32\t%s <-> %s/%s\t%s (host %s)%s\n",
				p.Name, p.Netns, p.IP, p.IfName, p.Node, p.HostVeth, p.MAC, p.HostMAC, state(p.Netns))
		}
	}
	return tw.Flush()
}
