#!/usr/bin/env bash
# kernel-matrix.sh runs cvlan's kernel-facing test suites on every kernel of the
# matrix: Debian kernels booted under qemu (TCG: this machine has no usable KVM) and
# this machine's own kernel. It proves the paths this host's kernel lacks (kernel
# WireGuard; later ESP/XFRM) for real. See docs/kernel-matrix.md.
#
#   images/testvm/kernels  the kernels, one a line (adding a kernel is one line)
#   images/testvm/suites   the suites, one a line (adding a suite is one line)
#
# Steps: install what is missing (qemu, busybox-static, the kernel packages, and the
# tools the guest copies from the host); build the daemons and one static `go test -c`
# binary per suite; for each kernel either build an initramfs and boot it under qemu
# with a hard timeout, or (the "host" kernel) run the same binaries here; read the
# result lines; print a table suite × kernel. A kernel fails on a FAIL line, on a
# missing or repeated result line, on a missing final line, on a guest setup error or
# on the timeout, and then its console's tail is printed. Exit status 1 if any did.
#
# Options (run with -h). Environment: CVLAN_MATRIX_OUT (output directory, default
# bin/kernel-matrix), CVLAN_MATRIX_ACCEL (qemu accelerator, default tcg),
# CVLAN_MATRIX_SMP (2), CVLAN_MATRIX_MEM (MiB, 1536), CVLAN_MATRIX_TAIL (lines of
# console printed on failure, 80), CVLAN_MATRIX_TIMEOUT (seconds for one kernel's
# whole run; default 60 plus each suite's timeout and 30 s).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

readonly TESTVM=images/testvm
readonly KERNELS_FILE=$TESTVM/kernels
readonly SUITES_FILE=$TESTVM/suites
OUT=${CVLAN_MATRIX_OUT:-bin/kernel-matrix}
readonly ACCEL=${CVLAN_MATRIX_ACCEL:-tcg}
readonly SMP=${CVLAN_MATRIX_SMP:-2}
readonly MEM=${CVLAN_MATRIX_MEM:-1536}
readonly TAIL=${CVLAN_MATRIX_TAIL:-80}
# The time a guest may take beyond its suites' timeouts: boot, modules, power-off.
readonly BOOT_BUDGET=60
# What the guest copies from the host (mkinitramfs.sh) and what qemu needs.
readonly VM_PACKAGES=(qemu-system-x86 busybox-static kmod cpio)
# The tools the tests call, on the host and (copied) in the guest.
readonly TOOL_PACKAGES=(iproute2 iputils-ping curl nftables)

usage() {
	cat <<EOF
usage: $0 [-k KERNEL]... [-s SUITE]... [-r REGEXP] [-e NAME=VALUE]... [-v] [-x]

Runs the suites of $SUITES_FILE on the kernels of $KERNELS_FILE.

  -k KERNEL      only this kernel (a name from $KERNELS_FILE); repeatable
  -s SUITE       only this suite (a name from $SUITES_FILE); repeatable
  -r REGEXP      -test.run for the selected suites instead of the list's
  -e NAME=VALUE  environment for the suites, after the defaults (so it wins);
                 repeatable, e.g. -e CVLAN_EXPECT_WIREGUARD=userspace
  -v             print the whole console (the suites' -test.v output) while it runs
  -x             keep the VM: a shell on its console after the suites (one VM kernel
                 only; no timeout); type exit to power it off
  -h             this help

Output: $OUT/KERNEL/console.log (VM) or output.log (host), and the table.
EOF
}

sel_kernels=() sel_suites=() extra_env=()
run_override='' verbose=0 shell=0
while getopts 'k:s:r:e:vxh' opt; do
	case $opt in
	k) sel_kernels+=("$OPTARG") ;;
	s) sel_suites+=("$OPTARG") ;;
	r) run_override=$OPTARG ;;
	e)
		[[ $OPTARG =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "-e $OPTARG: want NAME=VALUE"
		extra_env+=("$OPTARG")
		;;
	v) verbose=1 ;;
	x) shell=1 ;;
	h)
		usage
		exit 0
		;;
	*)
		usage >&2
		exit 2
		;;
	esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || die "unexpected arguments: $* (see -h)"
[[ -z $run_override || $run_override != *[[:space:]]* ]] || die "-r: the regexp may not contain spaces"

# ---- the lists ----

kernels=()
declare -A k_src k_wg k_release
while read -r name src wg rest; do
	[[ -z $name || $name == \#* ]] && continue
	[[ $name =~ ^[A-Za-z0-9][A-Za-z0-9.-]*$ && -n ${src:-} && ${wg:-} =~ ^(kernel|userspace)$ && -z ${rest:-} ]] ||
		die "$KERNELS_FILE: bad line: $name ${src:-} ${wg:-} ${rest:-} (want NAME SOURCE kernel|userspace)"
	[[ -z ${k_src[$name]:-} ]] || die "$KERNELS_FILE: kernel $name listed twice"
	kernels+=("$name")
	k_src[$name]=$src
	k_wg[$name]=$wg
done <"$KERNELS_FILE"

suites=()
declare -A s_pkg s_run s_secs s_where s_mods
while read -r name pkg run timeout where mods rest; do
	[[ -z $name || $name == \#* ]] && continue
	[[ $name =~ ^[A-Za-z0-9-]+$ && -n ${mods:-} && -z ${rest:-} ]] ||
		die "$SUITES_FILE: bad line: $name ${pkg:-} ${run:-} ${timeout:-} ${where:-} ${mods:-} ${rest:-}"
	[[ -z ${s_pkg[$name]:-} ]] || die "$SUITES_FILE: suite $name listed twice"
	case $timeout in
	*[0-9]s) secs=${timeout%s} ;;
	*[0-9]m) secs=$((${timeout%m} * 60)) ;;
	*) die "$SUITES_FILE: suite $name: timeout $timeout: want e.g. 90s or 2m" ;;
	esac
	[[ $secs =~ ^[0-9]+$ ]] || die "$SUITES_FILE: suite $name: timeout $timeout: want e.g. 90s or 2m"
	suites+=("$name")
	s_pkg[$name]=$pkg
	s_run[$name]=$run
	s_secs[$name]=$secs
	s_where[$name]=$where
	s_mods[$name]=${mods//,/ }
	[[ ${s_mods[$name]} == - ]] && s_mods[$name]=''
done <"$SUITES_FILE"

contains() {
	local x=$1
	shift
	local y
	for y in "$@"; do [[ $x == "$y" ]] && return 0; done
	return 1
}

if [ ${#sel_kernels[@]} -gt 0 ]; then
	for k in "${sel_kernels[@]}"; do contains "$k" "${kernels[@]}" || die "-k $k: not in $KERNELS_FILE (${kernels[*]})"; done
	mapfile -t kernels < <(for k in "${kernels[@]}"; do contains "$k" "${sel_kernels[@]}" && echo "$k"; done)
fi
if [ ${#sel_suites[@]} -gt 0 ]; then
	for s in "${sel_suites[@]}"; do contains "$s" "${suites[@]}" || die "-s $s: not in $SUITES_FILE (${suites[*]})"; done
	mapfile -t suites < <(for s in "${suites[@]}"; do contains "$s" "${sel_suites[@]}" && echo "$s"; done)
fi
if [ -n "$run_override" ]; then
	for s in "${suites[@]}"; do s_run[$s]=$run_override; done
fi

is_vm() { [[ ${k_src[$1]} != host ]]; }

# applies SUITE KERNEL: whether the suite runs on that kernel.
# shellcheck disable=SC2086 # the list of kernel names is split into words
applies() {
	local where=${s_where[$1]} k=$2
	case $where in
	all) return 0 ;;
	vm) is_vm "$k" ;;
	host) ! is_vm "$k" ;;
	*) contains "$k" ${where//,/ } ;; # one kernel name a word
	esac
}

vm_kernels=()
for k in "${kernels[@]}"; do is_vm "$k" && vm_kernels+=("$k"); done
if [ "$shell" = 1 ]; then
	if [ ${#vm_kernels[@]} -ne 1 ] || [ ${#kernels[@]} -ne 1 ]; then die "-x needs exactly one VM kernel (-k NAME)"; fi
fi

# ---- install what is missing ----

# kernel_release PACKAGE: the release of the kernel image PACKAGE installs, following
# meta-packages (linux-image-amd64 -> linux-image-6.1.0-56-amd64).
kernel_release() {
	local pkg=$1 hop vmlinuz
	for hop in 1 2 3; do
		vmlinuz=$(dpkg-query -L "$pkg" 2>/dev/null | grep -m1 '^/boot/vmlinuz-' || true)
		if [ -n "$vmlinuz" ]; then
			echo "${vmlinuz#/boot/vmlinuz-}"
			return 0
		fi
		pkg=$(dpkg-query -W -f='${Depends}' "$pkg" 2>/dev/null | tr ',|' '\n' | grep -o -m1 'linux-image-[^ ]*' || true)
		[ -n "$pkg" ] || return 1
		: "$hop"
	done
	return 1
}

install_missing() {
	local pkgs=("${TOOL_PACKAGES[@]}") missing=() p k
	if [ ${#vm_kernels[@]} -gt 0 ]; then
		pkgs+=("${VM_PACKAGES[@]}")
		for k in "${vm_kernels[@]}"; do pkgs+=("${k_src[$k]}"); done
	fi
	for p in "${pkgs[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	if [ ${#missing[@]} -eq 0 ]; then
		log "packages: all ${#pkgs[@]} installed"
		return 0
	fi
	[ "$(id -u)" -eq 0 ] || die "missing packages: ${missing[*]}; run as root or: sudo apt-get install -y --no-install-recommends ${missing[*]}"
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update
	apt-get install -y --no-install-recommends "${missing[@]}"
}

# ---- build ----

build() {
	local s start=$SECONDS
	rm -rf "${OUT:?}/bin" "${OUT:?}/tests"
	mkdir -p "$OUT/bin" "$OUT/tests"
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$OUT/bin/" ./cmd/...
	for s in "${suites[@]}"; do
		CGO_ENABLED=0 go test -c -trimpath -ldflags '-s -w' -o "$OUT/tests/$s.test" "${s_pkg[$s]}"
		[ -x "$OUT/tests/$s.test" ] || die "suite $s: go test -c ${s_pkg[$s]} made no binary (no tests?)"
	done
	log "built the daemons and ${#suites[@]} test binaries in $((SECONDS - start))s"
}

# ---- run ----

# env_lines KERNEL: the suites' environment, NAME=VALUE a line.
env_lines() {
	local bin=$2
	echo "CVLAN_REQUIRE_PRIVILEGED=1"
	echo "CVLAN_EXPECT_WIREGUARD=${k_wg[$1]}"
	echo "CVLAN_E2E_BIN=$bin"
	# Under qemu without KVM the 6.1 verifier needs ~30 s for the policy programs,
	# longer than the e2e deadlines: e2e agents there run --policy off, and the
	# bpfpolicy suite proves the programs on that kernel instead.
	[ "$1" = host ] || echo "CVLAN_E2E_AGENT_POLICY=off"
	[ ${#extra_env[@]} -eq 0 ] || printf '%s\n' "${extra_env[@]}"
}

# hard_timeout KERNEL: seconds for the whole run on the kernel.
hard_timeout() {
	local s t=$BOOT_BUDGET
	if [ -n "${CVLAN_MATRIX_TIMEOUT:-}" ]; then
		echo "$CVLAN_MATRIX_TIMEOUT"
		return
	fi
	for s in "${suites[@]}"; do
		applies "$s" "$1" && t=$((t + s_secs[$s] + 30))
	done
	echo "$t"
}

# show NAME: the filter between a run's output and the terminal.
show() {
	if [ "$verbose" = 1 ]; then
		cat
	else
		grep --line-buffered -E '^CVLAN-(SUITE|MATRIX|GUEST-ERROR) ' | sed -u "s/^/  $1: /" || true
	fi
}

# run_vm KERNEL: boot the kernel with an initramfs of the applicable suites.
run_vm() {
	local k=$1 dir=$OUT/$1 release=${k_release[$1]} s mods=() plan stage line t rc
	stage=$dir/stage
	rm -rf "$dir"
	mkdir -p "$stage/cvlan/suites" "$stage/cvlan/bin"
	cp "$OUT"/bin/* "$stage/cvlan/bin/"
	plan=$stage/cvlan/plan
	: >"$plan"
	for s in "${suites[@]}"; do
		applies "$s" "$k" || continue
		mkdir -p "$stage/cvlan/suites/$s"
		cp "$OUT/tests/$s.test" "$stage/cvlan/suites/$s/"
		[ ! -d "${s_pkg[$s]}/testdata" ] || cp -a "${s_pkg[$s]}/testdata" "$stage/cvlan/suites/$s/"
		echo "$s /cvlan/suites/$s/$s.test /cvlan/suites/$s ${s_run[$s]} ${s_secs[$s]}" >>"$plan"
		# shellcheck disable=SC2206 # one module a word
		mods+=(${s_mods[$s]})
	done
	{ [ ${#mods[@]} -eq 0 ] || printf '%s\n' "${mods[@]}"; } | awk '!seen[$0]++' >"$stage/cvlan/modules"
	while IFS= read -r line; do
		printf "export %s='%s'\n" "${line%%=*}" "$(printf '%s' "${line#*=}" | sed "s/'/'\\\\''/g")"
	done < <(env_lines "$k" /cvlan/bin) >"$stage/cvlan/env"
	"$TESTVM/mkinitramfs.sh" "$release" "$stage" "$dir/initramfs.cpio"
	rm -rf "$stage"

	local accel=(-accel "$ACCEL" -cpu max) append="console=ttyS0 panic=-1 loglevel=4 edd=off"
	[ "$ACCEL" != kvm ] || accel=(-accel kvm -cpu host)
	local qemu=(qemu-system-x86_64 -nographic -no-reboot "${accel[@]}" -smp "$SMP" -m "$MEM"
		-kernel "/boot/vmlinuz-$release" -initrd "$dir/initramfs.cpio" -nic none)
	if [ "$shell" = 1 ]; then
		log "$k: booting $release with a shell after the suites (initramfs $(du -m "$dir/initramfs.cpio" | cut -f1) MiB)"
		"${qemu[@]}" -append "$append cvlan.shell"
		return 0
	fi
	t=$(hard_timeout "$k")
	log "$k: booting $release under qemu ($ACCEL, $SMP CPUs, ${MEM} MiB, timeout ${t}s; initramfs $(du -m "$dir/initramfs.cpio" | cut -f1) MiB)"
	{
		echo '#!/usr/bin/env bash'
		echo '# Boots this initramfs again. Arguments go to qemu: -append "console=ttyS0 cvlan.shell"'
		echo '# (the last -append wins) gives a shell on the console after the suites.'
		printf '%q ' exec "${qemu[@]}" -append "$append"
		echo '"$@"'
	} >"$dir/boot.sh"
	chmod +x "$dir/boot.sh"
	set +e
	# The console log without carriage returns and the firmware's terminal escapes.
	timeout -k 5 "$t" "${qemu[@]}" -append "$append" </dev/null 2>&1 |
		sed -u -e 's/\r$//' -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' | tee "$dir/console.log" | show "$k"
	rc=${PIPESTATUS[0]}
	set -e
	[ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] || echo "timed out after ${t}s" >"$dir/timeout"
	[ "$rc" -eq 0 ] || [ -e "$dir/timeout" ] || echo "qemu exited with status $rc" >"$dir/error"
	ln -sf console.log "$dir/output.log"
}

# run_host KERNEL: the same binaries on this machine's kernel.
run_host() {
	local k=$1 dir=$OUT/$1 s t rc envs=()
	rm -rf "$dir"
	mkdir -p "$dir"
	if [ "$(id -u)" -ne 0 ]; then
		echo "the host suites need root" >"$dir/error"
		: >"$dir/output.log"
		return 0
	fi
	for s in "${suites[@]}"; do
		applies "$s" "$k" || continue
		echo "$s $OUT/tests/$s.test $PWD/${s_pkg[$s]#./} ${s_run[$s]} ${s_secs[$s]}"
	done >"$dir/plan"
	mapfile -t envs < <(env_lines "$k" "$OUT/bin")
	t=$(hard_timeout "$k")
	log "$k: running on this machine's kernel $(uname -r) (timeout ${t}s)"
	set +e
	timeout -k 5 "$t" env "${envs[@]}" sh "$TESTVM/run-suites.sh" "$dir/plan" </dev/null 2>&1 | tee "$dir/output.log" | show "$k"
	rc=${PIPESTATUS[0]}
	set -e
	[ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] || echo "timed out after ${t}s" >"$dir/timeout"
}

# ---- results ----

declare -A cell wall
failed_kernels=()

# judge KERNEL: read its output, fill the table's cells, report a failure.
judge() {
	local k=$1 dir=$OUT/$1 out=$OUT/$1/output.log s lines n why=() release=${k_release[$1]}
	for s in "${suites[@]}"; do
		if ! applies "$s" "$k"; then
			cell[$s,$k]='—'
			continue
		fi
		lines=$(grep -E "^CVLAN-SUITE $s kernel=[^ ]+ (PASS|FAIL) [0-9.]+s\$" "$out" || true)
		n=$(grep -c . <<<"$lines" || true)
		if [ "$n" -eq 0 ]; then
			cell[$s,$k]=MISSING
			why+=("no result line for suite $s")
		elif [ "$n" -gt 1 ]; then
			cell[$s,$k]=REPEATED
			why+=("$n result lines for suite $s")
		else
			read -r _ _ kr result secs <<<"$lines"
			cell[$s,$k]="$result $secs"
			[ "$result" = PASS ] || why+=("suite $s failed")
			[ "$kr" = "kernel=$release" ] || why+=("suite $s ran on $kr, want kernel=$release")
		fi
	done
	[ ! -e "$dir/timeout" ] || why+=("$(cat "$dir/timeout")")
	[ ! -e "$dir/error" ] || why+=("$(cat "$dir/error")")
	if grep -q '^CVLAN-GUEST-ERROR ' "$out"; then
		why+=("guest setup: $(grep '^CVLAN-GUEST-ERROR ' "$out" | sed 's/^CVLAN-GUEST-ERROR //' | paste -sd';' -)")
	fi
	case $(grep -E '^CVLAN-MATRIX (PASS|FAIL)$' "$out" | tail -n1) in
	'CVLAN-MATRIX PASS') ;;
	'CVLAN-MATRIX FAIL') why+=("final line: FAIL") ;;
	*) why+=("no final CVLAN-MATRIX line") ;;
	esac
	if [ ${#why[@]} -gt 0 ]; then
		failed_kernels+=("$k")
		log "$k: FAIL: $(printf '%s; ' "${why[@]}" | sed 's/; $//')"
		for s in "${suites[@]}"; do
			[[ ${cell[$s,$k]} == PASS* || ${cell[$s,$k]} == '—' ]] && continue
			log "$k: suite $s: failed tests and their messages:"
			grep -E "^\[$s\] +(--- FAIL|[^ ]+_test\.go:[0-9]+: |panic: )" "$out" | head -n 40 | sed "s/^/  | /" |
				grep . || echo "  | (none in its output)"
		done
		log "$k: last $TAIL lines of $out:"
		tail -n "$TAIL" "$out" | sed "s/^/  | /"
	fi
}

table() {
	local s k w=12 c
	for k in "${kernels[@]}"; do
		[ ${#k} -lt $w ] || w=$((${#k} + 2))
		[ ${#k_release[$k]} -lt $w ] || w=$((${#k_release[$k]} + 2))
	done
	echo
	echo "kernel matrix (wall $((SECONDS / 60))m$((SECONDS % 60))s):"
	printf '  %-10s' suite
	for k in "${kernels[@]}"; do printf ' %-*s' "$w" "$k"; done
	printf '\n  %-10s' ''
	for k in "${kernels[@]}"; do printf ' %-*s' "$w" "${k_release[$k]}"; done
	echo
	for s in "${suites[@]}"; do
		printf '  %-10s' "$s"
		for k in "${kernels[@]}"; do
			c=${cell[$s,$k]}
			# printf pads by bytes; the dash is 3 of them.
			if [ "$c" = '—' ]; then printf ' %-*s' $((w + 2)) "$c"; else printf ' %-*s' "$w" "$c"; fi
		done
		echo
	done
	printf '  %-10s' '(wall)'
	for k in "${kernels[@]}"; do printf ' %-*s' "$w" "${wall[$k]}s"; done
	echo
}

# ---- main ----

if [ ${#kernels[@]} -eq 0 ] || [ ${#suites[@]} -eq 0 ]; then die "nothing to run"; fi
install_missing
for k in "${kernels[@]}"; do
	if is_vm "$k"; then
		k_release[$k]=$(kernel_release "${k_src[$k]}") || die "$k: package ${k_src[$k]} installs no /boot/vmlinuz-*"
		[ -r "/boot/vmlinuz-${k_release[$k]}" ] || die "$k: /boot/vmlinuz-${k_release[$k]} is not readable"
	else
		k_release[$k]=$(uname -r)
	fi
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
build
for k in "${kernels[@]}"; do
	start=$SECONDS
	if is_vm "$k"; then run_vm "$k"; else run_host "$k"; fi
	wall[$k]=$((SECONDS - start))
	[ "$shell" = 1 ] && exit 0
	judge "$k"
done
table
if [ ${#failed_kernels[@]} -gt 0 ]; then
	echo "kernel-matrix: FAIL on ${failed_kernels[*]} (logs in $OUT/KERNEL/output.log)"
	exit 1
fi
echo "kernel-matrix: PASS: ${#suites[@]} suites on ${#kernels[@]} kernels"
