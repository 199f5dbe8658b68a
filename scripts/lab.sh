#!/usr/bin/env bash
# lab.sh: a live cvlan network in network namespaces on embedded SQLite.
#
# Topology: a hub namespace with a bridge (the "underlay" LAN 10.88.0.0/24), the
# controller in its own namespace at .1, and three agents (a, b, c) in theirs at .11,
# .12, .13. cvlanctl creates tenant acme, network prod (100.64.0.0/24, fd00:64::/64)
# and one reusable enrollment key; each agent joins with that key. The lab prints the
# matrix of overlay pings (who reaches whom), then runs until Ctrl-C. With LAB_ONCE=1
# it prints the matrix, cleans up and exits 0 only if every pair reached every other.
#
# Everything it makes is named cvlab-*: namespaces, WireGuard interfaces (and their
# UAPI sockets in /var/run/wireguard), the temporary directory. All of it is removed
# on every exit path, and leftovers of a lab that was killed are removed at start.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

[ "$(id -u)" = 0 ] || die "the lab makes network namespaces: run it as root"
bin=${BIN:-bin}
for b in cvlan-controller cvlan-agent cvlanctl; do
	[ -x "$bin/$b" ] || die "$bin/$b missing; run make build"
done
bin=$(cd "$bin" && pwd)

readonly P=cvlab
readonly AGENTS=(a b c)
readonly LAN=10.88.0
readonly LISTEN=$LAN.1:8443
lab=
pids=()

# teardown removes everything named $P-* (or $P*.sock): this lab's, or a killed one's.
teardown() {
	local ns pid
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$P-" || true); do
		ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
		ip netns delete "$ns" 2>/dev/null || true
	done
	rm -f /var/run/wireguard/"$P"*.sock
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	teardown
	[ -z "$lab" ] || rm -rf "$lab"
	log "lab stopped and cleaned up"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

teardown # leftovers of a lab that was killed
lab=$(mktemp -d /tmp/$P.XXXXXX)

# inns NS CMD...: run CMD in namespace $P-NS.
inns() {
	local ns=$1
	shift
	ip netns exec "$P-$ns" "$@"
}

# netns NAME ADDR: a namespace on the LAN bridge with ADDR/24 on its eth0.
netns() {
	local name=$1 addr=$2
	ip netns add "$P-$name"
	inns "$name" ip link set lo up
	inns hub ip link add "v-$name" type veth peer name eth0 netns "$P-$name"
	inns hub ip link set "v-$name" master br0 up
	inns "$name" ip addr add "$addr/24" dev eth0
	inns "$name" ip link set eth0 up
}

log "building the underlay: bridge $LAN.0/24 in namespace $P-hub"
ip netns add "$P-hub"
inns hub ip link set lo up
inns hub ip link add br0 type bridge
inns hub ip link set br0 up
netns ctl "$LAN.1"

log "starting the controller at https://$LISTEN (SQLite in $lab/controller)"
inns ctl "$bin/cvlan-controller" init --data-dir "$lab/controller" --listen "$LISTEN" >"$lab/init.txt"
token=$(sed -n 's/^operator-token: //p' "$lab/init.txt")
fingerprint=$(sed -n 's/^tls-fingerprint: //p' "$lab/init.txt")
[ -n "$token" ] && [ -n "$fingerprint" ] || die "cvlan-controller init printed no token or fingerprint"
inns ctl "$bin/cvlan-controller" serve --data-dir "$lab/controller" --listen "$LISTEN" 2>"$lab/controller.log" &
pids+=($!)

export CVLAN_CONFIG=$lab/cvlanctl.yaml
ctl() { inns ctl "$bin/cvlanctl" "$@"; }
wait_for "the controller" 20 ctl login --server "https://$LISTEN" --token "$token" --fingerprint "$fingerprint" ||
	{ cat "$lab/controller.log" >&2; die "controller did not come up"; }
ctl tenant create acme --description "lab tenant" >/dev/null
ctl network create prod --tenant acme --ipv4 100.64.0.0/24 --ipv6 fd00:64::/64 >/dev/null
ctl key create --tenant acme --network prod --reusable --tags lab --expiry 1h --description "lab agents" >"$lab/key.txt"
join=$(grep -o 'cvlan-agent up .*' "$lab/key.txt" | head -n1)
[ -n "$join" ] || die "cvlanctl key create printed no join command"
# shellcheck disable=SC2206 # the join command is words by design
join=($join)

i=11
for n in "${AGENTS[@]}"; do
	netns "$n" "$LAN.$i"
	log "agent $n at $LAN.$i: ${join[*]:0:2} ... --name $n"
	inns "$n" "$bin/${join[0]}" "${join[@]:1}" --name "$n" --state-dir "$lab/agent-$n" \
		--interface "$P-$n" --metrics-listen 127.0.0.1:9101 --max-backoff 2s 2>"$lab/agent-$n.log" &
	pids+=($!)
	i=$((i + 1))
done

# addr NODE FIELD: a node's overlay address from cvlanctl.
addr() { ctl node get "$1" --tenant acme -o json | sed -n "s/.*\"$2\": *\"\([^\"]*\)\".*/\1/p" | head -n1; }
enrolled() {
	local n
	for n in "${AGENTS[@]}"; do [ -n "$(addr "$n" ipv4)" ] || return 1; done
}
wait_for "all agents to enroll" 30 enrolled || {
	tail -n 20 "$lab"/agent-*.log >&2
	die "agents did not enroll"
}

# matrix prints who reaches whom over the overlay (IPv4 and IPv6) and fails if
# anyone misses anyone. Peers may need a moment for their first handshake, so each
# pair gets a few tries.
matrix() {
	local from to fam a ok=0 cell tries
	printf '%-8s' "from\\to"
	for to in "${AGENTS[@]}"; do printf '%-18s' "$to"; done
	echo
	for from in "${AGENTS[@]}"; do
		printf '%-8s' "$from"
		for to in "${AGENTS[@]}"; do
			if [ "$from" = "$to" ]; then
				printf '%-18s' "-"
				continue
			fi
			cell=
			for fam in ipv4 ipv6; do
				a=${addrs[$to-$fam]}
				for tries in 1 2 3 4 5; do
					if inns "$from" ping -n -c1 -W1 "$a" >/dev/null 2>&1; then
						cell+="$fam:ok "
						continue 2
					fi
				done
				cell+="$fam:FAIL "
				ok=1
			done
			printf '%-18s' "$cell"
		done
		echo
	done
	return "$ok"
}

declare -A addrs
for n in "${AGENTS[@]}"; do
	addrs[$n-ipv4]=$(addr "$n" ipv4)
	addrs[$n-ipv6]=$(addr "$n" ipv6)
done

echo
echo "== cvlan lab: controller https://$LISTEN, tenant acme, network prod =="
echo
ctl node list --tenant acme
echo
echo "-- agents (from each agent's /metrics)"
for n in "${AGENTS[@]}"; do
	m=$(inns "$n" curl -fsS http://127.0.0.1:9101/metrics 2>/dev/null || true)
	printf '%s: wireguard=%s peers=%s control_connected=%s\n' "$n" \
		"$(sed -n 's/^cvlan_agent_info{.*wireguard="\([a-z]*\)".*/\1/p' <<<"$m")" \
		"$(sed -n 's/^cvlan_agent_peers //p' <<<"$m")" \
		"$(sed -n 's/^cvlan_agent_control_connected //p' <<<"$m")"
done
echo
echo "-- overlay pings (from row to column)"
verdict=0
matrix || verdict=1
echo
if [ "$verdict" = 0 ]; then
	echo "lab: PASS: every agent reaches every other over the overlay"
else
	echo "lab: FAIL: some overlay pings failed; agent logs: $lab/agent-*.log"
	tail -n 20 "$lab"/agent-*.log
fi
if [ "${LAB_ONCE:-}" = 1 ]; then
	exit "$verdict"
fi
echo
log "running; try: ip netns exec $P-a ping ${addrs[b-ipv4]}   (Ctrl-C stops and cleans up)"
log "logs: $lab/*.log; cvlanctl: CVLAN_CONFIG=$CVLAN_CONFIG ip netns exec $P-ctl $bin/cvlanctl node list --tenant acme"
wait "${pids[0]}"
