#!/usr/bin/env bash
# bench/run.sh: the layers side by side, in one run, on one throwaway server.
#
# Usage: bash bench/run.sh
#
# Layers (bench/layers.sql): bare (no idempotency, the ceiling), hand (the
# common Stripe-style PL/pgSQL recipe), ext (this extension, logged ledger),
# ext_unlogged (this extension, UNLOGGED ledger).  Workloads:
#   first    a payment with a fresh key: begin, insert a row, finish
#   replay   the same call with a key that completed before
#   once     consumer de-duplication of a fresh message id
# Each (workload, layer) pair runs for DURATION seconds, ROUNDS times,
# interleaved, with pgbench -M prepared; the table shows medians and ratios.
#
# Ledger bytes per key: in a database of its own, BYTES_KEYS keys are made
# through hand and through ext with pgbench, one key per transaction as in
# production, then VACUUM; the second table shows heap, index and total bytes
# per key of hand_keys and idem_ledger.
#
# Environment: ROUNDS (5), DURATION (10), CLIENTS (2), KEYS (100000 completed
# keys per ledger for the replay workload), BYTES_KEYS (100000 keys per layer
# for the bytes per key), BIG=1 to also measure the first-time path of hand
# and ext on tables of BIG_KEYS (10 million) live keys that interleave with
# the new ones, in every round right after the run on the KEYS-key tables
# (several minutes more to fill them and ~6 GB of disk); these runs come last
# in each round, and the small tables are warmed up again after them.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-2}
KEYS=${KEYS:-100000}
BIG=${BIG:-0}
BIG_KEYS=${BIG_KEYS:-10000000}
BYTES_KEYS=${BYTES_KEYS:-100000}

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_server bench
bench_settings
cluster_start


# pgbench scripts
SCRIPTS=$WORK/scripts
bench_scripts "$SCRIPTS" "$KEYS"
for layer in hand ext; do
	printf '\\set k random(1, 1000000000000)\nSELECT pay_%s(:client_id || %s || :k, 100);\n' \
		"$layer" "'-b-'" >"$SCRIPTS/bytes_$layer.sql"
done
chmod -R a+r "$SCRIPTS"

# Ledger bytes per key, in a database of its own: BYTES_KEYS keys through
# each layer, one per transaction, then VACUUM.  The keys are random, as
# production keys (UUIDs) are, and drawn alike for both layers: keys from one
# sequence would reach the second layer as longer, rising numbers, which fill
# its B-tree's pages better.  heap is pg_table_size (the heap with its TOAST,
# free space map and visibility map), so heap + index = total.
echo "bench: making $BYTES_KEYS keys per layer for the ledger size"
psql_q -d postgres -c "CREATE DATABASE bench_bytes"
psql_q -d bench_bytes -f "$WORK/tree/bench/layers.sql" >/dev/null
for layer in hand ext; do
	if ! cluster_as_user pgbench -n -M prepared -c "$CLIENTS" -j "$CLIENTS" \
			-t $(((BYTES_KEYS + CLIENTS - 1) / CLIENTS)) \
			-f "$SCRIPTS/bytes_$layer.sql" bench_bytes >"$WORK/bytes_$layer.log" 2>&1; then
		cat "$WORK/bytes_$layer.log" >&2
		echo "bench: pgbench failed making keys through $layer" >&2
		exit 1
	fi
done
psql_q -d bench_bytes -c "VACUUM"
bytes() {
	psql_v -d bench_bytes -c "
		SELECT count(*),
		       round(pg_table_size('$1')::numeric / greatest(count(*), 1), 1),
		       round(pg_indexes_size('$1')::numeric / greatest(count(*), 1), 1),
		       round(pg_total_relation_size('$1')::numeric / greatest(count(*), 1), 1)
		  FROM $1"
}
B_HAND=$(bytes hand_keys)
B_EXT=$(bytes idem_ledger)
psql_q -d postgres -c "DROP DATABASE bench_bytes"

for db in bench_logged bench_unlogged; do
	psql_q -d postgres -c "CREATE DATABASE $db"
	psql_q -d "$db" -f "$WORK/tree/bench/layers.sql" >/dev/null
done
psql_q -d bench_unlogged -c "SELECT idem_set_logged(false)" >/dev/null

# Completed keys for the replay workload, made through each layer itself.
echo "bench: loading $KEYS completed keys per layer"
psql_q -d bench_logged -c "SELECT count(pay_hand('r-' || i, 100)) FROM generate_series(1, $KEYS) i" >/dev/null
psql_q -d bench_logged -c "SELECT count(pay_ext('r-' || i, 100)) FROM generate_series(1, $KEYS) i" >/dev/null
psql_q -d bench_unlogged -c "SELECT count(pay_ext('r-' || i, 100)) FROM generate_series(1, $KEYS) i" >/dev/null
for db in bench_logged bench_unlogged; do
	psql_q -d "$db" -c "VACUUM ANALYZE" >/dev/null
done

# The big tables: BIG_KEYS live completed keys in the ledger and in the
# hand-rolled table, shaped like the first-time workload's keys (client id,
# '-f-', a number up to 1e12: i times 3^18 modulo 1e12, distinct and spread
# evenly) so that new keys land among them, inserted in random order so that
# the B-trees' pages are as full as random production keys leave them (about
# 70%, not 80 to 90%).  Each is a copy of a row its layer made, with only the
# key changed, so that this script names no other column of the ledger.
if [ "$BIG" = 1 ]; then
	echo "bench: filling bench_big's ledger and hand-rolled table with $BIG_KEYS live keys each"
	psql_q -d postgres -c "CREATE DATABASE bench_big"
	psql_q -d bench_big -f "$WORK/tree/bench/layers.sql" >/dev/null
	psql_q -d bench_big -c "SELECT pay_ext('template', 100), pay_hand('template', 100)" >/dev/null
	# copies of the template row with another key (and, in the ledger, that
	# key's digest, its primary key)
	for table in idem_ledger hand_keys; do
		digest="'{}'::jsonb"
		[ "$table" = idem_ledger ] && digest="jsonb_build_object('digest', idem_digest(t.scope, k.k))"
		psql_q -d bench_big -c "
			INSERT INTO $table
			SELECT r.*
			  FROM $table t,
			       (SELECT i FROM generate_series(1, $BIG_KEYS) i ORDER BY random()) i,
			       LATERAL (SELECT (i % $CLIENTS) || '-f-' ||
			                       (i::bigint * 387420489 % 1000000000000 + 1) AS k) k,
			       LATERAL jsonb_populate_record(t,
			           jsonb_build_object('key', k.k) || $digest) r
			 WHERE t.key = 'template'"
		psql_q -d bench_big -c "DELETE FROM $table WHERE key = 'template'"
	done
	psql_q -d bench_big -c "VACUUM ANALYZE" >/dev/null
fi

# run_one WORKLOAD LAYER -> prints tps
run_one() {
	local workload=$1 layer=$2 db=bench_logged script=$2
	case $layer in
	ext_unlogged)
		db=bench_unlogged
		script=ext
		;;
	ext_big | hand_big)
		db=bench_big
		script=${layer%_big}
		;;
	esac
	psql_q -d "$db" -c "CHECKPOINT" >/dev/null
	cluster_as_user pgbench -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -T "$DURATION" \
		-f "$SCRIPTS/${workload}_${script}.sql" "$db" 2>&1 |
		awk '/^tps = / { print $3 }'
}

RESULTS=$WORK/results.tsv
: >"$RESULTS"
WORKLOADS=(first replay once)
LAYERS=(bare hand ext ext_unlogged)
for ((round = 1; round <= ROUNDS; round++)); do
	for workload in "${WORKLOADS[@]}"; do
		for layer in "${LAYERS[@]}"; do
			tps=$(run_one "$workload" "$layer")
			printf '%s\t%s\t%s\t%s\n' "$round" "$workload" "$layer" "$tps" >>"$RESULTS"
			printf 'bench: round %d %-6s %-13s %10.1f tps\n' "$round" "$workload" "$layer" "$tps"
		done
	done
	# The big tables last in the round: a run on them leaves shared buffers
	# full of their pages, which would slow whatever ran next on the small
	# tables, so those are read back in (pg_prewarm) before the next round.
	if [ "$BIG" = 1 ]; then
		for layer in hand_big ext_big; do
			tps=$(run_one first "$layer")
			printf '%s\t%s\t%s\t%s\n' "$round" first "$layer" "$tps" >>"$RESULTS"
			printf 'bench: round %d %-6s %-13s %10.1f tps\n' "$round" first "$layer" "$tps"
		done
		if ((round < ROUNDS)); then
			for db in bench_logged bench_unlogged; do
				psql_q -d "$db" -c "
					CREATE EXTENSION IF NOT EXISTS pg_prewarm;
					SELECT count(pg_prewarm(c.oid)) FROM pg_class c
					 WHERE c.relkind IN ('r', 'i', 'S') AND c.relnamespace = 'public'::regnamespace" >/dev/null
			done
		fi
	fi
done

python3 - "$RESULTS" "$B_HAND" "$B_EXT" "$BIG" "$KEYS" "$BIG_KEYS" <<'EOF'
import statistics, sys
path, b_hand, b_ext, big, keys, big_keys = sys.argv[1:7]
runs = {}
for line in open(path):
    _, workload, layer, tps = line.split("\t")
    runs.setdefault((workload, layer), []).append(float(tps))
med = {k: statistics.median(v) for k, v in runs.items()}
layers = ["bare", "hand", "ext", "ext_unlogged"]
print()
print("| workload | " + " | ".join(layers) + " | ext/hand | ext/bare | unlogged/hand |")
print("|---|" + "---:|" * (len(layers) + 3))
for w in ["first", "replay", "once"]:
    row = [f"{med[(w, l)]:.0f}" for l in layers]
    print(f"| {w} | " + " | ".join(row) +
          f" | {med[(w, 'ext')] / med[(w, 'hand')]:.2f} | {med[(w, 'ext')] / med[(w, 'bare')]:.2f}"
          f" | {med[(w, 'ext_unlogged')] / med[(w, 'hand')]:.2f} |")

hand = b_hand.split("|")
ext = b_ext.split("|")
print()
print("| bytes per key | keys | heap | index | total |")
print("|---|---:|---:|---:|---:|")
print(f"| hand (hand_keys) | {hand[0]} | {hand[1]} | {hand[2]} | {hand[3]} |")
print(f"| ext (idem_ledger) | {ext[0]} | {ext[1]} | {ext[2]} | {ext[3]} |")
print("| ext/hand | | " + " | ".join(f"{float(e) / float(h):.2f}" for h, e in zip(hand[1:], ext[1:])) + " |")

if big == "1":
    print()
    print(f"| first-time path | tps, {keys} keys | tps, {big_keys} keys | ratio |")
    print("|---|---:|---:|---:|")
    for layer in ["hand", "ext"]:
        small, large = med[("first", layer)], med[("first", layer + "_big")]
        print(f"| {layer} | {small:.0f} | {large:.0f} | {large / small:.2f} |")
EOF
echo
echo "bytes per key: $BYTES_KEYS keys per layer made with pgbench, one per transaction, then VACUUM; heap = pg_table_size (with TOAST, FSM, VM), index = pg_indexes_size"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
echo "server: $("$PG_CONFIG" --version); synchronous_commit=off, shared_buffers=1GB; pgbench -M prepared -c $CLIENTS -j $CLIENTS -T $DURATION, $ROUNDS rounds interleaved, medians"
