#!/usr/bin/env bash
# bench/sweep_bloat.sh: does the ledger stay bounded through fill-and-expire
# cycles?  Its size (heap, TOAST and primary key) after each cycle, side by
# side for three ledgers in one server:
#   novacuum  autovacuum_enabled = off on the ledger: nothing vacuums it
#   autovac   idempotency.sweep_vacuum = off for the database: autovacuum only
#   sweeper   as installed: the sweeper vacuums the ledger after a pass that
#             leaves a tenth of it or more as dead rows
# Each cycle fills KEYS keys with a one-hour ttl in every ledger, moves the
# clock two hours on, and waits until the sweepers have removed them all; then
# PAUSE seconds pass (a quiet moment in which autovacuum may come).
#
# Usage: bash bench/sweep_bloat.sh
# Environment: CYCLES (12), KEYS (100000), PAUSE (5), NAPTIME (autovacuum_naptime,
# the server default 60s unless set).
set -euo pipefail

CYCLES=${CYCLES:-12}
KEYS=${KEYS:-100000}
PAUSE=${PAUSE:-5}
NAPTIME=${NAPTIME:-60s}

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLUSTER_PRELOAD=idempotency bench_server bench-bloat
cat >>"$CLUSTER_DATA/postgresql.conf" <<EOF
shared_buffers = '512MB'
max_wal_size = '8GB'
autovacuum = on
autovacuum_naptime = '$NAPTIME'
idempotency.sweep_interval = '1s'
EOF
cluster_start


LEDGERS=(novacuum autovac sweeper)
for db in "${LEDGERS[@]}"; do
	psql_q -d postgres -c "CREATE DATABASE $db"
	psql_q -d "$db" -c "CREATE EXTENSION idempotency"
done
psql_q -d novacuum -c "ALTER TABLE idem_ledger SET (autovacuum_enabled = off)"
psql_q -d postgres -c "ALTER DATABASE autovac SET idempotency.sweep_vacuum = off"

size_mb() {
	psql_v -d "$1" -c "SELECT round(pg_total_relation_size('idem_ledger') / 1048576.0, 1)"
}

printf '%-6s' cycle
printf ' %12s' "${LEDGERS[@]}"
printf '   (MB: pg_total_relation_size of the ledger after each cycle)\n'
for ((cycle = 1; cycle <= CYCLES; cycle++)); do
	for db in "${LEDGERS[@]}"; do
		psql_q -d "$db" -c "SELECT count(*) FROM generate_series(1, $KEYS) g
		                    WHERE idem_once('c$cycle-' || g, ttl => '1 hour')" >/dev/null
	done
	psql_q -d postgres -c "ALTER SYSTEM SET idempotency.clock_offset = '$((cycle * 2)) hours'" \
		-c "SELECT pg_reload_conf()" >/dev/null
	for db in "${LEDGERS[@]}"; do
		until [ "$(psql_v -d "$db" -c "SELECT count(*) FROM idem_ledger")" = 0 ]; do
			sleep 0.5
		done
	done
	sleep "$PAUSE"
	printf '%-6d' "$cycle"
	for db in "${LEDGERS[@]}"; do
		printf ' %12s' "$(size_mb "$db")"
	done
	printf '\n'
done
echo
for db in "${LEDGERS[@]}"; do
	printf '%-9s vacuums of the ledger: %s\n' "$db" \
		"$(psql_v -d "$db" -c "SELECT 'autovacuum ' || autovacuum_count || ', sweeper ' || vacuum_count
		                        FROM pg_stat_user_tables WHERE relname = 'idem_ledger'")"
done
echo "machine: $(nproc) cores, $(uname -sr); server: $("$PG_CONFIG" --version); autovacuum_naptime=$NAPTIME"
echo "cycles: $CYCLES x $KEYS keys filled, expired and swept, $PAUSE s pause after each"
