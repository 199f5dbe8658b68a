#!/usr/bin/env bash
# mkinitramfs.sh RELEASE STAGE OUT: build the kernel matrix's initramfs for the
# installed Debian kernel RELEASE (/lib/modules/RELEASE) into OUT (a newc cpio;
# gzip-compressed if OUT ends in .gz).
#
# STAGE is the directory scripts/kernel-matrix.sh prepared; its cvlan/ tree becomes
# /cvlan in the guest: plan (for run-suites.sh), env, modules (one name a line),
# suites/NAME/ (test binary and testdata) and bin/ (the daemons). Around it go:
#
# - busybox-static with a link for each applet, except those we ship for real;
# - the real iproute2 `ip`, iputils `ping`, `curl` and `nft` (the tests and the e2e
#   harness call them) with every library ldd lists;
# - the modules listed and their dependencies (modprobe --show-depends), decompressed,
#   with a depmod -b for just that subset;
# - this directory's init and run-suites.sh.
set -euo pipefail

[ $# -eq 3 ] || {
	echo "usage: $0 RELEASE STAGE OUT" >&2
	exit 2
}
release=$1 stage=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
[ -d "/lib/modules/$release" ] || {
	echo "mkinitramfs: no /lib/modules/$release: is the kernel package installed?" >&2
	exit 1
}

root=$(mktemp -d "${out%/*}/root.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,root,var,lib/modules/"$release"}
ln -s ../run "$root/var/run"

# copy_bin SRC: SRC and the libraries ldd lists for it, at the same paths.
copy_bin() {
	local lib
	install -D -m755 "$1" "$root$1"
	for lib in $(ldd "$1" 2>/dev/null | grep -o '/[^ ]*' || true); do
		[ -e "$root$lib" ] || install -D -m755 "$lib" "$root$lib"
	done
}

copy_bin /bin/busybox
for applet in $(/bin/busybox --list-full); do
	case ${applet##*/} in
	ip | ping | ping6 | busybox) ;; # the real ones below
	*) [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet" ;;
	esac
done
copy_bin /usr/sbin/ip
copy_bin /usr/bin/ping
copy_bin /usr/bin/curl
copy_bin /usr/sbin/nft

printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$root/etc/hosts"
# For the shell of kernel-matrix.sh -x: busybox sh runs its own applets first.
cat >"$root/etc/profile" <<'PROFILE'
export PATH=/usr/sbin:/usr/bin:/sbin:/bin PS1='testvm:$PWD# '
ip() { /usr/sbin/ip "$@"; }
ping() { /usr/bin/ping "$@"; }
set -a
. /cvlan/env
set +a
PROFILE

cp -a "$stage/cvlan" "$root/cvlan"
install -m755 "$here/init" "$root/init"
install -m755 "$here/run-suites.sh" "$root/cvlan/run-suites.sh"

# Modules: busybox's modprobe reads an uncompressed .ko, so compressed ones are
# unpacked on the way in.
mapfile -t mods < <(grep -v '^$' "$stage/cvlan/modules" || true)
if [ ${#mods[@]} -gt 0 ]; then
	deps=$(modprobe -S "$release" --show-depends -a "${mods[@]}")
	awk '$1 == "insmod" { print $2 }' <<<"$deps" | sort -u | while read -r ko; do
		dst=$root${ko%.xz}
		dst=${dst%.zst}
		dst=${dst%.gz}
		mkdir -p "${dst%/*}"
		case $ko in
		*.xz) xz -dc "$ko" >"$dst" ;;
		*.zst) zstd -qdc "$ko" >"$dst" ;;
		*.gz) gzip -dc "$ko" >"$dst" ;;
		*) cp "$ko" "$dst" ;;
		esac
	done
fi
cp /lib/modules/"$release"/modules.{order,builtin,builtin.modinfo} "$root/lib/modules/$release/" 2>/dev/null || true
depmod -b "$root" "$release"

case $out in
*.gz) (cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -1 >"$out" ;;
*) (cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$out" ;;
esac
