#!/usr/bin/env bash
# bench/live_keys.sh: the first-time path against the number of live keys.
#
# Usage: bash bench/live_keys.sh
#
# Three layers, each in a database of its own on one throwaway server:
#   hand          the hand-rolled PL/pgSQL table (hand_keys of bench/layers.sql)
#   ext           this extension, logged ledger
#   ext_unlogged  this extension, UNLOGGED ledger
# For each size of SIZES, in rising order, every layer's table is grown to
# that many live keys (copies of a row the layer made, with keys shaped like
# the workload's: client id, '-f-', a number up to 1e12, scattered over the
# key space so that new keys land among them; the primary key rebuilt with
# its leaves 70% full, as random insertions leave them; then VACUUM ANALYZE,
# as autovacuum would leave them).  Then, for each settings profile of
# PROFILES (the server restarted with it), each layer runs the first-time
# workload (pay_LAYER with a fresh random key: begin, insert a payment,
# finish) for DURATION seconds with pgbench; its tps is the mean of the
# progress reports after the first WARMUP seconds, and the keys and
# payments the run added are deleted and vacuumed away afterwards, so that
# the next run starts at the same size.  Nothing checkpoints before a run:
# the runs go through the checkpoints the settings bring (with the defaults,
# one at least every max_wal_size = 1 GB of WAL), as production does.
#
# Profiles (each on top of PostgreSQL's defaults: fsync, synchronous_commit
# and full_page_writes on, shared_buffers 128MB, max_wal_size 1GB,
# checkpoint_timeout 5min):
#   default    nothing else
#   buffers    shared_buffers = BUFFERS (default 4GB): the ledger's index fits
#   walcomp    wal_compression = lz4: smaller full-page images after a checkpoint
#   both       buffers and walcomp
#   async      synchronous_commit = off: no commit waits for its WAL flush,
#              so what the B-tree costs is not hidden behind that wait
#
# Output: per profile and layer, the tps at each size and its ratio to the
# first size's; per run, the checkpoints it went through and its WAL bytes
# per transaction (full-page images show there); the table sizes; a chart (CHART, default
# bench/live_keys.png; empty: none) of the ratios against live keys, one line
# per layer and profile, drawn with gnuplot when it is installed.
#
# Environment: SIZES ("100000 1000000 10000000"; 30000000 needs some 20 GB of
# disk and 10 minutes to fill here), PROFILES ("default both"), DURATION (120),
# WARMUP (20), CLIENTS (2), BUFFERS (4GB), CHART.
set -euo pipefail

SIZES=${SIZES:-100000 1000000 10000000}
PROFILES=${PROFILES:-default both}
DURATION=${DURATION:-120}
WARMUP=${WARMUP:-20}
CLIENTS=${CLIENTS:-2}
BUFFERS=${BUFFERS:-4GB}

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
CHART=${CHART-$ROOT/bench/live_keys.png}

LAYERS=(hand ext ext_unlogged)

bench_server live
# PostgreSQL's defaults back where the throwaway cluster changes them, then
# the profile's own settings (profile.conf, written before each start)
cat >>"$CLUSTER_DATA/postgresql.conf" <<EOF
# bench/live_keys.sh: PostgreSQL's defaults, then the profile's settings
fsync = on
synchronous_commit = on
full_page_writes = on
include = 'profile.conf'
EOF

profile_conf() {
	case $1 in
	default) ;;
	buffers) echo "shared_buffers = '$BUFFERS'" ;;
	walcomp) echo "wal_compression = lz4" ;;
	both) printf "shared_buffers = '%s'\nwal_compression = lz4\n" "$BUFFERS" ;;
	async) echo "synchronous_commit = off" ;;
	*)
		echo "bench: unknown profile '$1' (default, buffers, walcomp, both, async)" >&2
		exit 2
		;;
	esac
}

start_with() {
	cluster_stop
	profile_conf "$1" >"$CLUSTER_DATA/profile.conf"
	chown "$(stat -c %U "$CLUSTER_DATA")" "$CLUSTER_DATA/profile.conf"
	cluster_start >/dev/null
}

start_with default

db_of() { echo "live_$1"; }
table_of() { case $1 in hand) echo hand_keys ;; *) echo idem_ledger ;; esac; }
fn_of() { case $1 in hand) echo hand ;; *) echo ext ;; esac; }

SCRIPTS=$WORK/scripts
mkdir -p "$SCRIPTS"
for layer in "${LAYERS[@]}"; do
	db=$(db_of "$layer")
	psql_q -d postgres -c "CREATE DATABASE $db"
	psql_q -d "$db" -f "$WORK/tree/bench/layers.sql" >/dev/null
	psql_q -d "$db" -c "CREATE EXTENSION pg_prewarm"
	[ "$layer" = ext_unlogged ] && psql_q -d "$db" -c "SELECT idem_set_logged(false)" >/dev/null
	# the row every copy is made from
	psql_q -d "$db" -c "SELECT pay_$(fn_of "$layer")('template', 100)" >/dev/null
	printf '\\set k random(1, 1000000000000)\nSELECT pay_%s(:client_id || %s || :k, 100);\n' \
		"$(fn_of "$layer")" "'-f-'" >"$SCRIPTS/first_$layer.sql"
done
chmod -R a+r "$SCRIPTS"

# grow LAYER FROM TO: keys FROM+1 .. TO.  Inserting millions of random keys
# into a B-tree one by one takes hours here, so the primary key is dropped,
# the rows go in, and the key is built again by sorting, with its leaves
# filled to 70%, as random insertions leave a B-tree's leaves on average
# (a sorted build would fill them to 90%, and the first runs would split
# them).
grow() {
	local layer=$1 from=$2 to=$3 db table digest
	db=$(db_of "$layer")
	table=$(table_of "$layer")
	digest="'{}'::jsonb"
	[ "$table" = idem_ledger ] && digest="jsonb_build_object('digest', idem_digest(t.scope, k.k))"
	psql_q -d "$db" -c "
		CREATE TEMP TABLE pk AS
		SELECT conname, pg_get_constraintdef(c.oid) AS def
		  FROM pg_constraint c WHERE conrelid = '$table'::regclass AND contype = 'p';
		DO \$\$ BEGIN
		    EXECUTE format('ALTER TABLE $table DROP CONSTRAINT %I', (SELECT conname FROM pk));
		END \$\$;
		INSERT INTO $table
		SELECT r.*
		  FROM $table t,
		       generate_series($((from + 1)), $to) i,
		       LATERAL (SELECT (i % $CLIENTS) || '-f-' ||
		                       (i::bigint * 387420489 % 1000000000000 + 1) AS k) k,
		       LATERAL jsonb_populate_record(t, jsonb_build_object('key', k.k) || $digest) r
		 WHERE t.key = 'template';
		SET maintenance_work_mem = '1GB';
		DO \$\$ DECLARE n name; cols text; BEGIN
		    SELECT conname, substring(def from '\((.*)\)') INTO n, cols FROM pk;
		    EXECUTE format('CREATE UNIQUE INDEX %I ON $table (%s) WITH (fillfactor = 70)', n, cols);
		    EXECUTE format('ALTER TABLE $table ADD CONSTRAINT %I PRIMARY KEY USING INDEX %I', n, n);
		END \$\$;"
	psql_q -d "$db" -c "VACUUM ANALYZE $table"
}

# Checkpoints the server has made, and its WAL position, tab-separated
# (checkpoint counts moved to pg_stat_checkpointer in PostgreSQL 17)
server_marks() {
	if [ "$(psql_v -d postgres -c "SHOW server_version_num")" -ge 170000 ]; then
		psql_v -d postgres -c "SELECT num_timed + num_requested || E'\t' || pg_current_wal_lsn()
		                         FROM pg_stat_checkpointer"
	else
		psql_v -d postgres -c "SELECT checkpoints_timed + checkpoints_req || E'\t' || pg_current_wal_lsn()
		                         FROM pg_stat_bgwriter"
	fi
}

# run LAYER -> prints the mean tps after WARMUP seconds, the checkpoints
# during the run and its WAL bytes per transaction, tab-separated
run() {
	local layer=$1 db table since log before after txns
	db=$(db_of "$layer")
	table=$(table_of "$layer")
	log=$WORK/run.log
	# the index, as a server running this workload would hold it
	psql_q -d "$db" -c "SELECT count(pg_prewarm(indexrelid)) FROM pg_index
	                     WHERE indrelid = '$table'::regclass" >/dev/null
	since=$(psql_v -d "$db" -c "SELECT clock_timestamp()")
	before=$(server_marks)
	cluster_as_user pgbench -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -T "$DURATION" -P 5 \
		-f "$SCRIPTS/first_$layer.sql" "$db" >"$log" 2>&1 || {
		cat "$log" >&2
		echo "bench: pgbench failed on $layer" >&2
		exit 1
	}
	after=$(server_marks)
	txns=$(awk '/number of transactions actually processed/ { print $NF }' "$log")
	txns=${txns%%/*}
	# put the table back to its size
	psql_q -d "$db" -c "DELETE FROM $table WHERE created_at >= '$since'"
	psql_q -d "$db" -c "TRUNCATE bench_payments"
	psql_q -d "$db" -c "VACUUM $table"
	awk -v w="$WARMUP" '/^progress: / { t = $2 + 0; if (t > w) { s += $4; n++ } }
		END { if (n) printf "%.1f", s / n; else printf "0" }' "$log"
	local ckpt0 lsn0 ckpt1 lsn1
	IFS=$'\t' read -r ckpt0 lsn0 <<<"$before"
	IFS=$'\t' read -r ckpt1 lsn1 <<<"$after"
	psql_v -d postgres -c "SELECT E'\t' || $ckpt1 - $ckpt0 || E'\t' ||
		round(pg_wal_lsn_diff('$lsn1', '$lsn0') / greatest(${txns:-0}, 1))"
}

RESULTS=$WORK/results.tsv
SIZES_TSV=$WORK/sizes.tsv
: >"$RESULTS"
: >"$SIZES_TSV"
have=0
for size in $SIZES; do
	echo "bench: growing every layer's table to $size live keys"
	for layer in "${LAYERS[@]}"; do
		grow "$layer" "$have" "$size"
		db=$(db_of "$layer")
		table=$(table_of "$layer")
		printf '%s\t%s\t%s\n' "$size" "$layer" "$(psql_v -d "$db" -c "
			SELECT pg_table_size('$table') || E'\t' || pg_indexes_size('$table')")" >>"$SIZES_TSV"
	done
	have=$size
	for profile in $PROFILES; do
		start_with "$profile"
		for layer in "${LAYERS[@]}"; do
			IFS=$'\t' read -r tps ckpts walb < <(run "$layer")
			printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$profile" "$size" "$layer" "$tps" "$ckpts" "$walb" >>"$RESULTS"
			printf 'bench: %-8s %9s keys  %-13s %9.1f tps  %2s checkpoints  %6s WAL bytes/txn\n' \
				"$profile" "$size" "$layer" "$tps" "$ckpts" "$walb"
		done
	done
done

/usr/bin/env python3 - "$RESULTS" "$SIZES_TSV" "$WORK/curve.dat" <<'EOF'
import sys
results, sizes_tsv, dat = sys.argv[1:4]
tps = {}
marks = {}
for line in open(results):
    profile, size, layer, t, ckpts, walb = line.rstrip("\n").split("\t")
    tps[(profile, layer, int(size))] = float(t)
    marks[(profile, layer, int(size))] = (ckpts, walb)
sizes = sorted({k[2] for k in tps})
profiles = list(dict.fromkeys(k[0] for k in tps))
layers = list(dict.fromkeys(k[1] for k in tps))
print()
print("| profile | layer | " + " | ".join(f"{s:,} keys" for s in sizes) + " | " +
      " | ".join(f"{s:,}/{sizes[0]:,}" for s in sizes[1:]) + " |")
print("|---|---|" + "---:|" * (2 * len(sizes) - 1))
with open(dat, "w") as out:
    for p in profiles:
        for l in layers:
            base = tps[(p, l, sizes[0])]
            print(f"| {p} | {l} | " + " | ".join(f"{tps[(p, l, s)]:.0f}" for s in sizes) + " | " +
                  " | ".join(f"{tps[(p, l, s)] / base:.2f}" for s in sizes[1:]) + " |")
            for s in sizes:
                out.write(f"{p}\t{l}\t{s}\t{tps[(p, l, s)] / base:.3f}\n")
print()
print("| profile | layer | " + " | ".join(f"{s:,}: checkpoints, WAL bytes/txn" for s in sizes) + " |")
print("|---|---|" + "---:|" * len(sizes))
for p in profiles:
    for l in layers:
        print(f"| {p} | {l} | " + " | ".join("%s, %s" % marks[(p, l, s)] for s in sizes) + " |")
print()
print("| live keys | layer | heap MB | index MB | bytes per key |")
print("|---:|---|---:|---:|---:|")
for line in open(sizes_tsv):
    size, layer, heap, index = line.rstrip("\n").split("\t")
    n = int(size)
    print(f"| {n:,} | {layer} | {int(heap) / 2**20:.0f} | {int(index) / 2**20:.0f} | "
          f"{(int(heap) + int(index)) / n:.0f} |")
EOF

if [ -n "$CHART" ] && command -v gnuplot >/dev/null 2>&1; then
	plot=""
	for profile in $PROFILES; do
		for layer in "${LAYERS[@]}"; do
			awk -F'\t' -v p="$profile" -v l="$layer" '$1 == p && $2 == l { print $3, $4 }' \
				"$WORK/curve.dat" >"$WORK/curve-$profile-$layer.dat"
			plot+="${plot:+, }'$WORK/curve-$profile-$layer.dat' using 1:2 with linespoints lw 2"
			plot+=" title '$layer, $profile'"
		done
	done
	gnuplot <<EOF
set terminal pngcairo size 960,540 font 'sans,11' noenhanced
set output '$CHART'
set title "first-time path (pgbench -c $CLIENTS, ${DURATION} s runs) against live keys, as a share of its tps at the smallest size"
set xlabel 'live keys in the table'
set ylabel 'tps / tps at the smallest size'
set logscale x
set yrange [0:1.3]
set key below
set grid
plot $plot
EOF
	echo "bench: chart written to $CHART"
fi
echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
echo "server: $("$PG_CONFIG" --version); PostgreSQL's defaults (fsync, synchronous_commit, full_page_writes on) but each profile's settings; pgbench -M prepared -c $CLIENTS -j $CLIENTS -T $DURATION, tps averaged after ${WARMUP} s"
