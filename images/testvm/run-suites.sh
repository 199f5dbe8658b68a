#!/bin/sh
# run-suites.sh PLAN: run the kernel matrix's suites listed in PLAN and print one
# result line per suite and a final verdict, in the format scripts/kernel-matrix.sh
# reads:
#
#   CVLAN-SUITE wg kernel=6.1.0-56-amd64 PASS 12.3s
#   CVLAN-MATRIX PASS
#
# It runs inside the qemu guest (from /init, under busybox sh) and on the host (the
# "host" kernel), so it is plain POSIX sh. Each PLAN line is
#
#   NAME BINARY DIR RUN SECONDS
#
# a `go test -c` binary, the directory to run it in (a copy of its package's, for
# testdata/), its -test.run regexp and its -test.timeout in seconds. The binary's
# output is printed with "[NAME] " before each line. The environment (CVLAN_...)
# comes from the caller. The exit status is 0 only if every suite passed.
set -u

plan=$1
kernel=$(uname -r)
tmp=${TMPDIR:-/tmp}
failed=0

# now prints the seconds since boot, with hundredths: busybox date has no %N.
now() { cut -d' ' -f1 /proc/uptime; }

echo "CVLAN-KERNEL $kernel"
while read -r name bin dir run secs; do
	case $name in '' | '#'*) continue ;; esac
	echo "CVLAN-START $name: $bin -test.run '$run' -test.timeout ${secs}s"
	rcfile=$tmp/cvlan-suite-$$-$name.rc
	echo 255 >"$rcfile"
	start=$(now)
	# -test.timeout makes the binary panic (the e2e harness cleans up just before);
	# timeout(1) is the backstop for a binary that hangs past it.
	{
		(cd "$dir" && exec timeout -s TERM -k 10 $((secs + 20)) "$bin" \
			-test.v -test.run "$run" -test.timeout "${secs}s") </dev/null
		echo $? >"$rcfile"
	} 2>&1 | awk -v p="[$name] " '{ print p $0; fflush() }'
	end=$(now)
	rc=$(cat "$rcfile")
	rm -f "$rcfile"
	secs_taken=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
	if [ "$rc" = 0 ]; then
		result=PASS
	else
		result=FAIL
		failed=1
		case $rc in
		124 | 137) echo "[$name] killed by timeout(1) after $((secs + 20))s (exit status $rc)" ;;
		*) echo "[$name] exit status $rc" ;;
		esac
	fi
	echo "CVLAN-SUITE $name kernel=$kernel $result ${secs_taken}s"
done <"$plan"

if [ "$failed" = 0 ]; then
	echo "CVLAN-MATRIX PASS"
else
	echo "CVLAN-MATRIX FAIL"
fi
exit "$failed"
