#!/usr/bin/env bash
# test.sh is `make test` after scripts/deps.sh: it starts a throwaway PostgreSQL
# (scripts/pg.sh) for the store tests, runs go vet, the gofmt check and every test
# with -race, builds the binaries and checks that each is static and answers --help.
# PostgreSQL is stopped however the run ends. Every step runs even after an earlier
# one failed; the last line says which failed, and the exit code is non-zero if any did.
#
# Environment: CVLAN_REQUIRE_PRIVILEGED=1 (set by .ci/run) makes tests that need root,
# network namespaces or PostgreSQL fail instead of skipping; GO_TEST_TIMEOUT (25m).
set -euo pipefail
cd "$(dirname "$0")/.."

readonly BINARIES=(cvlan-controller cvlan-agent cvlan-relay cvlan-vrouter cvlanctl)
readonly STORE_PKGS=./controlplane/store/...
readonly TIMEOUT=${GO_TEST_TIMEOUT:-25m}

tmp=$(mktemp -d /tmp/cvlan-test.XXXXXX)
cleanup() {
	scripts/pg.sh stop "$tmp/pg" || true
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'echo "test.sh: interrupted" >&2; exit 130' INT
trap 'echo "test.sh: terminated" >&2; exit 143' TERM

passed=()
failed=()

# step runs one named check and records the result; it never stops the script.
step() {
	local name=$1 start=$SECONDS
	shift
	echo
	echo "==> $name"
	if "$@"; then
		passed+=("$name")
		echo "--> $name: ok ($((SECONDS - start))s)"
	else
		failed+=("$name")
		echo "--> $name: FAILED ($((SECONDS - start))s)"
	fi
}

go_files() {
	find . -name '*.go' -not -path './.git/*' -not -path '*/testdata/*' -not -path './bin/*'
}

check_gofmt() {
	local out
	out=$(go_files | xargs -r gofmt -l)
	if [ -n "$out" ]; then
		echo "gofmt: these files need formatting (run gofmt -w):"
		echo "$out"
		return 1
	fi
}

# go_test_all runs every package except the store's, whose tests run verbosely below.
go_test_all() {
	local pkgs
	pkgs=$(go list ./... | grep -v '/controlplane/store\(/\|$\)' || true)
	[ -n "$pkgs" ] || return 0
	# shellcheck disable=SC2086 # one package per word
	go test -race -count=1 -timeout "$TIMEOUT" $pkgs
}

# go_test_store runs the store packages with -v so the log shows the conformance
# suite on each backend. Passing sub-subtests and the === lines are left out; every
# failure, log line and the ok/FAIL package lines stay.
go_test_store() {
	if [ -z "$(go list "$STORE_PKGS" 2>/dev/null)" ]; then
		echo "no store packages yet"
		return 0
	fi
	go test -race -count=1 -timeout "$TIMEOUT" -v "$STORE_PKGS" 2>&1 |
		awk '/^=== (RUN|PAUSE|CONT|NAME)/ { next }
		     /^        +--- PASS: / { next }
		     { print; fflush() }' | tee "$tmp/store.log"
	local rc=${PIPESTATUS[0]}
	[ "$rc" -eq 0 ] || return "$rc"

	if grep -rqs --include='*_test.go' 'func TestConformance(' controlplane/store; then
		local backend ok=0
		for backend in sqlite postgres; do
			if grep -Eq -- "--- PASS: TestConformance/$backend \(" "$tmp/store.log"; then
				echo "conformance suite passed on $backend"
			else
				echo "conformance suite did not pass on $backend (skipped or missing)"
				ok=1
			fi
		done
		return "$ok"
	fi
	echo "no TestConformance in controlplane/store yet"
}

check_static() {
	local b desc rc=0
	for b in "${BINARIES[@]}"; do
		if [ ! -x "bin/$b" ]; then
			echo "bin/$b: missing"
			rc=1
			continue
		fi
		desc=$(file -b "bin/$b")
		if [[ $desc == *"statically linked"* ]]; then
			echo "bin/$b: statically linked"
		else
			echo "bin/$b: NOT statically linked: $desc"
			rc=1
		fi
	done
	return "$rc"
}

check_help() {
	local b rc=0
	for b in "${BINARIES[@]}"; do
		if [ ! -x "bin/$b" ]; then
			echo "bin/$b --help: missing binary"
			rc=1
		elif "bin/$b" --help >"$tmp/help.out" 2>&1 </dev/null; then
			echo "bin/$b --help: exit 0 ($(head -n1 "$tmp/help.out"))"
		else
			echo "bin/$b --help: exit $?"
			cat "$tmp/help.out"
			rc=1
		fi
	done
	return "$rc"
}

# check_bpf_generated regenerates the eBPF objects and fails if that changes them.
check_bpf_generated() {
	make --no-print-directory bpf && git diff --exit-code -- '*_bpfel.go' '*_bpfel.o'
}

echo "test.sh: $(go version); CVLAN_REQUIRE_PRIVILEGED=${CVLAN_REQUIRE_PRIVILEGED:-}"
CVLAN_TEST_POSTGRES_DSN=$(scripts/pg.sh start "$tmp/pg")
export CVLAN_TEST_POSTGRES_DSN
echo "test.sh: CVLAN_TEST_POSTGRES_DSN=$CVLAN_TEST_POSTGRES_DSN"

step "go vet" go vet ./...
step "gofmt" check_gofmt
step "go test -race" go_test_all
step "go test -race -v store" go_test_store
step "make bpf unchanged" check_bpf_generated
step "make build" make --no-print-directory build
step "kernel matrix" make --no-print-directory test-kernel
step "static binaries" check_static
step "--help" check_help

join() {
	local IFS=,
	echo "$*" | sed 's/,/, /g'
}

# Stop PostgreSQL now so that the verdict is the last line; the trap finds nothing left.
cleanup
echo
if [ "${#failed[@]}" -eq 0 ]; then
	echo "test.sh: PASS: all ${#passed[@]} steps passed ($(join "${passed[@]}"))"
	exit 0
fi
echo "test.sh: FAIL: ${#failed[@]} of $((${#passed[@]} + ${#failed[@]})) steps failed ($(join "${failed[@]}"))"
exit 1
