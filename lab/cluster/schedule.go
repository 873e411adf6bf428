package cluster

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// MaxNodes is the most nodes a lab has: node i is 10.100.0.i on the
// fabric, whose .254 is the controller's.
const MaxNodes = 253

// NodePlan is one node of the cluster: where it sits on the lab's fabric.
type NodePlan struct {
	Name string
	// Index numbers the node from 1; the lab names its fabric port and
	// MAC after it.
	Index      int
	InternalIP netip.Addr
	PodCIDR    netip.Prefix
	Labels     map[string]string
}

// PlanNodes returns the nodes of the cluster the manifests describe: the
// kind: Node objects when there are any (spec.podCIDR and the InternalIP
// address where they are set), otherwise one node per spec.nodeName the
// pods use and node1..node<count>. Node i gets 10.100.0.i and pod CIDR
// 10.200.i.0/24 where its object says nothing; a node called node<i>
// gets index i when it is free, as in the lab's numbered layout.
func PlanNodes(m *Manifests, count int) ([]NodePlan, error) {
	type want struct {
		name   string
		ip     netip.Addr
		cidr   netip.Prefix
		labels map[string]string
	}
	var wants []want
	if len(m.Nodes) > 0 {
		for _, n := range m.Nodes {
			w := want{name: n.Name, labels: maps.Clone(n.Labels)}
			cidr := n.Spec.PodCIDR
			if cidr == "" && len(n.Spec.PodCIDRs) > 0 {
				cidr = n.Spec.PodCIDRs[0]
			}
			if cidr != "" {
				p, err := netip.ParsePrefix(cidr)
				if err != nil || !p.Addr().Is4() || p.Bits() > 30 {
					return nil, &ObjectError{Kind: "Node", Key: n.Name, Field: "spec.podCIDR", Err: fmt.Errorf("%q: want an IPv4 CIDR of /30 or wider such as 10.200.1.0/24", cidr)}
				}
				w.cidr = p.Masked()
			}
			for _, a := range n.Status.Addresses {
				if a.Type == corev1.NodeInternalIP {
					ip, err := netip.ParseAddr(a.Address)
					if err != nil || !ip.Is4() {
						return nil, &ObjectError{Kind: "Node", Key: n.Name, Field: "status.addresses", Err: fmt.Errorf("InternalIP %q: want an IPv4 address", a.Address)}
					}
					w.ip = ip
				}
			}
			wants = append(wants, w)
		}
	} else {
		names := map[string]bool{}
		for i := 1; i <= count; i++ {
			names["node"+strconv.Itoa(i)] = true
		}
		for _, p := range m.Pods {
			if p.Spec.NodeName != "" {
				names[p.Spec.NodeName] = true
			}
		}
		for _, n := range slices.Sorted(maps.Keys(names)) {
			wants = append(wants, want{name: n})
		}
	}
	if len(wants) > MaxNodes {
		return nil, fmt.Errorf("%d nodes: the lab has room for %d", len(wants), MaxNodes)
	}
	// Indexes: node<i> keeps i where it can, the others take the free
	// ones in name order.
	used := map[int]bool{}
	index := map[string]int{}
	for _, w := range wants {
		if i, err := strconv.Atoi(strings.TrimPrefix(w.name, "node")); err == nil && strings.HasPrefix(w.name, "node") && i >= 1 && i <= MaxNodes && !used[i] {
			used[i], index[w.name] = true, i
		}
	}
	next := 1
	plans := make([]NodePlan, 0, len(wants))
	for _, w := range wants {
		i, ok := index[w.name]
		if !ok {
			for used[next] {
				next++
			}
			i, used[next] = next, true
		}
		p := NodePlan{Name: w.name, Index: i, InternalIP: w.ip, PodCIDR: w.cidr, Labels: w.labels}
		if !p.InternalIP.IsValid() {
			p.InternalIP = netip.AddrFrom4([4]byte{10, 100, 0, byte(i)})
		}
		if !p.PodCIDR.IsValid() {
			p.PodCIDR = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(i), 0}), 24)
		}
		if p.Labels == nil {
			p.Labels = map[string]string{}
		}
		p.Labels[LabelHostname] = p.Name
		p.Labels[LabelOS] = "linux"
		plans = append(plans, p)
	}
	slices.SortFunc(plans, func(a, b NodePlan) int { return cmp.Compare(a.Index, b.Index) })
	for i, a := range plans {
		for _, b := range plans[:i] {
			if a.PodCIDR.Overlaps(b.PodCIDR) {
				return nil, &ObjectError{Kind: "Node", Key: a.Name, Field: "spec.podCIDR", Err: fmt.Errorf("%s overlaps node %s's %s: give every node its own", a.PodCIDR, b.Name, b.PodCIDR)}
			}
			if a.InternalIP == b.InternalIP {
				return nil, &ObjectError{Kind: "Node", Key: a.Name, Field: "status.addresses", Err: fmt.Errorf("InternalIP %s is node %s's too", a.InternalIP, b.Name)}
			}
		}
	}
	return plans, nil
}

// Allocations are the decisions the cluster's control plane made and
// keeps: which node each pod runs on, its IP, and each Service's
// ClusterIP. The lab persists them in its state directory so that pods
// keep their node and IP, and Services their ClusterIP, across reloads
// and restarts; they are never written into the user's files.
type Allocations struct {
	Pods     map[string]PodAllocation `json:"pods"`     // by pod Key
	Services map[string]string        `json:"services"` // Service Key -> ClusterIP
}

// PodAllocation is where a pod was scheduled and the IP it was given.
type PodAllocation struct {
	Node string `json:"node"`
	IP   string `json:"ip"`
}

// NewAllocations returns empty Allocations.
func NewAllocations() *Allocations {
	return &Allocations{Pods: map[string]PodAllocation{}, Services: map[string]string{}}
}

// Scheduled is the outcome of Schedule.
type Scheduled struct {
	// Pods are the pods that have a node and an IP: spec.nodeName and
	// status.podIP(s) and hostIP set, phase Running.
	Pods []*corev1.Pod
	// Pending are the pods no node can take (status.phase Pending,
	// condition PodScheduled false with the reason).
	Pending []*corev1.Pod
	// Services have spec.clusterIP(s) set (unless headless or
	// ExternalName).
	Services []*corev1.Service
	// Errors are the objects left out: a Service whose clusterIP is
	// taken, a pod whose status.podIP is outside its node's CIDR.
	Errors []error
}

// Schedule places every pod of m on one of nodes and gives it an IP, and
// gives every Service a ClusterIP, as the scheduler, the IPAM and the
// apiserver's Service allocator would. It reads and updates alloc:
// a pod that was placed before stays on its node with its IP (pods do not
// move), new pods go to spec.nodeName, else to the least loaded node
// that spec.nodeSelector allows (ties by node order); a pod's IP is its
// status.podIP when the manifest sets one, else the lowest free address
// of its node's pod CIDR from .11. Entries of objects that are gone are
// dropped. m's objects are not modified: the results are copies.
func Schedule(m *Manifests, nodes []NodePlan, alloc *Allocations) *Scheduled {
	out := &Scheduled{}
	byName := map[string]*NodePlan{}
	for i := range nodes {
		byName[nodes[i].Name] = &nodes[i]
	}
	podErr := func(p *corev1.Pod, field string, err error) {
		out.Errors = append(out.Errors, &ObjectError{Source: m.Sources[PodKey(p)], Kind: "Pod", Key: PodKey(p), Field: field, Err: err})
	}
	fits := func(p *corev1.Pod, n *NodePlan) bool {
		if p.Spec.NodeName != "" && p.Spec.NodeName != n.Name {
			return false
		}
		return labels.SelectorFromSet(p.Spec.NodeSelector).Matches(labels.Set(n.Labels))
	}

	// Explicit IPs first: they are the user's and win over allocations.
	used := map[netip.Addr]string{}
	explicit := map[string]netip.Addr{}
	for _, p := range m.Pods {
		if p.Status.PodIP == "" {
			continue
		}
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil || !ip.Is4() {
			podErr(p, "status.podIP", fmt.Errorf("%q: want an IPv4 address, or none to have one allocated", p.Status.PodIP))
			continue
		}
		if other, ok := used[ip]; ok {
			podErr(p, "status.podIP", fmt.Errorf("%s is pod %s's too: give each pod its own, or none", ip, other))
			continue
		}
		used[ip], explicit[PodKey(p)] = PodKey(p), ip
	}

	keep := map[string]PodAllocation{}
	load := map[string]int{}
	var fresh []*corev1.Pod
	for _, p := range m.Pods {
		k := PodKey(p)
		if _, bad := explicitBad(p, explicit); bad {
			continue
		}
		a, ok := alloc.Pods[k]
		n := byName[a.Node]
		if !ok || n == nil || !fits(p, n) {
			fresh = append(fresh, p)
			continue
		}
		ip, err := netip.ParseAddr(a.IP)
		if e, has := explicit[k]; has {
			if !n.PodCIDR.Contains(e) {
				fresh = append(fresh, p)
				continue
			}
			ip = e
		} else if err != nil || !n.PodCIDR.Contains(ip) || used[ip] != "" {
			fresh = append(fresh, p)
			continue
		}
		used[ip] = k
		keep[k] = PodAllocation{Node: n.Name, IP: ip.String()}
		load[n.Name]++
	}
	// Pods with an IP of their own, then pods pinned to a node, go first:
	// the others can go anywhere.
	rank := func(p *corev1.Pod) int {
		switch {
		case explicit[PodKey(p)].IsValid():
			return 0
		case p.Spec.NodeName != "":
			return 1
		}
		return 2
	}
	slices.SortStableFunc(fresh, func(a, b *corev1.Pod) int { return cmp.Compare(rank(a), rank(b)) })
	for _, p := range fresh {
		k := PodKey(p)
		ip, has := explicit[k]
		var best *NodePlan
		for i := range nodes {
			n := &nodes[i]
			if !fits(p, n) || (has && !n.PodCIDR.Contains(ip) && p.Spec.NodeName == "") {
				continue
			}
			if best == nil || load[n.Name] < load[best.Name] {
				best = n
			}
		}
		if best == nil {
			reason := "no node matches spec.nodeSelector"
			switch {
			case has && p.Spec.NodeName == "":
				reason = fmt.Sprintf("status.podIP %s is in no node's pod CIDR", ip)
			case p.Spec.NodeName != "":
				reason = fmt.Sprintf("spec.nodeName %q: no such node (the lab's nodes: %s)", p.Spec.NodeName, nodeNames(nodes))
			}
			out.Pending = append(out.Pending, pending(p, reason))
			continue
		}
		if has && !best.PodCIDR.Contains(ip) {
			podErr(p, "status.podIP", fmt.Errorf("%s is not in node %s's pod CIDR %s: leave it empty to have one allocated", ip, best.Name, best.PodCIDR))
			continue
		}
		if !has {
			var ok bool
			if ip, ok = freeIP(best.PodCIDR, firstPodHost, used); !ok {
				out.Pending = append(out.Pending, pending(p, fmt.Sprintf("node %s's pod CIDR %s is full", best.Name, best.PodCIDR)))
				continue
			}
		}
		used[ip] = k
		keep[k] = PodAllocation{Node: best.Name, IP: ip.String()}
		load[best.Name]++
	}
	alloc.Pods = keep
	for _, p := range m.Pods {
		a, ok := keep[PodKey(p)]
		if !ok {
			continue
		}
		n := byName[a.Node]
		q := p.DeepCopy()
		q.Spec.NodeName = a.Node
		q.Status = corev1.PodStatus{
			Phase:  corev1.PodRunning,
			HostIP: n.InternalIP.String(),
			PodIP:  a.IP, PodIPs: []corev1.PodIP{{IP: a.IP}},
			HostIPs: []corev1.HostIP{{IP: n.InternalIP.String()}},
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
				{Type: corev1.PodReady, Status: corev1.ConditionTrue},
			},
		}
		out.Pods = append(out.Pods, q)
	}
	out.Services, out.Errors = scheduleServices(m, alloc, out.Errors)
	return out
}

func explicitBad(p *corev1.Pod, explicit map[string]netip.Addr) (netip.Addr, bool) {
	if p.Status.PodIP == "" {
		return netip.Addr{}, false
	}
	ip, ok := explicit[PodKey(p)]
	return ip, !ok
}

func nodeNames(nodes []NodePlan) string {
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.Name
	}
	return strings.Join(names, ", ")
}

func pending(p *corev1.Pod, reason string) *corev1.Pod {
	q := p.DeepCopy()
	q.Status = corev1.PodStatus{
		Phase: corev1.PodPending,
		Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
			Reason: corev1.PodReasonUnschedulable, Message: reason}},
	}
	return q
}

// freeIP returns the lowest address of cidr from host number first on
// that is not in used, short of the broadcast address.
func freeIP(cidr netip.Prefix, first int, used map[netip.Addr]string) (netip.Addr, bool) {
	ip := cidr.Masked().Addr()
	for range first {
		ip = ip.Next()
	}
	for ; cidr.Contains(ip) && cidr.Contains(ip.Next()); ip = ip.Next() {
		if _, taken := used[ip]; !taken {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// scheduleServices gives every Service without spec.clusterIP one from
// ServiceCIDR, keeping earlier allocations.
func scheduleServices(m *Manifests, alloc *Allocations, errs []error) ([]*corev1.Service, []error) {
	used := map[netip.Addr]string{}
	svcErr := func(s *corev1.Service, err error) {
		errs = append(errs, &ObjectError{Kind: "Service", Key: Key(s.Namespace, s.Name), Field: "spec.clusterIP", Err: err})
	}
	var ok []*corev1.Service
	needs := map[string]bool{}
	for _, s := range m.Services {
		k := Key(s.Namespace, s.Name)
		switch {
		case s.Spec.Type == corev1.ServiceTypeExternalName, s.Spec.ClusterIP == corev1.ClusterIPNone:
		case s.Spec.ClusterIP != "":
			ip, err := netip.ParseAddr(s.Spec.ClusterIP)
			if err != nil || !ip.Is4() {
				svcErr(s, fmt.Errorf("%q: want an IPv4 address, None, or nothing to have one allocated from %s", s.Spec.ClusterIP, ServiceCIDR))
				continue
			}
			if other, taken := used[ip]; taken {
				svcErr(s, fmt.Errorf("%s is already allocated to Service %s: choose another or leave it empty", ip, other))
				continue
			}
			used[ip] = k
		default:
			needs[k] = true
		}
		ok = append(ok, s)
	}
	keep := map[string]string{}
	for k := range needs {
		if ip, err := netip.ParseAddr(alloc.Services[k]); err == nil && ServiceCIDR.Contains(ip) && used[ip] == "" {
			used[ip], keep[k] = k, ip.String()
		}
	}
	var out []*corev1.Service
	for _, s := range ok {
		k := Key(s.Namespace, s.Name)
		q := s.DeepCopy()
		if needs[k] {
			if _, has := keep[k]; !has {
				ip, free := freeIP(ServiceCIDR, firstServiceHost, used)
				if !free {
					svcErr(s, errors.New("the service CIDR is full"))
					continue
				}
				used[ip], keep[k] = k, ip.String()
			}
			q.Spec.ClusterIP = keep[k]
		}
		if q.Spec.ClusterIP != "" && q.Spec.Type != corev1.ServiceTypeExternalName {
			q.Spec.ClusterIPs = []string{q.Spec.ClusterIP}
		}
		if q.Spec.Type == "" {
			q.Spec.Type = corev1.ServiceTypeClusterIP
		}
		out = append(out, q)
	}
	alloc.Services = keep
	return out, errs
}
