# lib.sh: helpers shared by the scripts in this directory. Source it; don't run it.

log() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
die() {
	log "$*"
	exit 1
}

# port_in_use reports whether something listens on 127.0.0.1:$1.
port_in_use() {
	[ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
}

# free_port prints a loopback TCP port that nothing listens on.
free_port() {
	local i port
	for i in $(seq 1 200); do
		port=$((20000 + (RANDOM * 32768 + RANDOM + i) % 30000))
		if ! port_in_use "$port"; then
			echo "$port"
			return 0
		fi
	done
	die "no free loopback port found"
}

# wait_for WHAT SECONDS CMD...: run CMD until it succeeds, failing after SECONDS.
wait_for() {
	local what=$1 secs=$2 deadline
	shift 2
	deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			log "timed out after ${secs}s waiting for $what"
			return 1
		fi
		sleep 0.1
	done
}
