#!/usr/bin/env bash
# Installs what fibmesh needs on Debian/Ubuntu, only if it is missing.
#   hack/deps.sh runtime   iproute2, ethtool, ping, nsenter, curl, h2load (tests, lab, demo); prometheus and
#                          chromium for the telemetry tests (the dashboards' queries, the live page);
#                          iptables for bench-fib's kube-proxy rules (and their test)
#   hack/deps.sh bpf       clang, llvm, libbpf-dev, bpftool (make generate)
#   hack/deps.sh proto     protoc (make generate)
#   hack/deps.sh vmtest    qemu-system-x86, busybox-static, apt-get/dpkg-deb (make vmtest)
#   hack/deps.sh bench-l4  iperf3, haproxy (make bench-l4: the throughput client/server, the mTLS peer)
#   hack/deps.sh kube      etcd-server, kubectl's absence reported (make kube-apiserver: the tests'
#                          real API server, internal/kubetest)
set -euo pipefail

need=()
case "${1:-runtime}" in
runtime)
	command -v ip >/dev/null || need+=(iproute2)
	command -v ethtool >/dev/null || need+=(ethtool)
	command -v ping >/dev/null || need+=(iputils-ping)
	command -v nsenter >/dev/null || need+=(util-linux)
	command -v curl >/dev/null || need+=(curl) # the demo's hints curl from pod to pod
	command -v h2load >/dev/null || need+=(nghttp2-client) # the L7 e2e tests drive h2c with it
	command -v prometheus >/dev/null || need+=(prometheus) # e2e TestPrometheusDashboards runs the binary itself, not the service
	command -v chromium >/dev/null || need+=(chromium)     # the live page's tests drive it headless (chromedp)
	command -v iptables-restore >/dev/null || need+=(iptables) # bench-fib's kube-proxy peer; perf/fibbench's rules test loads them
	;;
proto)
	command -v protoc >/dev/null || need+=(protobuf-compiler)
	;;
bpf)
	command -v clang >/dev/null || need+=(clang)
	command -v llvm-strip >/dev/null || need+=(llvm)
	[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
	command -v bpftool >/dev/null || need+=(bpftool)
	;;
vmtest)
	command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
	# The dynamic busybox package would find no libc in the initramfs.
	dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need+=(busybox-static)
	command -v dpkg-deb >/dev/null || need+=(dpkg)
	command -v xz >/dev/null || need+=(xz-utils) # kernels with .ko.xz modules
	if ! command -v apt-get >/dev/null; then
		echo "deps: make vmtest boots Debian's kernel package and needs apt-get (Debian/Ubuntu)" >&2
		exit 1
	fi
	;;
bench-l4)
	command -v iperf3 >/dev/null || need+=(iperf3)
	command -v haproxy >/dev/null || need+=(haproxy) # Debian's; the bench runs its own instances, not the package's service
	command -v ss >/dev/null || need+=(iproute2)
	;;
kube)
	# Debian's etcd 3.4 serves a v1.34 kube-apiserver (its storage needs
	# etcd >= 3.4); the apiserver itself is built by hack/kube-apiserver.
	[ -x /usr/bin/etcd ] || command -v etcd >/dev/null || need+=(etcd-server)
	# Debian's kubectl (kubernetes-client) is 1.20, too old for deploy/'s
	# kustomization: not installed; the tests fall back to client-go
	# where kubectl is missing, and say so.
	command -v kubectl >/dev/null || echo "deps: kubectl not found: deploy's tests apply with client-go instead of kubectl apply -k" >&2
	;;
*)
	echo "usage: $0 runtime|bpf|proto|vmtest|bench-l4|kube" >&2
	exit 2
	;;
esac

if ! command -v go >/dev/null; then
	echo "deps: Go is not installed: install Go 1.26 (https://go.dev/doc/install) and retry" >&2
	exit 1
fi
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "deps: missing packages: ${need[*]}; run as root, or: sudo apt-get install -y ${need[*]}" >&2
	exit 1
fi
echo "deps: installing ${need[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
