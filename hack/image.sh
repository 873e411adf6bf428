#!/usr/bin/env bash
# hack/image.sh build IMAGE: build the fibmesh image with podman or docker,
# whichever has a running engine, WITHOUT pulling anything: the static
# binaries are built here (as `binaries` below) and put in an image FROM
# scratch with what distroless static would add (/etc/passwd and
# /etc/group with nonroot 65532, /tmp, this host's CA bundle). It works
# on a machine with no registry access (the multi-stage Dockerfile pulls
# golang and distroless: `docker build .` is for machines that can).
# hack/image.sh binaries DIR: build, without any engine, the static
# binaries the Dockerfile's build stage builds (the commands of its
# ARG CMDS line, CGO_ENABLED=0, same flags) into DIR, and check that each
# is statically linked.
set -euo pipefail
cd "$(dirname "$0")/.."
cmds() {
	sed -n 's/^ARG CMDS="\(.*\)"$/\1/p' Dockerfile
}
case "${1:-}" in
build)
	image=${2:?usage: hack/image.sh build IMAGE}
	engine=
	why=()
	for e in podman docker; do
		if ! command -v "$e" >/dev/null; then
			why+=("$e: not installed")
			continue
		fi
		if out=$("$e" info 2>&1); then
			engine=$e
			break
		fi
		why+=("$e: installed, but no engine answers ($e info: $(printf '%s' "$out" | grep -v '^\s*$' | tail -1))")
	done
	if [ -z "$engine" ]; then
		echo "image: no container engine runs here, so no image was built:" >&2
		printf '  %s\n' "${why[@]}" >&2
		echo "  start one (systemctl start docker, or install podman: apt-get install podman)," >&2
		echo "  or build on a machine that has one: $(command -v docker >/dev/null && echo docker || echo podman) build -t $image ." >&2
		echo "  'make image-binaries' checks the image's build stage (the static binaries) without an engine." >&2
		exit 1
	fi
	ctx=$(mktemp -d)
	trap 'rm -rf "$ctx"' EXIT
	"$0" binaries "$ctx/rootfs/usr/local/bin"
	# What distroless static adds and the containers use: a nonroot user
	# (the controller runs as 65532), /tmp (1777), a CA bundle.
	mkdir -p "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/tmp"
	chmod 1777 "$ctx/rootfs/tmp"
	printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$ctx/rootfs/etc/passwd"
	printf 'root:x:0:\nnonroot:x:65532:\n' >"$ctx/rootfs/etc/group"
	bundle=
	for f in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/cert.pem; do
		if [ -f "$f" ]; then bundle=$f && break; fi
	done
	if [ -z "$bundle" ]; then
		echo "image: no CA bundle on this host (/etc/ssl/certs/ca-certificates.crt: apt-get install ca-certificates)" >&2
		exit 1
	fi
	cp "$bundle" "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
	cat >"$ctx/Containerfile" <<-'CF'
		FROM scratch
		COPY rootfs/ /
		USER 65532:65532
		ENTRYPOINT ["/usr/local/bin/fibmesh-controller"]
	CF
	echo "image: building $image with $engine (FROM scratch, binaries built here)"
	"$engine" build -t "$image" -f "$ctx/Containerfile" "$ctx"
	echo "image: built $image with $engine"
	;;
binaries)
	dir=${2:?usage: hack/image.sh binaries DIR}
	list=$(cmds)
	if [ -z "$list" ]; then
		echo "image-binaries: no ARG CMDS=\"...\" line in Dockerfile" >&2
		exit 1
	fi
	mkdir -p "$dir"
	for c in $list; do
		CGO_ENABLED=0 ${GO:-go} build -trimpath -ldflags=-s -o "$dir/$c" "./cmd/$c"
		# A static Go binary has no ELF interpreter (PT_INTERP): its
		# program header table holds no INTERP entry, so neither does
		# the file's text "/lib64/ld-linux" / "/lib/ld-musl".
		if ${GO:-go} version -m "$dir/$c" | grep -q 'CGO_ENABLED=1' || grep -aq -e '/lib64/ld-linux' -e '/lib/ld-musl' "$dir/$c"; then
			echo "image-binaries: $dir/$c is not static" >&2
			exit 1
		fi
		echo "image-binaries: $dir/$c static ($(du -h "$dir/$c" | cut -f1))"
	done
	;;
*)
	echo "usage: hack/image.sh build IMAGE | binaries DIR" >&2
	exit 2
	;;
esac
