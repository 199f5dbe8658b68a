#!/usr/bin/env bash
# lab.sh: a live cvlan control plane on embedded SQLite in a temporary directory.
# Starts cvlan-controller, creates a tenant, a network and an enrollment key with
# cvlanctl, prints them and the join command an agent will use, then runs until
# Ctrl-C (or exits at once with LAB_ONCE=1). Everything it started is stopped and
# its directory removed on every exit path.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

bin=${BIN:-bin}
for b in cvlan-controller cvlanctl; do
	[ -x "$bin/$b" ] || die "$bin/$b missing; run make build"
done

lab=$(mktemp -d /tmp/cvlan-lab.XXXXXX)
ctl_pid=
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [ -n "$ctl_pid" ] && kill -0 "$ctl_pid" 2>/dev/null; then
		kill -TERM "$ctl_pid" 2>/dev/null || true
		wait "$ctl_pid" 2>/dev/null || true
	fi
	rm -rf "$lab"
	log "lab stopped, $lab removed"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port=$(free_port)
server=https://127.0.0.1:$port
export CVLAN_CONFIG=$lab/cvlanctl.yaml

log "initializing a controller in $lab"
"$bin/cvlan-controller" init --data-dir "$lab/controller" --listen "127.0.0.1:$port" >"$lab/init.txt"
token=$(sed -n 's/^operator-token: //p' "$lab/init.txt")
fingerprint=$(sed -n 's/^tls-fingerprint: //p' "$lab/init.txt")
[ -n "$token" ] && [ -n "$fingerprint" ] || die "cvlan-controller init printed no token or fingerprint"

"$bin/cvlan-controller" serve --data-dir "$lab/controller" --listen "127.0.0.1:$port" 2>"$lab/controller.log" &
ctl_pid=$!
wait_for "controller on $server" 20 curl -fsk "$server/healthz" -o /dev/null ||
	{ cat "$lab/controller.log" >&2; die "controller did not come up"; }

ctl() { "$bin/cvlanctl" "$@"; }
ctl login --server "$server" --token "$token" --fingerprint "$fingerprint" >/dev/null
ctl tenant create acme --description "lab tenant" >/dev/null
ctl network create prod --tenant acme --ipv4 100.64.0.0/24 --ipv6 fd00:64::/64 >/dev/null
ctl key create --tenant acme --network prod --reusable --tags lab --expiry 1h --description "lab agents" >"$lab/key.txt"

echo
echo "== cvlan lab: controller $server (SQLite in $lab/controller) =="
echo
echo "-- tenants"; ctl tenant list
echo
echo "-- networks of acme"; ctl network list --tenant acme
echo
echo "-- enrollment key (its secret is shown once)"; cat "$lab/key.txt"
echo
if [ "${LAB_ONCE:-}" = 1 ]; then
	log "LAB_ONCE=1: stopping"
	exit 0
fi
log "running; press Ctrl-C to stop (log: $lab/controller.log)"
wait "$ctl_pid"
