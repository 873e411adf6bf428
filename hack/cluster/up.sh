#!/usr/bin/env bash
# hack/cluster/up.sh: a real single-node Kubernetes on this machine,
# offline (no registry: every image is built here), and fibmesh installed
# on it with `kubectl apply -k hack/cluster/overlay` (deploy/ plus this
# cluster's settings). Manual, not in CI: see hack/cluster/README.md.
# hack/cluster/down.sh removes all of it.
#
# What runs: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy (iptables mode), containerd (its
# own socket, root and state under $DIR), a small cluster DNS
# (hack/cluster/dns). containerd and the kubelet run in a mount namespace
# of their own whose / is rshared (the agent's HostToContainer mounts need
# a shared source; the host's / stays private).
#
# Addresses: the node is a veth fm-node0 (peer fm-node0p) with 10.99.0.1/32
# (the API server, kubelet and DNS listen there); pods 10.244.0.0/24 on
# the bridge fm-cni0 (no ip_forward, no masquerade: nothing leaves the
# machine); Services 10.97.0.0/16 (10.97.0.1: the API server).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
DIR=${FIBMESH_CLUSTER_DIR:-/var/lib/fibmesh-cluster}
RUN=/run/fibmesh-cluster
K8S=${K8S_BIN:-$DIR/bin}
NODE=fm-node
NODE_IP=10.99.0.1
POD_CIDR=10.244.0.0/16
NODE_POD_CIDR=10.244.0.0/24
POD_GW=10.244.0.1
SVC_CIDR=10.97.0.0/16
SVC_API=10.97.0.1
TAG=dev
PAUSE=registry.k8s.io/pause:3.10.1
export KUBECONFIG=$DIR/admin.kubeconfig

say() { echo "cluster: $(date -u +%T) $*" >&2; }
die() { echo "cluster: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (containerd, kubelet, netns)"
for t in etcd containerd containerd-shim-runc-v2 runc ctr podman openssl iptables kubectl go unshare nsenter; do
	command -v $t >/dev/null || die "$t missing: apt-get install etcd-server containerd runc podman openssl iptables kubernetes-client (go from go.dev)"
done
if ip route | grep -q -e '^10\.244\.' -e '^10\.97\.' -e '^10\.99\.'; then
	[ -e $DIR/pids ] || die "10.244/16, 10.97/16 or 10.99/16 is routed here already (ip route): pick other ranges"
fi
mkdir -p $DIR/{pki,log,bin,cni,images} $RUN
# What down.sh puts back: the sysctls the kubelet sets (kernel.panic,
# vm.overcommit_memory, ...: it changes them when they differ from its
# defaults), and which host directories existed before.
if [ ! -f $DIR/host.orig ]; then
	{
		for k in vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes; do
			echo "sysctl $k $(sysctl -n $k)"
		done
		for d in /opt/cni /var/log/pods /var/log/containers; do
			[ -e $d ] || echo "created $d"
		done
	} >$DIR/host.orig
fi

# 1. Binaries: the Kubernetes components at the version hack/kube-apiserver
# pins, in a copy of that tool module (its go.sum lacks the kubelet's
# modules; the original's hash keys the kube-apiserver cache), the
# reference CNI plugins, the pause and DNS programs, fibmesh's image.
build_k8s() {
	local mod=$DIR/k8smod version ldflags
	version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' hack/kube-apiserver/go.mod)
	ldflags="-s -w"
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$(echo $version | cut -d. -f2)"
		ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
	done
	mkdir -p $mod
	cp hack/kube-apiserver/go.mod hack/kube-apiserver/go.sum $mod/
	cat >$mod/tools.go <<-EOF
		//go:build tools

		package tools

		import (
		$(for c in kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet; do echo "	_ \"k8s.io/kubernetes/cmd/$c\""; done)
		)
	EOF
	(cd $mod && GOWORK=off GOFLAGS=-mod=mod go mod tidy)
	for c in kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet; do
		[ -x $K8S/$c ] && [ "$($K8S/$c --version)" = "Kubernetes $version" ] && continue
		say "building $c $version"
		(cd $mod && GOWORK=off nice -n 15 go build -ldflags "$ldflags" -o $K8S/$c k8s.io/kubernetes/cmd/$c)
	done
}
build_k8s
say "building CNI plugins, pause, dns"
(cd hack/cni-plugins && GOWORK=off go build -o $DIR/cni/ \
	github.com/containernetworking/plugins/plugins/main/bridge \
	github.com/containernetworking/plugins/plugins/ipam/host-local \
	github.com/containernetworking/plugins/plugins/main/loopback)
CGO_ENABLED=0 go build -trimpath -ldflags=-s -o $DIR/images/pause/pause ./hack/cluster/pause
go build -o $DIR/bin/clusterdns ./hack/cluster/dns

# Images: none can be pulled. fibmesh's (make image: FROM scratch with
# host-built static binaries), pause, and busybox for the demo apps.
say "building images"
# Built once; FIBMESH_IMAGE_REBUILD=1 builds it again from this checkout
# (then restart the pods: kubectl -n fibmesh-system rollout restart ...).
if [ -n "${FIBMESH_IMAGE_REBUILD:-}" ] || ! podman image exists ghcr.io/fibmesh/fibmesh:$TAG; then
	hack/image.sh build ghcr.io/fibmesh/fibmesh:$TAG
fi
printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >$DIR/images/pause/Containerfile
podman build -q -t $PAUSE $DIR/images/pause >/dev/null
mkdir -p $DIR/images/busybox/rootfs/bin $DIR/images/busybox/rootfs/tmp $DIR/images/busybox/rootfs/www
cp /bin/busybox $DIR/images/busybox/rootfs/bin/busybox 2>/dev/null || die "busybox-static missing: apt-get install busybox-static"
for a in sh httpd sleep cat ls hostname; do ln -sf busybox $DIR/images/busybox/rootfs/bin/$a; done
# The client: busybox-static's wget crashes (SIGSEGV, also outside a
# container), so a Go one.
CGO_ENABLED=0 go build -trimpath -ldflags=-s -o $DIR/images/busybox/rootfs/bin/fetch ./hack/cluster/fetch
chmod 1777 $DIR/images/busybox/rootfs/tmp
printf 'FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nENTRYPOINT ["/bin/sh"]\n' >$DIR/images/busybox/Containerfile
podman build -q -t fibmesh.test/busybox:$TAG $DIR/images/busybox >/dev/null

# 2. PKI: one CA for everything (API server, clients, kubelet), and the
# ServiceAccount signing key.
pki=$DIR/pki
if [ ! -f $pki/ca.crt ]; then
	say "PKI"
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=fibmesh-cluster-ca -keyout $pki/ca.key -out $pki/ca.crt 2>/dev/null
	openssl genrsa -out $pki/sa.key 2048 2>/dev/null
	openssl rsa -in $pki/sa.key -pubout -out $pki/sa.pub 2>/dev/null
	cert() { # name subject [san]
		local ext=$pki/$1.ext
		printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=%s\n' "${4:-clientAuth}" >$ext
		[ -n "${3:-}" ] && echo "subjectAltName=$3" >>$ext
		openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout $pki/$1.key -out $pki/$1.csr 2>/dev/null
		openssl x509 -req -in $pki/$1.csr -CA $pki/ca.crt -CAkey $pki/ca.key -CAcreateserial -days 2 -extfile $ext -out $pki/$1.crt 2>/dev/null
	}
	cert apiserver /CN=kube-apiserver "IP:$NODE_IP,IP:$SVC_API,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" serverAuth
	cert kubelet-serving /CN=$NODE "IP:$NODE_IP,DNS:$NODE" serverAuth
	cert admin "/O=system:masters/CN=admin"
	cert controller-manager /CN=system:kube-controller-manager
	cert scheduler /CN=system:kube-scheduler
	cert kube-proxy /CN=system:kube-proxy
	cert kubelet "/O=system:nodes/CN=system:node:$NODE"
	cert dns /CN=fibmesh-cluster-dns
	for n in admin controller-manager scheduler kube-proxy kubelet dns; do
		kubectl config --kubeconfig=$DIR/$n.kubeconfig set-cluster c --server=https://$NODE_IP:6443 --certificate-authority=$pki/ca.crt >/dev/null
		kubectl config --kubeconfig=$DIR/$n.kubeconfig set-credentials u --client-certificate=$pki/$n.crt --client-key=$pki/$n.key >/dev/null
		kubectl config --kubeconfig=$DIR/$n.kubeconfig set-context c --cluster=c --user=u >/dev/null
		kubectl config --kubeconfig=$DIR/$n.kubeconfig use-context c >/dev/null
	done
fi

# 3. The node's address and the pods' bridge (cni0's address is set
# here, not by the bridge plugin's isGateway, which would turn on the
# host's ip_forward).
# The node's interface: one end of a veth pair (fm-node0, its peer
# fm-node0p has no address; kernels without the dummy module have veth).
ip link show fm-node0 >/dev/null 2>&1 || ip link add fm-node0 type veth peer name fm-node0p
ip addr replace $NODE_IP/32 dev fm-node0
ip link set fm-node0p up
ip link set fm-node0 up
ip link show fm-cni0 >/dev/null 2>&1 || ip link add fm-cni0 type bridge
ip addr replace $POD_GW/24 dev fm-cni0
ip link set fm-cni0 up

start() { # name command...: start in the background unless running
	local n=$1
	shift
	if [ -f $DIR/pids/$n ] && kill -0 "$(cat $DIR/pids/$n)" 2>/dev/null; then
		return
	fi
	mkdir -p $DIR/pids
	setsid "$@" >$DIR/log/$n.log 2>&1 </dev/null &
	echo $! >$DIR/pids/$n
	say "started $n (pid $!, log $DIR/log/$n.log)"
}
waitfor() { # what command...: poll until the command succeeds (90 s)
	local what=$1 i
	shift
	for i in $(seq 180); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.5
	done
	die "$what: not within 90 s (logs in $DIR/log)"
}

# 4. Control plane.
start etcd etcd --name fm --data-dir $DIR/etcd \
	--listen-client-urls http://127.0.0.1:23791 --advertise-client-urls http://127.0.0.1:23791 \
	--listen-peer-urls http://127.0.0.1:23801 --initial-advertise-peer-urls http://127.0.0.1:23801 \
	--initial-cluster fm=http://127.0.0.1:23801 --log-level warn
start kube-apiserver $K8S/kube-apiserver --etcd-servers http://127.0.0.1:23791 \
	--bind-address $NODE_IP --advertise-address $NODE_IP --secure-port 6443 \
	--tls-cert-file $pki/apiserver.crt --tls-private-key-file $pki/apiserver.key \
	--client-ca-file $pki/ca.crt --kubelet-client-certificate $pki/admin.crt --kubelet-client-key $pki/admin.key \
	--kubelet-certificate-authority $pki/ca.crt --kubelet-preferred-address-types InternalIP \
	--authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
	--service-account-issuer https://kubernetes.default.svc.cluster.local \
	--service-account-key-file $pki/sa.pub --service-account-signing-key-file $pki/sa.key \
	--service-cluster-ip-range $SVC_CIDR --allow-privileged --profiling=false
waitfor kube-apiserver kubectl get --raw /readyz
start kube-controller-manager $K8S/kube-controller-manager --kubeconfig $DIR/controller-manager.kubeconfig \
	--authentication-kubeconfig $DIR/controller-manager.kubeconfig --authorization-kubeconfig $DIR/controller-manager.kubeconfig \
	--bind-address 127.0.0.1 --secure-port 10357 --leader-elect=false \
	--allocate-node-cidrs --cluster-cidr $POD_CIDR --node-cidr-mask-size 24 --service-cluster-ip-range $SVC_CIDR \
	--root-ca-file $pki/ca.crt --service-account-private-key-file $pki/sa.key --use-service-account-credentials \
	--cluster-signing-cert-file $pki/ca.crt --cluster-signing-key-file $pki/ca.key
start kube-scheduler $K8S/kube-scheduler --kubeconfig $DIR/scheduler.kubeconfig \
	--authentication-kubeconfig $DIR/scheduler.kubeconfig --authorization-kubeconfig $DIR/scheduler.kubeconfig \
	--bind-address 127.0.0.1 --secure-port 10359 --leader-elect=false
start dns $DIR/bin/clusterdns --kubeconfig $DIR/dns.kubeconfig --listen $NODE_IP:53
kubectl apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: fibmesh-cluster-dns}
rules: [{apiGroups: [""], resources: [services], verbs: [list, watch]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: fibmesh-cluster-dns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: fibmesh-cluster-dns}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: fibmesh-cluster-dns}]
EOF

# 5. The node: containerd and the kubelet in a mount namespace whose / is
# rshared, held by a sleeping process (nsenter -t it -m for ctr, crictl).
if ! { [ -f $DIR/pids/mntns ] && kill -0 "$(cat $DIR/pids/mntns)" 2>/dev/null; }; then
	start mntns unshare --mount --propagation unchanged sh -c 'mount --make-rshared / && exec sleep infinity'
	sleep 0.5
fi
NS="nsenter -t $(cat $DIR/pids/mntns) -m --"
mkdir -p /etc/cni/net.d /opt/cni/bin
cp $DIR/cni/* /opt/cni/bin/
# The primary plugin, first in the conf dir (podman's 87-podman-bridge
# sorts after it). fibmesh's installer appends itself to this list; it is
# written only once (rewriting it would drop that entry until the
# installer puts it back).
[ -f /etc/cni/net.d/10-fibmesh-cluster.conflist ] || cat >/etc/cni/net.d/10-fibmesh-cluster.conflist <<EOF
{
  "cniVersion": "1.0.0",
  "name": "fibmesh-cluster",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "fm-cni0",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$NODE_POD_CIDR", "gateway": "$POD_GW"}]],
        "routes": [{"dst": "0.0.0.0/0", "gw": "$POD_GW"}],
        "dataDir": "$DIR/cni-ipam"
      }
    }
  ]
}
EOF
# Without CAP_SYS_RESOURCE (some VMs and containers drop it) runc cannot
# lower a container's oom_score_adj below this process's ("nsexec: failed
# to update /proc/self/oom_score_adj: Permission denied", and the CRI
# reports only "can't get final child's PID from pipe: EOF"): containerd
# then clamps the kubelet's values to its own.
restrict_oom=false
if ! capsh --has-p=cap_sys_resource 2>/dev/null; then
	restrict_oom=true
	say "no CAP_SYS_RESOURCE here: containerd restrict_oom_score_adj = true"
fi
cat >$DIR/containerd.toml <<EOF
version = 2
root = "$DIR/containerd"
state = "$RUN/containerd"
[grpc]
  address = "$RUN/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/containerd-opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE"
  restrict_oom_score_adj = $restrict_oom
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
    max_conf_num = 1
EOF
start containerd $NS containerd --config $DIR/containerd.toml
CTR="$NS ctr -a $RUN/containerd.sock -n k8s.io"
waitfor containerd $CTR version
for img in ghcr.io/fibmesh/fibmesh:$TAG $PAUSE fibmesh.test/busybox:$TAG; do
	podman save --format docker-archive $img | $CTR images import - >/dev/null
done
say "images in containerd: $($CTR images ls -q | grep -v sha256 | tr '\n' ' ')"

cat >$DIR/kubelet.yaml <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://$RUN/containerd.sock
clusterDNS: [$NODE_IP]
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
# fibmesh's startup taint (docs/cni.md): no pod but the agent's and the
# controller's runs here until the controller lifts it.
registerWithTaints: [{key: fibmesh.io/agent-not-ready, effect: NoSchedule}]
EOF
start kubelet $NS $K8S/kubelet --config $DIR/kubelet.yaml --kubeconfig $DIR/kubelet.kubeconfig \
	--root-dir $DIR/kubelet --hostname-override $NODE --node-ip $NODE_IP
cat >$DIR/kube-proxy.yaml.new <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $DIR/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE
bindAddress: $NODE_IP
metricsBindAddress: 127.0.0.1:10349
healthzBindAddress: 127.0.0.1:10356
nodePortAddresses: [$NODE_IP/32]
conntrack: {maxPerCore: 0}
EOF
# kube-proxy exits when its config file changes: rewrite it only if it would.
cmp -s $DIR/kube-proxy.yaml.new $DIR/kube-proxy.yaml || mv $DIR/kube-proxy.yaml.new $DIR/kube-proxy.yaml
start kube-proxy $K8S/kube-proxy --config $DIR/kube-proxy.yaml
waitfor "node $NODE Ready" kubectl wait --for=condition=Ready node/$NODE --timeout=1s
say "node $NODE Ready"

# 6. fibmesh. The CA's PersistentVolumeClaim needs a volume: this cluster
# has no provisioner, so a hostPath PersistentVolume (as a platform team
# would create one, or use the ca-secret overlay). A hostPath volume
# gets no fsGroup: the directory is made the controller's (65532) here.
mkdir -p $DIR/pv/fibmesh-ca
chown 65532:65532 $DIR/pv/fibmesh-ca
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata: {name: fibmesh-ca-$NODE}
spec:
  capacity: {storage: 64Mi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: $DIR/pv/fibmesh-ca, type: DirectoryOrCreate}
EOF
say "kubectl apply -k hack/cluster/overlay"
kubectl apply -k hack/cluster/overlay
kubectl -n fibmesh-system rollout status deploy/fibmesh-controller --timeout=180s
kubectl -n fibmesh-system rollout status ds/fibmesh-agent --timeout=180s
say "up: export KUBECONFIG=$KUBECONFIG"
