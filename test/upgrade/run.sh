#!/usr/bin/env bash
# test/upgrade/run.sh: a filled ledger moved from PostgreSQL 15 to a newer major keeps every key.
#
# Usage: bash test/upgrade/run.sh 15 NEW     (as root, or with sudo; e.g. 15 17)
#
# Starts a server of each major (scripts/server.sh) and fills two databases on
# 15 with fill.sql: keys in every state; in upg_unlogged the ledger is
# UNLOGGED.  Checks them there with check.sql (pgTAP, through upg_logged.sql
# and upg_unlogged.sql), copies them to NEW with NEW's pg_dump -Fc and
# pg_restore, run inside NEW's root across 127.0.0.1 (15's binaries do not run
# there, so pg_upgrade cannot), and checks the copies.  A restored ledger is
# logged, whatever it was on 15: CREATE EXTENSION makes it, then its rows are
# loaded.  The last output is pg_prove's on NEW; the exit status is non-zero
# when anything failed.
#
# Environment: PG_CONFIG (15's; as for scripts/server.sh), IDEM_ROOTS,
# IDEM_UPGRADE_PORT (56200: the first port to try for the two servers).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ $# -ne 2 ] || [ "$1" != 15 ]; then
	echo "usage: bash test/upgrade/run.sh 15 NEW" >&2
	exit 2
fi
NEW=$2
BIN=$("${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}" --bindir)
NEWBIN=/usr/lib/postgresql/$NEW/bin
SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo -n)
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS PGPASSWORD

log() { printf 'upgrade: %s\n' "$*"; }

# A port that nothing listens on and no server of scripts/server.sh holds.
free_port() {
	local p
	for ((p = $1; p < $1 + 200; p++)); do
		if [ ! -e "/tmp/idem-server.$p" ] && [ -z "$(ss -Hltn "sport = :$p")" ]; then
			echo "$p"
			return
		fi
	done
	return 1
}

# Run a command of the new major inside its root.
in_new() { "${SUDO[@]}" bash "$ROOT/scripts/postgres.sh" "$NEW" run "$@"; }

P_OLD=$(free_port "${IDEM_UPGRADE_PORT:-56200}")
P_NEW=$(free_port $((P_OLD + 1)))
# shellcheck disable=SC2064 # the ports are known now
trap "bash '$ROOT/scripts/server.sh' stop $P_OLD; bash '$ROOT/scripts/server.sh' stop $P_NEW" EXIT
bash "$ROOT/scripts/server.sh" 15 "$P_OLD" 2>&1
bash "$ROOT/scripts/server.sh" "$NEW" "$P_NEW" 2>&1

old_psql() { "$BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$P_OLD" -U postgres "$@"; }

log "filling upg_logged and upg_unlogged on 15"
for db in upg_logged upg_unlogged; do
	unlogged=off
	[ "$db" = upg_logged ] || unlogged=on
	old_psql -d postgres -c "CREATE DATABASE $db"
	old_psql -d "$db" -v unlogged=$unlogged -f "$ROOT/test/upgrade/fill.sql" >/dev/null
done
VARS=(-S "digest_logged=$(old_psql -d upg_logged -c 'SELECT ledger_digest()')"
	-S "digest_unlogged=$(old_psql -d upg_unlogged -c 'SELECT ledger_digest()')")

log "checking them on 15"
pg_prove -b "$BIN/psql" -h 127.0.0.1 -p "$P_OLD" -U postgres -d postgres "${VARS[@]}" \
	-S unlogged_persistence=u "$ROOT"/test/upgrade/upg_*.sql

for db in upg_logged upg_unlogged; do
	log "$db: pg_dump -Fc ($NEW) | pg_restore --create ($NEW)"
	in_new bash -c "set -o pipefail; $NEWBIN/pg_dump -Fc -h 127.0.0.1 -p $P_OLD -U postgres -d $db |
		$NEWBIN/pg_restore --create --exit-on-error -h 127.0.0.1 -p $P_NEW -U postgres -d postgres"
done

log "checking the copies on $NEW"
in_new pg_prove -b "$NEWBIN/psql" -h 127.0.0.1 -p "$P_NEW" -U postgres -d postgres "${VARS[@]}" \
	-S unlogged_persistence=p /src/test/upgrade/upg_logged.sql /src/test/upgrade/upg_unlogged.sql
