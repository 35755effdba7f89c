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
# Environment: ROUNDS (5), DURATION (10), CLIENTS (2), KEYS (100000 completed
# keys per ledger for the replay workload), BIG=1 to also measure throughput
# with BIG_KEYS (10 million) live keys (several minutes and ~4 GB of disk).
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-2}
KEYS=${KEYS:-100000}
BIG=${BIG:-0}
BIG_KEYS=${BIG_KEYS:-10000000}

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_server bench
cat >>"$CLUSTER_DATA/postgresql.conf" <<EOF
# benchmark settings: the figure is CPU, not fsync
fsync = on
synchronous_commit = off
full_page_writes = on
shared_buffers = '1GB'
max_wal_size = '8GB'
checkpoint_timeout = '30min'
autovacuum = on
EOF
cluster_start


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

# pgbench scripts
SCRIPTS=$WORK/scripts
mkdir -p "$SCRIPTS"
for layer in bare hand ext; do
	printf '\\set k random(1, 1000000000000)\nSELECT pay_%s(:client_id || %s || :k, 100);\n' \
		"$layer" "'-f-'" >"$SCRIPTS/first_$layer.sql"
	printf '\\set k random(1, %d)\nSELECT pay_%s(%s || :k, 100);\n' \
		"$KEYS" "$layer" "'r-'" >"$SCRIPTS/replay_$layer.sql"
	printf '\\set k random(1, 1000000000000)\nSELECT consume_%s(:client_id || %s || :k);\n' \
		"$layer" "'-m-'" >"$SCRIPTS/once_$layer.sql"
done
chmod -R a+r "$SCRIPTS"

# run_one WORKLOAD LAYER -> prints tps
run_one() {
	local workload=$1 layer=$2 db=bench_logged script=$2
	if [ "$layer" = ext_unlogged ]; then
		db=bench_unlogged
		script=ext
	fi
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
done

# Ledger bytes per key: the replay keys, same small request and response.
bytes() {
	psql_q -d "$1" -At -c "SELECT round(pg_total_relation_size('$2')::numeric / greatest(count(*), 1), 1) FROM $2"
}
B_HAND=$(bytes bench_logged hand_keys)
B_EXT=$(bytes bench_logged idem_ledger)

BIGLINE=""
if [ "$BIG" = 1 ]; then
	echo "bench: filling the logged ledger to $BIG_KEYS live keys"
	psql_q -d bench_logged -c "
		INSERT INTO idem_ledger (scope, key, state, status, response, attempt, created_at,
		                         expires_at, finished_at, fingerprint)
		SELECT 'big', 'k-' || i, 'completed', 201, '{\"payment_id\": 1}', 1, now(),
		       now() + interval '1 year', now(), decode(repeat('ab', 32), 'hex')
		  FROM generate_series(1, $BIG_KEYS) i" >/dev/null
	psql_q -d bench_logged -c "VACUUM ANALYZE idem_ledger" >/dev/null
	big=()
	for ((round = 1; round <= ROUNDS; round++)); do
		big+=("$(run_one first ext)")
	done
	BIGLINE=$(printf '%s\n' "${big[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
fi

python3 - "$RESULTS" "$B_HAND" "$B_EXT" "$BIGLINE" "$KEYS" "$BIG_KEYS" <<'EOF'
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
print()
print(f"ledger bytes per key ({keys} keys): hand {b_hand}, ext {b_ext}, "
      f"ratio {float(b_ext) / float(b_hand):.2f}")
if big:
    print(f"first-time path at {big_keys} live keys: {float(big):.0f} tps, "
          f"{float(big) / med[('first', 'ext')]:.2f}x the figure at {keys} keys")
EOF
echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
echo "server: $("$PG_CONFIG" --version); synchronous_commit=off, shared_buffers=1GB; pgbench -M prepared -c $CLIENTS -j $CLIENTS -T $DURATION, $ROUNDS rounds interleaved, medians"
