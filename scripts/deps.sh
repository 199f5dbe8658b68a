#!/usr/bin/env bash
# deps.sh installs the Debian packages that `make test`, `make bench` and `make lab`
# need, and only those that are missing: a second run calls no apt-get at all.
#
# Add a package by adding it to PACKAGES below, in the group it belongs to.
set -euo pipefail

PACKAGES=(
	# PostgreSQL server binaries for the store conformance suite and benchmarks
	# (scripts/pg.sh runs a throwaway cluster from /usr/lib/postgresql/*/bin).
	postgresql
	# go test -race needs cgo: a C compiler and the C library headers.
	gcc
	libc6-dev
	# test.sh checks that every binary is statically linked with file(1).
	file
	# ip, ss: network namespaces for the lab, free-port checks in pg.sh.
	iproute2
	# TLS: the controller's self-signed certificates, cvlanctl against it.
	ca-certificates
	# make proto: protoc for controlplane/controlpb (the Go plugin comes from go.mod).
	protobuf-compiler
	# make bpf: bpf2go compiles bpf/*.c with the pinned clang-19 and strips with
	# llvm-strip-19; libbpf-dev has <bpf/bpf_helpers.h>, linux-libc-dev <linux/bpf.h>.
	clang-19
	llvm-19
	libbpf-dev
	# e2e tests and the lab: nft blocks paths between namespaces; ping checks reachability.
	nftables
	# make test-kernel: qemu boots Debian's kernel with an initramfs of busybox and the
	# test binaries (scripts/kernel-matrix.sh also installs these and the kernels it lists).
	qemu-system-x86
	busybox-static
	kmod
	cpio
	iputils-ping
	# make lab: TCP listeners and connects for the policy matrix.
	netcat-openbsd
	curl
	openssl
)

missing=()
for pkg in "${PACKAGES[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$pkg")
	fi
done

if [ "${#missing[@]}" -eq 0 ]; then
	echo "deps: all ${#PACKAGES[@]} packages installed"
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing packages: ${missing[*]}" >&2
	echo "deps: run as root, or: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
	exit 1
fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"
