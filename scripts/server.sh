#!/usr/bin/env bash
# scripts/server.sh: a throwaway server of one PostgreSQL major, with idempotency installed.
#
# Usage:
#   bash scripts/server.sh VERSION PORT   build and install the extension, start a server
#   bash scripts/server.sh stop PORT      stop that server and remove its files
#
# The server listens on 127.0.0.1:PORT, trusts every connection from there, and
# its superuser is postgres:
#
#   psql -h 127.0.0.1 -p PORT -U postgres -c 'CREATE EXTENSION idempotency'
#
# It keeps running after this script returns, until `stop`.  Its files (data,
# log, the built tree) are in /tmp/idem-server.PORT.  PostgreSQL 15 is this
# machine's own (scripts/deps.sh installs it); another major runs inside that
# major's root (scripts/postgres.sh), with its files in the root's /tmp, and
# the root's private mount namespace lives as long as the server does.  The
# server runs as the OS user postgres when started by root, as the invoker
# otherwise (a root's server needs root, or sudo).
#
# Environment:
#   PG_CONFIG         pg_config to use when it is of VERSION (default: the major's own)
#   IDEM_PRELOAD      shared_preload_libraries (default: idempotency, so the sweeper runs)
#   IDEM_SKIP_DEPS=1  do not run scripts/deps.sh for 15
#   IDEM_ROOTS        where the roots are (see scripts/postgres.sh)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS PGPASSWORD PGDATA

log() { printf 'server: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
usage() {
	echo "usage: bash scripts/server.sh VERSION PORT | stop PORT" >&2
	exit 2
}

[ $# -eq 2 ] || usage
[[ $2 =~ ^[0-9]+$ ]] && [ "$2" -ge 1024 ] && [ "$2" -le 65535 ] || die "bad port '$2'"
PORT=$2
DIR=/tmp/idem-server.$PORT

if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo -n); fi

# The major of a pg_config, e.g. 17.
major_of() { "$1" --version 2>/dev/null | sed -nE 's/^PostgreSQL ([0-9]+).*/\1/p'; }

# The pg_config of VERSION on this system, or nothing when it has none.
local_pg_config() {
	if [ -n "${PG_CONFIG:-}" ] && [ "$(major_of "$PG_CONFIG")" = "$1" ]; then
		echo "$PG_CONFIG"
	elif [ -x "/usr/lib/postgresql/$1/bin/pg_config" ]; then
		echo "/usr/lib/postgresql/$1/bin/pg_config"
	fi
}

# Undo a start that failed half-way, and give up.
fail() {
	log "$*; removing $DIR"
	stop_server >/dev/null 2>&1 || rm -rf "$DIR"
	exit 1
}

stop_server() {
	local v bindir owner
	if [ -f "$DIR/root" ]; then
		v=$(cat "$DIR/root")
		"${SUDO[@]}" bash "$ROOT/scripts/postgres.sh" "$v" run bash /src/scripts/server.sh stop "$PORT" ||
			log "stopping the server in the $v root failed"
		rm -rf "$DIR"
		return 0
	fi
	[ -d "$DIR/data" ] || die "no server of these scripts on port $PORT ($DIR)"
	bindir=$(cat "$DIR/bindir")
	owner=$(stat -c %U "$DIR/data")
	if [ "$(id -un)" = "$owner" ]; then
		"$bindir/pg_ctl" -D "$DIR/data" -m fast -w -t 60 stop >/dev/null || true
	else
		runuser -u "$owner" -- "$bindir/pg_ctl" -D "$DIR/data" -m fast -w -t 60 stop >/dev/null || true
	fi
	rm -rf "$DIR"
	log "stopped the server on port $PORT and removed $DIR"
}

start_server() {
	local version=$1 pg_config
	[ ! -e "$DIR" ] || die "$DIR exists: a server on port $PORT is running (bash scripts/server.sh stop $PORT)"
	if command -v ss >/dev/null 2>&1 && [ -n "$(ss -Hltn "sport = :$PORT")" ]; then
		die "something listens on port $PORT already"
	fi
	if [ "$version" = 15 ] && [ -z "$(local_pg_config 15)" ] && [ "${IDEM_SKIP_DEPS:-0}" != 1 ]; then
		bash "$ROOT/scripts/deps.sh" >&2
	fi
	pg_config=$(local_pg_config "$version")
	if [ -z "$pg_config" ]; then
		# Not on this system: in its root, which is made first when missing.
		mkdir -p "$DIR"
		echo "$version" >"$DIR/root"
		if ! "${SUDO[@]}" bash "$ROOT/scripts/postgres.sh" "$version" run env \
				"IDEM_PRELOAD=${IDEM_PRELOAD-idempotency}" \
				"IDEM_SHOWN_ROOT=$(bash "$ROOT/scripts/postgres.sh" "$version" path)" \
				bash /src/scripts/server.sh "$version" "$PORT"; then
			rm -rf "$DIR"
			die "could not start a PostgreSQL $version server in its root"
		fi
		return 0
	fi

	export PG_CONFIG=$pg_config
	# shellcheck source=scripts/cluster.sh
	. "$ROOT/scripts/cluster.sh"
	mkdir -p "$DIR/data" "$DIR/sock"
	chmod 755 "$DIR"
	"$PG_CONFIG" --bindir >"$DIR/bindir"
	: >"$DIR/postgres.log"
	[ "$(id -u)" -ne 0 ] || chown "$(cluster_os_user):" "$DIR/data" "$DIR/sock" "$DIR/postgres.log"
	cluster_build_extension "$ROOT" "$DIR/tree" 2>&1 | sed 's/^/  /' >&2 ||
		fail "building or installing the extension failed"
	cluster_as_user initdb -D "$DIR/data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
		>"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; fail "initdb failed"; }
	cat >>"$DIR/data/postgresql.conf" <<-EOF

	# throwaway server (scripts/server.sh)
	listen_addresses = '127.0.0.1'
	port = $PORT
	unix_socket_directories = '$DIR/sock'
	shared_preload_libraries = '${IDEM_PRELOAD-idempotency}'
	log_line_prefix = '%m [%p] %q%u@%d '
	EOF
	printf 'local all all trust\nhost all all 127.0.0.1/32 trust\n' >"$DIR/data/pg_hba.conf"
	if ! cluster_as_user pg_ctl -D "$DIR/data" -l "$DIR/postgres.log" -w -t 60 start >/dev/null ||
		! cluster_as_user pg_isready -q -h 127.0.0.1 -p "$PORT" -t 30; then
		tail -n 30 "$DIR/postgres.log" >&2
		fail "the server did not start"
	fi
	log "$("$PG_CONFIG" --version) on 127.0.0.1:$PORT, superuser postgres, trust"
	log "files: ${IDEM_SHOWN_ROOT:-}$DIR (log: postgres.log)"
	log "psql -h 127.0.0.1 -p $PORT -U postgres    stop: bash scripts/server.sh stop $PORT"
}

case "$1" in
	stop) stop_server ;;
	[0-9]*) start_server "$1" ;;
	*) usage ;;
esac
