#!/usr/bin/env bash
# lab.sh: a live cvlan network in network namespaces on embedded SQLite, with policy.
#
# Topology: a hub namespace with a bridge (the "underlay" LAN 10.88.0.0/24), the
# controller in its own namespace at .1, and agents in theirs:
#   tenant acme,   network prod 100.64.0.0/24 + fd00:64::/64: web (.11), db (.12),
#                  admin (.13), each enrolled with a key carrying its tag;
#   tenant globex, network prod with the SAME prefixes: shop (.21), tag web, and
#                  cart (.22), whose direct UDP to and from shop is dropped (nftables
#                  on the LAN's bridge), so the two reach each other through
#   the relay r1 (.5), registered with the controller and fed its sessions by it.
# acme gets the policy in scripts/lab-policy.yaml (admin may ssh and http to web,
# web may reach db's postgres, admin may ping anyone); globex has none (allow all
# within the tenant). The lab prints each agent's WireGuard implementation, then a
# matrix of TCP connects and pings: what the policy says (and which rule decides,
# from cvlanctl policy test) next to what really happened, plus a check that globex
# cannot reach acme. It runs until Ctrl-C; with LAB_ONCE=1 it prints the report,
# cleans up and exits 0 only if every connection did what the policy says.
#
# Everything it makes is named cvlab-*: namespaces, WireGuard interfaces (and their
# UAPI sockets in /var/run/wireguard), eBPF pins under /sys/fs/bpf/cvlan/cvlab-*, the
# temporary directory. All of it is removed on every exit path, and leftovers of a
# lab that was killed are removed at start.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

[ "$(id -u)" = 0 ] || die "the lab makes network namespaces: run it as root"
bin=${BIN:-bin}
command -v nc >/dev/null || die "nc (netcat-openbsd) missing; run make deps"
for b in cvlan-controller cvlan-agent cvlan-relay cvlanctl; do
	[ -x "$bin/$b" ] || die "$bin/$b missing; run make build"
done
bin=$(cd "$bin" && pwd)

readonly P=cvlab
readonly ACME=(web db admin)
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
	rm -rf /sys/fs/bpf/cvlan/"$P"-* 2>/dev/null || true
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
ctl tenant create acme --description "lab tenant with a policy" >/dev/null
ctl tenant create globex --description "lab tenant without one" >/dev/null
for t in acme globex; do
	ctl network create prod --tenant "$t" --ipv4 100.64.0.0/24 --ipv6 fd00:64::/64 >/dev/null
done

log "starting the relay r1 at $LAN.5 (UDP sessions on the Go path, framed relay on :8444)"
netns relay "$LAN.5"
relaykey=$(inns relay "$bin/cvlan-relay" key --data-dir "$lab/relay" 2>/dev/null)
ctl relay create r1 --region lab --public-addr "$LAN.5" --udp-port-min 40000 --udp-port-max 40999 \
	--stun-port 3478 --tls-url "https://$LAN.5:8444" --ws-url "wss://$LAN.5:8444" --relay-key "$relaykey" >/dev/null
controllerkey=$(sed -n 's/^noise-public-key: //p' "$lab/init.txt")
inns relay "$bin/cvlan-relay" serve --data-dir "$lab/relay" --relay-address "$LAN.5" --xdp off \
	--framed-listen "$LAN.5:8444" --stun-listen "$LAN.5:3478" --metrics-listen 127.0.0.1:9102 \
	--controller "https://$LISTEN" --controller-key "$controllerkey" 2>"$lab/relay.log" &
pids+=($!)

# join TENANT NAME TAG ADDR [FLAGS...]: enroll an agent named NAME with a key tagged
# TAG, using the join command cvlanctl prints, in a namespace at ADDR.
join() {
	local t=$1 n=$2 tag=$3 addr=$4 cmd
	shift 4
	ctl key create --tenant "$t" --network prod --tags "$tag" --expiry 1h --description "lab $n" >"$lab/key-$n.txt"
	cmd=$(grep -o 'cvlan-agent up .*' "$lab/key-$n.txt" | head -n1)
	[ -n "$cmd" ] || die "cvlanctl key create printed no join command"
	# shellcheck disable=SC2206 # the join command is words by design
	cmd=($cmd)
	netns "$n" "$addr"
	inns "$n" "$bin/${cmd[0]}" "${cmd[@]:1}" --name "$n" --state-dir "$lab/agent-$n" \
		--interface "$P-$n" --metrics-listen 127.0.0.1:9101 --max-backoff 2s "$@" 2>"$lab/agent-$n.log" &
	pids+=($!)
	for port in 22 80 5432; do
		inns "$n" nc -lk "$port" </dev/null >/dev/null 2>&1 &
		pids+=($!)
	done
}
join acme web web "$LAN.11"
join acme db db "$LAN.12"
join acme admin admin "$LAN.13"
join globex shop web "$LAN.21" --path-timeout 6s
join globex cart web "$LAN.22" --path-timeout 6s
# No direct UDP between shop and cart: the LAN's bridge drops it, as a firewall
# between two sites would, so only the relay gets them together.
echo "table bridge cvlab { chain forward { type filter hook forward priority 0;
	ip saddr $LAN.21 ip daddr $LAN.22 meta l4proto udp counter drop
	ip saddr $LAN.22 ip daddr $LAN.21 meta l4proto udp counter drop; }; }" | inns hub nft -f -

# addr TENANT NODE FIELD: a node's overlay address from cvlanctl.
addr() { ctl node get "$2" --tenant "$1" -o json | sed -n "s/.*\"$3\": *\"\([^\"]*\)\".*/\1/p" | head -n1; }
enrolled() {
	local n
	for n in "${ACME[@]}"; do [ -n "$(addr acme "$n" ipv4)" ] || return 1; done
	[ -n "$(addr globex shop ipv4)" ] && [ -n "$(addr globex cart ipv4)" ]
}
wait_for "all agents to enroll" 30 enrolled || {
	tail -n 20 "$lab"/agent-*.log >&2
	die "agents did not enroll"
}
ctl policy set --tenant acme -f scripts/lab-policy.yaml >/dev/null

declare -A ip
for n in "${ACME[@]}"; do ip[$n]=$(addr acme "$n" ipv4); done
ip[shop]=$(addr globex shop ipv4)
ip[cart]=$(addr globex cart ipv4)

# reach FROM TO PORT|icmp: does the real connection work? A few tries, because a
# first WireGuard handshake or a policy just set may take a moment.
reach() {
	local from=$1 to=$2 port=$3 try
	for try in 1 2 3 4; do
		if [ "$port" = icmp ]; then
			inns "$from" ping -n -c1 -W1 "${ip[$to]}" >/dev/null 2>&1 && return 0
		else
			inns "$from" nc -z -w1 "${ip[$to]}" "$port" >/dev/null 2>&1 && return 0
		fi
	done
	return 1
}

# expect FROM TO PORT|icmp: "accept RULE" or "deny RULE" from cvlanctl policy test.
expect() {
	local pp=$3 out
	[ "$3" = icmp ] || pp=$3/tcp
	out=$(ctl policy test --tenant acme "$1" "$2" "$pp" -o json 2>/dev/null || true)
	printf '%s %s\n' "$(sed -n 's/.*"verdict": *"\([a-z]*\)".*/\1/p' <<<"$out")" \
		"$(sed -n 's/.*"rule": *"\([^"]*\)".*/\1/p' <<<"$out")"
}

echo
echo "== cvlan lab: controller https://$LISTEN; tenants acme (policy) and globex =="
echo
ctl node list --tenant acme
echo
ctl node list --tenant globex
echo
echo "-- agents (from each agent's /metrics)"
for n in "${ACME[@]}" shop cart; do
	m=$(inns "$n" curl -fsS http://127.0.0.1:9101/metrics 2>/dev/null || true)
	printf '%-6s wireguard=%s peers=%s control_connected=%s\n' "$n" \
		"$(sed -n 's/^cvlan_agent_info{.*wireguard="\([a-z]*\)".*/\1/p' <<<"$m")" \
		"$(sed -n 's/^cvlan_agent_peers //p' <<<"$m")" \
		"$(sed -n 's/^cvlan_agent_control_connected //p' <<<"$m")"
done
echo
echo "-- acme: policy (scripts/lab-policy.yaml) against real connections"
printf '%-7s %-7s %-6s %-8s %-8s %-14s %s\n' FROM TO PORT POLICY GOT RULE RESULT
verdict=0
for from in "${ACME[@]}"; do
	for to in "${ACME[@]}"; do
		[ "$from" != "$to" ] || continue
		for port in 22 80 5432 icmp; do
			read -r want rule <<<"$(expect "$from" "$to" "$port")"
			got=deny
			reach "$from" "$to" "$port" && got=accept
			result=ok
			if [ "$got" != "$want" ]; then
				result=MISMATCH
				verdict=1
			fi
			printf '%-7s %-7s %-6s %-8s %-8s %-14s %s\n' "$from" "$to" "$port" "${want:-?}" "$got" "${rule:-(default deny)}" "$result"
		done
	done
done
echo
echo "-- tenant isolation: globex's shop (also in 100.64.0.0/24) against acme"
for to in "${ACME[@]}"; do
	if [ "${ip[$to]}" = "${ip[shop]}" ] || [ "${ip[$to]}" = "${ip[cart]}" ]; then
		echo "shop -> acme $to (${ip[$to]}): also a globex address, so not a test of isolation: skipped"
	elif reach shop "$to" icmp; then
		echo "shop -> acme $to (${ip[$to]}): REACHABLE: FAIL"
		verdict=1
	else
		echo "shop -> acme $to (${ip[$to]}): not reachable (another tenant): ok"
	fi
done
echo
echo "-- relay: globex's shop and cart, whose direct UDP is dropped, through r1"
relayed() { inns shop ping -n -c1 -W1 "${ip[cart]}" >/dev/null 2>&1; }
if wait_for "shop and cart to reach each other through the relay" 90 relayed; then
	m=$(inns shop curl -fsS http://127.0.0.1:9101/metrics 2>/dev/null || true)
	r=$(inns relay curl -fsS http://127.0.0.1:9102/metrics 2>/dev/null || true)
	echo "shop -> cart (${ip[cart]}): reachable: ok"
	echo "  shop's relayed peers: $(sed -n 's/^cvlan_agent_relay_peers{mode="\([a-z]*\)"} \([1-9]\).*/\1=\2/p' <<<"$m" | tr '\n' ' ')"
	echo "  relay r1: sessions active $(sed -n 's/^cvlan_relay_sessions{state="active"} //p' <<<"$r"), packets relayed (go) $(sed -n 's/^cvlan_relay_packets_total{path="go"} //p' <<<"$r")"
else
	echo "shop -> cart (${ip[cart]}): NOT reachable through the relay: FAIL (logs: $lab/relay.log, $lab/agent-shop.log)"
	verdict=1
fi
echo
if [ "$verdict" = 0 ]; then
	echo "lab: PASS: every connection did what the policy says, the tenants are isolated, and the relay carries blocked peers"
else
	echo "lab: FAIL: see MISMATCH above; agent logs: $lab/agent-*.log"
	tail -n 20 "$lab"/agent-*.log
fi
if [ "${LAB_ONCE:-}" = 1 ]; then
	exit "$verdict"
fi
echo
log "running; try: ip netns exec $P-admin nc -zv ${ip[web]} 22   (Ctrl-C stops and cleans up)"
log "logs: $lab/*.log; cvlanctl: CVLAN_CONFIG=$CVLAN_CONFIG ip netns exec $P-ctl $bin/cvlanctl policy test --tenant acme admin web 22/tcp"
wait "${pids[0]}"
