#!/usr/bin/env bash
# pg.sh runs a throwaway PostgreSQL cluster for tests and benchmarks.
#
#   scripts/pg.sh start DIR   initdb in DIR, start on a free 127.0.0.1 port, wait until it
#                             accepts connections, write the DSN to DIR/dsn and print it
#   scripts/pg.sh stop DIR    stop the cluster (fast shutdown) and remove DIR
#
# It uses Debian's server binaries (the newest /usr/lib/postgresql/*/bin, or $PG_BIN).
# The cluster trusts every local connection, listens on loopback only and runs with
# fsync off: it is for tests, never for data that matters. As root, the server runs as
# the `postgres` system user, since initdb and postgres refuse to run as root.
# Only the DSN goes to stdout, so `dsn=$(scripts/pg.sh start DIR)` works.
set -euo pipefail

readonly MARKER=.cvlan-throwaway-postgres
readonly START_TIMEOUT=${PG_START_TIMEOUT:-60} # seconds for the server to accept connections

log() { echo "pg.sh: $*" >&2; }
die() {
	log "$*"
	exit 1
}

usage() {
	echo "usage: $0 start|stop DIR" >&2
	exit 2
}

# pg_bin prints the newest installed server bin directory.
pg_bin() {
	if [ -n "${PG_BIN:-}" ]; then
		echo "$PG_BIN"
		return
	fi
	local newest
	newest=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
	[ -n "$newest" ] && [ -x "$newest/postgres" ] ||
		die "no PostgreSQL server under /usr/lib/postgresql/*/bin (run scripts/deps.sh)"
	echo "$newest"
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# as_pg runs a command as the user that owns the cluster.
as_pg() {
	if is_root; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# grant_search makes every ancestor of $1 searchable by the postgres user. It only
# touches directories under /tmp or $TMPDIR (mktemp -d makes them 0700), and only adds
# o+x: the postgres user can pass through, not list.
grant_search() {
	local d=$1 tmp=${TMPDIR:-/tmp}
	while d=$(dirname "$d") && [ "$d" != / ]; do
		if runuser -u postgres -- test -x "$d"; then
			continue
		fi
		case "$d/" in
		/tmp/* | "${tmp%/}"/*) chmod o+x "$d" ;;
		*) die "the postgres user cannot reach $d; pick a DIR under /tmp" ;;
		esac
	done
}

# port_in_use reports whether something listens on 127.0.0.1:$1.
port_in_use() {
	if command -v ss >/dev/null; then
		[ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
	else
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
	fi
}

# free_port prints a port on loopback that nothing listens on, starting at a random
# point so that parallel runs rarely try the same one.
free_port() {
	local i port
	for ((i = 0; i < 200; i++)); do
		port=$((20000 + (RANDOM * 32768 + RANDOM + i) % 30000))
		if ! port_in_use "$port"; then
			echo "$port"
			return
		fi
	done
	die "no free loopback port found"
}

postmaster_pid() {
	if [ -f "$1/data/postmaster.pid" ]; then
		head -n1 "$1/data/postmaster.pid"
	fi
}

start() {
	local dir=$1 bin port pid attempt deadline
	bin=$(pg_bin)
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	[ -z "$(ls -A "$dir")" ] || die "$dir is not empty"
	cd /
	touch "$dir/$MARKER"
	if is_root; then
		id postgres >/dev/null 2>&1 || die "no postgres system user (run scripts/deps.sh)"
		grant_search "$dir"
		chown postgres: "$dir"
	fi
	chmod 0700 "$dir"

	log "initdb $dir/data ($bin)"
	if ! as_pg "$bin/initdb" -D "$dir/data" --auth=trust -U postgres -E UTF8 --locale=C \
		--no-sync >"$dir/initdb.log" 2>&1; then
		cat "$dir/initdb.log" >&2
		die "initdb failed"
	fi

	# A port found free can be taken before postgres binds it; then try another.
	# pg_ctl -w polls postmaster.pid until the server it started says "ready" (not
	# some other server that took the port), and fails if that server exits.
	for attempt in 1 2 3 4 5; do
		port=$(free_port)
		: >"$dir/postgres.log"
		if is_root; then chown postgres: "$dir/postgres.log"; fi
		if ! as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t "$START_TIMEOUT" -s start \
			-o "-c listen_addresses=127.0.0.1 -k '$dir' -p $port -c fsync=off \
			-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"; then
			if grep -q 'could not bind\|could not create any TCP/IP sockets' "$dir/postgres.log"; then
				log "port $port taken (attempt $attempt), trying another"
				continue
			fi
			tail -n20 "$dir/postgres.log" >&2
			stop "$dir" || true
			die "postgres did not start within ${START_TIMEOUT}s"
		fi

		deadline=$((SECONDS + START_TIMEOUT))
		until "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres; do
			if ((SECONDS >= deadline)); then
				stop "$dir" || true
				die "postgres did not accept TCP connections on 127.0.0.1:$port within ${START_TIMEOUT}s"
			fi
			sleep 0.1
		done
		pid=$(postmaster_pid "$dir")
		echo "postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable" >"$dir/dsn"
		log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') pid $pid on 127.0.0.1:$port"
		cat "$dir/dsn"
		return
	done
	die "could not bind a free port after 5 attempts"
}

stop() {
	local dir=$1 bin pid
	[ -d "$dir" ] || return 0
	dir=$(cd "$dir" && pwd)
	cd /
	[ -e "$dir/$MARKER" ] || die "$dir was not made by pg.sh start; not touching it"
	pid=$(postmaster_pid "$dir" || true)
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		bin=$(pg_bin)
		if ! as_pg "$bin/pg_ctl" -D "$dir/data" -s -m fast -w -t 30 stop; then
			log "pg_ctl stop failed; killing postmaster $pid"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	rm -rf -- "$dir"
	log "stopped and removed $dir"
}

[ $# -eq 2 ] || usage
case $1 in
start) start "$2" ;;
stop) stop "$2" ;;
*) usage ;;
esac
