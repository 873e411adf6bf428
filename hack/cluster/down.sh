#!/usr/bin/env bash
# hack/cluster/down.sh: remove everything hack/cluster/up.sh made: the
# pods (through the kubelet, so CNI DEL runs), fibmesh, the processes,
# containerd's state, kube-proxy's iptables rules, the links fm-node0 and
# fm-cni0, the agent's pins under /sys/fs/bpf/fibmesh/fm-node and its
# nft table inet fibmesh-probes, the CNI
# files, the kubelet's sysctls, the images, $DIR.
set -uo pipefail
cd "$(dirname "$0")/../.."
DIR=${FIBMESH_CLUSTER_DIR:-/var/lib/fibmesh-cluster}
RUN=/run/fibmesh-cluster
K8S=${K8S_BIN:-$DIR/bin}
NODE=fm-node
export KUBECONFIG=$DIR/admin.kubeconfig
say() { echo "cluster: $(date -u +%T) $*" >&2; }
alive() { [ -f $DIR/pids/$1 ] && kill -0 "$(cat $DIR/pids/$1)" 2>/dev/null; }
stop() { # name: SIGTERM, then SIGKILL after 10 s
	alive $1 || return 0
	local pid i
	pid=$(cat $DIR/pids/$1)
	kill $pid
	for i in $(seq 20); do kill -0 $pid 2>/dev/null || break; sleep 0.5; done
	kill -0 $pid 2>/dev/null && kill -9 $pid
	rm -f $DIR/pids/$1
	say "stopped $1 ($pid)"
}

# 1. Pods away through the kubelet (CNI DEL, the agent releases them;
# the installer removes its entry when the DaemonSet is deleted).
if alive kube-apiserver && alive kubelet; then
	kubectl delete namespace demo --ignore-not-found --timeout=90s
	kubectl delete -k hack/cluster/overlay --ignore-not-found --timeout=120s >/dev/null
	kubectl delete pv fibmesh-ca-$NODE --ignore-not-found --timeout=30s >/dev/null
	kubectl delete pods --all -A --timeout=60s >/dev/null
fi
# 2. The node, then what is left in containerd, then the control plane.
stop kube-proxy
[ -x $K8S/kube-proxy ] && $K8S/kube-proxy --cleanup >/dev/null 2>&1 && say "kube-proxy --cleanup: its iptables rules removed"
stop kubelet
# The kubelet's own iptables chains (kube-proxy --cleanup leaves them):
# KUBE-FIREWALL (drops non-loopback packets to 127/8) and its jumps, the
# canaries and the hint chain.
for ipt in iptables ip6tables; do
	for chain in INPUT OUTPUT; do
		while $ipt -t filter -C $chain -j KUBE-FIREWALL 2>/dev/null; do $ipt -t filter -D $chain -j KUBE-FIREWALL; done
	done
	for table in filter nat mangle; do
		for c in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
			if $ipt -t $table -S $c >/dev/null 2>&1; then
				$ipt -t $table -F $c && $ipt -t $table -X $c
			fi
		done
	done
done
say "the kubelet's iptables chains removed"
if alive containerd && alive mntns; then
	CTR="nsenter -t $(cat $DIR/pids/mntns) -m -- ctr -a $RUN/containerd.sock -n k8s.io"
	for t in $($CTR tasks ls -q 2>/dev/null); do
		$CTR tasks kill -s SIGKILL $t >/dev/null 2>&1
		$CTR tasks delete -f $t >/dev/null 2>&1
	done
	for c in $($CTR containers ls -q 2>/dev/null); do $CTR containers rm $c >/dev/null 2>&1; done
fi
stop containerd
# The runtime's shims are their own processes: those of this containerd
# (named by its socket, which no other containerd uses).
for pid in $(pgrep -f -- "-address $RUN/containerd.sock"); do kill $pid 2>/dev/null && say "stopped shim $pid"; done
for n in kube-scheduler kube-controller-manager dns kube-apiserver etcd mntns; do stop $n; done

# 3. Host state.
ip link del fm-cni0 2>/dev/null && say "fm-cni0 removed"
ip link del fm-node0 2>/dev/null && say "fm-node0 (and fm-node0p) removed"
rm -rf /sys/fs/bpf/fibmesh/$NODE && rmdir /sys/fs/bpf/fibmesh 2>/dev/null
# The agent's kubelet-probe table in the node's (here: this host's)
# network namespace; fibmesh-agent --cleanup removes it on a real node.
nft delete table inet fibmesh-probes 2>/dev/null && say "nft table inet fibmesh-probes removed"
rm -rf /run/fibmesh/$NODE
rm -f /etc/cni/net.d/10-fibmesh-cluster.conflist /etc/cni/net.d/fibmesh-cni-kubeconfig
rm -f /opt/cni/bin/{bridge,host-local,loopback,fibmesh-cni}
rmdir /run/fibmesh 2>/dev/null # other agents (labs) may use it
for ctl in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/kubepods.slice; do
	[ -d $ctl ] && find $ctl -depth -type d -exec rmdir {} + 2>/dev/null
done
if [ -f $DIR/host.orig ]; then
	while read -r what a b; do
		case $what in
		sysctl) sysctl -qw "$a=$b" ;;
		created) rm -rf "$a" ;;
		esac
	done <$DIR/host.orig
	say "sysctls and host directories as before up.sh"
fi
for img in ghcr.io/fibmesh/fibmesh:dev registry.k8s.io/pause:3.10.1 fibmesh.test/busybox:dev; do
	podman rmi -f $img >/dev/null 2>&1
done
rm -rf $RUN $DIR
say "down"
