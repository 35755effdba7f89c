#!/usr/bin/env bash
# bench/citus.sh: the payment handler on one server and on a Citus cluster, side by side.
#
# Usage: bash bench/citus.sh      (after `make install` into PG_CONFIG's server, with Citus
#                                  built there by scripts/citus.sh)
#
# Four servers on this machine, each with the settings of bench/lib.sh: a
# single server (no Citus), and a Citus coordinator with two workers, the
# ledger and the payments distributed by key and co-located.  The handler is
# bench/layers.sql's pay_ext (begin, insert the payment, finish), in three
# places:
#   single   pay_ext on the single server
#   coord    the same function on the coordinator, not distributed: its
#            statements go to the key's shard over Citus's connections
#   dfunc    the same function made a distributed function co-located with
#            the ledger: Citus sends the whole call to the key's worker
# Workloads: first (a fresh key), replay (one of KEYS keys completed before),
# and bare: layers.sql's pay_bare (the payment alone, no idempotency) in the
# same three places, which shows what Citus's hops cost by themselves.
# pgbench -M simple (Citus delegates a call whose arguments are constants),
# -c CLIENTS, every (workload, place) pair in turn for DURATION seconds,
# ROUNDS rounds interleaved; the table shows median tps, and the median of
# each round's ratio to single.
# Two cores run every node here: the figures show the cost per call of the
# extra hops, not scaling.
#
# Environment: ROUNDS (3), DURATION (10), CLIENTS (2), KEYS (10000),
# PORT_BASE (57300: four ports from it), PG_CONFIG.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-2}
KEYS=${KEYS:-10000}
PORT_BASE=${PORT_BASE:-57300}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
BIN=$("$PG_CONFIG" --bindir)
[ -f "$("$PG_CONFIG" --pkglibdir)/citus.so" ] || { echo "citus.sh: no Citus for $PG_CONFIG (scripts/citus.sh)" >&2; exit 1; }
[ -f "$("$PG_CONFIG" --sharedir)/extension/idempotency.control" ] || { echo "citus.sh: make install first" >&2; exit 1; }

WORK=$(mktemp -d /tmp/idem-citus-bench.XXXXXX)
chmod 755 "$WORK"
AS=()
[ "$(id -u)" -ne 0 ] || { AS=(runuser -u postgres --); chown postgres "$WORK"; }
run() { (cd "$WORK" && "${AS[@]}" "$@"); }
NODES=(single coord w1 w2)
port() { case $1 in single) echo "$PORT_BASE" ;; coord) echo $((PORT_BASE + 1)) ;; w1) echo $((PORT_BASE + 2)) ;; w2) echo $((PORT_BASE + 3)) ;; esac; }
stop_all() { for n in "${NODES[@]}"; do [ ! -f "$WORK/$n/postmaster.pid" ] || run "$BIN/pg_ctl" -D "$WORK/$n" -m fast stop >/dev/null 2>&1 || true; done; rm -rf "$WORK"; }
trap stop_all EXIT
sql() { local n=$1; shift; run "$BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$WORK" -p "$(port "$n")" -d postgres "$@"; }

for n in "${NODES[@]}"; do
	run "$BIN/initdb" -D "$WORK/$n" -A trust >/dev/null
	cat >>"$WORK/$n/postgresql.conf" <<CONF
port = $(port "$n")
unix_socket_directories = '$WORK'
listen_addresses = ''
fsync = on
synchronous_commit = off
full_page_writes = on
shared_buffers = '256MB'
max_wal_size = '8GB'
checkpoint_timeout = '30min'
max_connections = 100
CONF
	[ "$n" = single ] || cat >>"$WORK/$n/postgresql.conf" <<CONF
shared_preload_libraries = 'citus'
max_prepared_transactions = 20
citus.node_conninfo = 'sslmode=disable'
citus.shard_count = 8
CONF
	run "$BIN/pg_ctl" -D "$WORK/$n" -l "$WORK/$n.log" -w start >/dev/null
done
for n in coord w1 w2; do sql "$n" -c 'CREATE EXTENSION citus'; done
sql coord -c "SELECT citus_set_coordinator_host('$WORK', $(port coord))" >/dev/null
for n in w1 w2; do sql coord -c "SELECT citus_add_node('$WORK', $(port "$n"))" >/dev/null; done

# The handler, the same text everywhere: pay_ext of bench/layers.sql
handler=$(sed -n '/^CREATE FUNCTION pay_ext/,/^END \$\$;/p' "$ROOT/bench/layers.sql")
bare=$(sed -n '/^CREATE FUNCTION pay_bare/,/^END \$\$;/p' "$ROOT/bench/layers.sql")
table='CREATE TABLE bench_payments (id bigserial, pay_key text NOT NULL, amount int NOT NULL, PRIMARY KEY (pay_key, id));'
sql single -c 'CREATE EXTENSION idempotency' -c "$table" -c "$handler" -c "$bare"
sql coord -c 'CREATE EXTENSION idempotency' -c "SELECT idem_distribute('key')" -c "$table" \
	-c "SELECT create_distributed_table('bench_payments', 'pay_key', colocate_with => 'idem_ledger')" \
	-c "$handler" -c "${handler//pay_ext/pay_dist}" -c "$bare" -c "${bare//pay_bare/pay_bare_dist}" \
	-c "SELECT create_distributed_function('pay_dist(text,int)', '\$1', colocate_with => 'idem_ledger')" \
	-c "SELECT create_distributed_function('pay_bare_dist(text,int)', '\$1', colocate_with => 'idem_ledger')" >/dev/null
# the completed keys of the replay workload
sql single -c "SELECT count(pay_ext('r-' || i, 100)) FROM generate_series(1, $KEYS) i" >/dev/null
sql coord -c "SELECT count(pay_ext('r-' || i, 100)) FROM generate_series(1, $KEYS) i" >/dev/null
for n in "${NODES[@]}"; do sql "$n" -c 'VACUUM ANALYZE' -c 'CHECKPOINT'; done

S=$WORK/scripts
run mkdir -p "$S"
for place in single coord dfunc; do
	fn=pay_ext bfn=pay_bare
	[ "$place" != dfunc ] || fn=pay_dist bfn=pay_bare_dist
	printf '\\set k random(1, 1000000000000)\nSELECT %s(:client_id || %s || :k, 100);\n' "$bfn" "'-b-'" |
		run tee "$S/bare_$place.sql" >/dev/null
	printf '\\set k random(1, 1000000000000)\nSELECT %s(:client_id || %s || :k, 100);\n' "$fn" "'-f-'" |
		run tee "$S/first_$place.sql" >/dev/null
	printf '\\set k random(1, %d)\nSELECT %s(%s || :k, 100);\n' "$KEYS" "$fn" "'r-'" |
		run tee "$S/replay_$place.sql" >/dev/null
done

declare -A TPS
for r in $(seq 1 "$ROUNDS"); do
	for w in bare first replay; do
		for place in single coord dfunc; do
			node=$place
			[ "$place" = single ] || node=coord
			out=$(run "$BIN/pgbench" -n -M simple -c "$CLIENTS" -j "$CLIENTS" -T "$DURATION" \
				-h "$WORK" -p "$(port "$node")" -f "$S/${w}_$place.sql" postgres 2>&1)
			tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -n1)
			[ -n "$tps" ] || { echo "$out" >&2; exit 1; }
			TPS[$w,$place]+="$tps "
			echo "round $r: $w $place $tps tps" >&2
		done
	done
done

median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
# ratios to single taken round by round, then their median: the load of a
# shared machine moves whole rounds more than the places within one
ratios() {
	local -a a b
	read -r -a a <<<"$1"
	read -r -a b <<<"$2"
	for i in "${!a[@]}"; do echo "${a[$i]} / ${b[$i]}" | bc -l; done | tr '\n' ' '
}
echo "| workload | single | coord | dfunc | coord/single | dfunc/single |"
echo "|---|---:|---:|---:|---:|---:|"
for w in bare first replay; do
	s=$(median "${TPS[$w,single]}") c=$(median "${TPS[$w,coord]}") d=$(median "${TPS[$w,dfunc]}")
	printf '| %s | %.0f | %.0f | %.0f | %.2f | %.2f |\n' "$w" "$s" "$c" "$d" \
		"$(median "$(ratios "${TPS[$w,coord]}" "${TPS[$w,single]}")")" \
		"$(median "$(ratios "${TPS[$w,dfunc]}" "${TPS[$w,single]}")")"
done
