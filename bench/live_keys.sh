#!/usr/bin/env bash
# bench/live_keys.sh: the first-time path against the number of live keys.
#
# Usage: bash bench/live_keys.sh
#
# Layers (LAYERS), each with a database of its own per size on one
# throwaway server:
#   hand          the hand-rolled PL/pgSQL table (hand_keys of bench/layers.sql)
#   ext           this extension, logged ledger
#   ext_unlogged  this extension, UNLOGGED ledger
# with random (version 4) UUID keys, or, with the suffix _v7 (hand_v7,
# ext_v7, ext_unlogged_v7), UUIDv7 keys: a millisecond timestamp first, so
# that each key sorts after the ones before it.
# For each size of SIZES, every layer's database is grown to that many live
# keys (copies of a row the layer made, with keys of the layer's shape: for
# UUIDv7, timestamps 2 ms apart ending now, as 500 requests a second leave
# them; the primary key rebuilt with its leaves 70% full, as random
# insertions leave a B-tree's leaves, or 90% where the keys arrive in order;
# then VACUUM ANALYZE, as autovacuum would leave them).  A size's database
# starts as a copy of the size before it.  Then, for each settings profile
# of PROFILES (the server restarted with it), ROUNDS rounds: in each, every
# layer runs the first-time workload (pay_LAYER with a fresh key: begin,
# insert a payment, finish) at every size, one after the other, for
# DURATION seconds each with pgbench, the sizes in rising order in odd
# rounds and in falling order in even ones, so that a drift of the machine
# during a round weighs on both ends alike.  A run's tps is the mean of its
# progress reports after the first WARMUP seconds; the keys and payments it
# added are deleted and vacuumed away afterwards, so that every run of a
# point starts at the same size.  With SLICE (seconds), each round runs a
# layer's sizes in turns instead: every SLICE seconds the next size, until
# each has had DURATION seconds, so that a drift of the machine (this VM's
# disk, whose flush time moves from minute to minute) weighs on every size
# alike however short-lived; WARMUP then applies to each slice, and a
# point's tps is the mean of its slices'.  Nothing checkpoints before a run: the
# runs go through the checkpoints the settings bring (with the defaults,
# one at least every checkpoint_timeout = 5 min, sooner when the WAL since
# the last one nears max_wal_size = 1 GB), as production does.
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
# Output: per profile and layer, the mean tps at each size over the rounds
# and its ratio to the first size's (the mean of each round's own ratio,
# with the lowest and highest when there are several rounds); per point,
# the checkpoints its runs went through and their WAL bytes per transaction
# (full-page images show there); the table sizes; a chart (CHART, default
# bench/live_keys.png; empty: none) of the ratios against live keys, one
# line per layer and profile, drawn with gnuplot when it is installed.
#
# Environment: SIZES ("100000 1000000 10000000"; 30000000 needs some 7 GB
# of disk per layer, more than that size's own), LAYERS ("hand ext
# ext_unlogged"), PROFILES ("default both"), ROUNDS (1), DURATION (120),
# WARMUP (20), SLICE (0: no slices), CLIENTS (2), BUFFERS (4GB), CHART.
set -euo pipefail

SIZES=${SIZES:-100000 1000000 10000000}
LAYERS=${LAYERS:-hand ext ext_unlogged}
PROFILES=${PROFILES:-default both}
ROUNDS=${ROUNDS:-1}
DURATION=${DURATION:-120}
WARMUP=${WARMUP:-20}
SLICE=${SLICE:-0}
SLICE_NOTE=""
[ "$SLICE" -gt 0 ] && SLICE_NOTE=" in ${SLICE} s slices taken in turns"
CLIENTS=${CLIENTS:-2}
BUFFERS=${BUFFERS:-4GB}

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
CHART=${CHART-$ROOT/bench/live_keys.png}

# a run's tps is the mean of pgbench's 5-second reports after WARMUP
if [ "$DURATION" -lt $((WARMUP + 10)) ]; then
	echo "bench: DURATION ($DURATION) must be at least WARMUP ($WARMUP) + 10 seconds" >&2
	exit 2
fi
if [ "$SLICE" -gt 0 ] && { [ "$SLICE" -lt $((WARMUP + 10)) ] || [ $((DURATION % SLICE)) -ne 0 ]; }; then
	echo "bench: SLICE ($SLICE) must be at least WARMUP ($WARMUP) + 10 seconds and divide DURATION ($DURATION)" >&2
	exit 2
fi
read -r -a LAYER_LIST <<<"$LAYERS"
for layer in "${LAYER_LIST[@]}"; do
	case ${layer%_v7} in
	hand | ext | ext_unlogged) ;;
	*)
		echo "bench: unknown layer '$layer' (hand, ext, ext_unlogged, each with or without _v7)" >&2
		exit 2
		;;
	esac
done

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

db_of() { echo "live_$1_$2"; }
table_of() { case ${1%_v7} in hand) echo hand_keys ;; *) echo idem_ledger ;; esac; }
fn_of() { case ${1%_v7} in hand) echo hand ;; *) echo ext ;; esac; }
# key_of LAYER [AT]: a key of LAYER's shape, in SQL (a UUIDv7's time AT, by
# default the clock's)
key_of() { case $1 in *_v7) echo "bench_uuidv7(${2:-})::text" ;; *) echo "gen_random_uuid()::text" ;; esac; }

# A UUIDv7 (RFC 9562) in SQL: the Unix time in milliseconds in the first 48
# bits, version 7, random bits after (PostgreSQL 18 has uuidv7() built in)
UUIDV7_SQL="CREATE FUNCTION bench_uuidv7(at timestamptz DEFAULT clock_timestamp()) RETURNS uuid
LANGUAGE sql VOLATILE AS \$\$
    SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
                  PLACING substring(int8send(floor(extract(epoch FROM at) * 1000)::bigint) FROM 3)
                  FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
\$\$"

SCRIPTS=$WORK/scripts
mkdir -p "$SCRIPTS"
for layer in "${LAYER_LIST[@]}"; do
	printf 'SELECT pay_%s(%s, 100);\n' "$(fn_of "$layer")" "$(key_of "$layer")" >"$SCRIPTS/first_$layer.sql"
done
chmod -R a+r "$SCRIPTS"

# grow LAYER SIZE: makes LAYER's database for SIZE live keys, a copy of the
# one for the size before (PREV, empty for the first) grown by the keys it
# lacks.  Inserting millions of random keys into a B-tree one by one takes
# hours here, so the primary key is dropped, the rows go in, and the key is
# built again by sorting, with its leaves filled to 70%, as random
# insertions leave a B-tree's leaves on average (a sorted build would fill
# them to 90%, and the first runs would split them); a hand-rolled table
# with UUIDv7 keys, whose insertions all go to the right-most leaf, to 90%.
grow() {
	local layer=$1 size=$2 prev=$3 db table digest from fill key
	db=$(db_of "$layer" "$size")
	table=$(table_of "$layer")
	if [ -z "$prev" ]; then
		psql_q -d postgres -c "CREATE DATABASE $db"
		psql_q -d "$db" -f "$WORK/tree/bench/layers.sql" >/dev/null
		psql_q -d "$db" -c "CREATE EXTENSION pg_prewarm" -c "$UUIDV7_SQL"
		[ "${layer%_v7}" = ext_unlogged ] && psql_q -d "$db" -c "SELECT idem_set_logged(false)" >/dev/null
		# the row every copy is made from
		psql_q -d "$db" -c "SELECT pay_$(fn_of "$layer")('template', 100)" >/dev/null
		from=1
	else
		psql_q -d postgres -c "CREATE DATABASE $db TEMPLATE $(db_of "$layer" "$prev") STRATEGY FILE_COPY"
		from=$prev
	fi
	digest="'{}'::jsonb"
	[ "$table" = idem_ledger ] && digest="jsonb_build_object('digest', idem_digest(t.scope, k.k))"
	fill=70
	[ "$layer" = hand_v7 ] && fill=90
	# random keys, or UUIDv7 keys 2 ms apart, the newest now
	key=$(key_of "$layer" "now() - ($size - i) * interval '2 ms'")
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
		       (SELECT $key AS k FROM generate_series($((from + 1)), $size) i) k,
		       LATERAL jsonb_populate_record(t, jsonb_build_object('key', k.k) || $digest) r
		 WHERE t.key = 'template';
		SET maintenance_work_mem = '1GB';
		DO \$\$ DECLARE n name; cols text; BEGIN
		    SELECT conname, substring(def from '\((.*)\)') INTO n, cols FROM pk;
		    EXECUTE format('CREATE UNIQUE INDEX %I ON $table (%s) WITH (fillfactor = $fill)', n, cols);
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

# run LAYER SIZE SECONDS -> runs the workload for SECONDS and prints the
# mean tps after WARMUP seconds, the checkpoints during the run, its WAL
# bytes and its transactions, tab-separated
run() {
	local layer=$1 size=$2 secs=$3 db table log before after txns
	db=$(db_of "$layer" "$size")
	table=$(table_of "$layer")
	log=$WORK/run.log
	# the index, as a server running this workload would hold it
	psql_q -d "$db" -c "SELECT count(pg_prewarm(indexrelid)) FROM pg_index
	                     WHERE indrelid = '$table'::regclass" >/dev/null
	before=$(server_marks)
	cluster_as_user pgbench -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -T "$secs" -P 5 \
		-f "$SCRIPTS/first_$layer.sql" "$db" >"$log" 2>&1 || {
		cat "$log" >&2
		echo "bench: pgbench failed on $layer" >&2
		exit 1
	}
	after=$(server_marks)
	txns=$(awk '/number of transactions actually processed/ { print $NF }' "$log")
	txns=${txns%%/*}
	awk -v w="$WARMUP" '/^progress: / { t = $2 + 0; if (t > w) { s += $4; n++ } }
		END { if (n) printf "%.1f", s / n; else printf "0" }' "$log"
	local ckpt0 lsn0 ckpt1 lsn1
	IFS=$'\t' read -r ckpt0 lsn0 <<<"$before"
	IFS=$'\t' read -r ckpt1 lsn1 <<<"$after"
	psql_v -d postgres -c "SELECT E'\t' || $ckpt1 - $ckpt0 || E'\t' ||
		round(pg_wal_lsn_diff('$lsn1', '$lsn0')) || E'\t' || ${txns:-0}"
}

# clock_of LAYER SIZE -> the clock of LAYER's database for SIZE
clock_of() { psql_v -d "$(db_of "$1" "$2")" -c "SELECT clock_timestamp()"; }

# put_back LAYER SIZE SINCE: puts the table back to its size, without the keys
# and payments made since SINCE
put_back() {
	local db table
	db=$(db_of "$1" "$2")
	table=$(table_of "$1")
	psql_q -d "$db" -c "DELETE FROM $table WHERE created_at >= '$3'"
	psql_q -d "$db" -c "TRUNCATE bench_payments"
	psql_q -d "$db" -c "VACUUM $table"
}

# record PROFILE ROUND SIZE LAYER TPS CHECKPOINTS WALBYTES TXNS
record() {
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"
	printf 'bench: %-8s round %s %9s keys  %-16s %9.1f tps  %2s checkpoints  %6s WAL bytes/txn\n' \
		"$1" "$2" "$3" "$4" "$5" "$6" "$(($7 / ($8 > 0 ? $8 : 1)))"
}

# sliced PROFILE ROUND LAYER SIZE...: the sizes in turns of SLICE seconds
sliced() {
	local profile=$1 round=$2 layer=$3 size i tps ckpts walb txns
	shift 3
	local -A since sum_tps sum_ckpts sum_walb sum_txns
	for size in "$@"; do
		since[$size]=$(clock_of "$layer" "$size")
		sum_tps[$size]=0 sum_ckpts[$size]=0 sum_walb[$size]=0 sum_txns[$size]=0
	done
	for i in $(seq 1 $((DURATION / SLICE))); do
		for size in "$@"; do
			IFS=$'\t' read -r tps ckpts walb txns < <(run "$layer" "$size" "$SLICE")
			sum_tps[$size]=$(awk -v a="${sum_tps[$size]}" -v b="$tps" 'BEGIN { print a + b }')
			sum_ckpts[$size]=$((sum_ckpts[$size] + ckpts))
			sum_walb[$size]=$((sum_walb[$size] + walb))
			sum_txns[$size]=$((sum_txns[$size] + txns))
		done
		echo "bench: $profile round $round $layer: slice $i of $((DURATION / SLICE)) done" >&2
	done
	for size in "$@"; do
		put_back "$layer" "$size" "${since[$size]}"
		record "$profile" "$round" "$size" "$layer" \
			"$(awk -v s="${sum_tps[$size]}" -v n=$((DURATION / SLICE)) 'BEGIN { printf "%.1f", s / n }')" \
			"${sum_ckpts[$size]}" "${sum_walb[$size]}" "${sum_txns[$size]}"
	done
}

RESULTS=$WORK/results.tsv
SIZES_TSV=$WORK/sizes.tsv
: >"$RESULTS"
: >"$SIZES_TSV"
read -r -a SIZE_LIST <<<"$SIZES"
for layer in "${LAYER_LIST[@]}"; do
	prev=""
	for size in "${SIZE_LIST[@]}"; do
		echo "bench: growing $layer to $size live keys"
		grow "$layer" "$size" "$prev"
		prev=$size
		printf '%s\t%s\t%s\n' "$size" "$layer" "$(psql_v -d "$(db_of "$layer" "$size")" -c "
			SELECT pg_table_size('$(table_of "$layer")') || E'\t' ||
			       pg_indexes_size('$(table_of "$layer")')")" >>"$SIZES_TSV"
	done
done
for profile in $PROFILES; do
	start_with "$profile"
	for round in $(seq 1 "$ROUNDS"); do
		order=("${SIZE_LIST[@]}")
		[ $((round % 2)) -eq 0 ] && mapfile -t order < <(printf '%s\n' "${SIZE_LIST[@]}" | tac)
		for layer in "${LAYER_LIST[@]}"; do
			if [ "$SLICE" -gt 0 ]; then
				sliced "$profile" "$round" "$layer" "${order[@]}"
				continue
			fi
			for size in "${order[@]}"; do
				started=$(clock_of "$layer" "$size")
				IFS=$'\t' read -r tps ckpts walb txns < <(run "$layer" "$size" "$DURATION")
				put_back "$layer" "$size" "$started"
				record "$profile" "$round" "$size" "$layer" "$tps" "$ckpts" "$walb" "$txns"
			done
		done
	done
done

/usr/bin/env python3 - "$RESULTS" "$SIZES_TSV" "$WORK/curve.dat" <<'PY'
import sys
results, sizes_tsv, dat = sys.argv[1:4]
tps = {}
marks = {}
for line in open(results):
    profile, rnd, size, layer, t, ckpts, walb, txns = line.rstrip("\n").split("\t")
    key = (profile, layer, int(size))
    tps.setdefault(key, {})[int(rnd)] = float(t)
    c, w, n = marks.get(key, (0, 0, 0))
    marks[key] = (c + int(ckpts), w + float(walb), n + int(txns))
sizes = sorted({k[2] for k in tps})
profiles = list(dict.fromkeys(k[0] for k in tps))
layers = list(dict.fromkeys(k[1] for k in tps))
rounds = sorted({r for v in tps.values() for r in v})
mean = lambda xs: sum(xs) / len(xs)
def ratio(p, l, s):
    rs = [tps[(p, l, s)][r] / tps[(p, l, sizes[0])][r] for r in rounds]
    text = f"{mean(rs):.2f}"
    if len(rs) > 1:
        text += f" ({min(rs):.2f}-{max(rs):.2f})"
    return mean(rs), text
print()
print(f"tps, the mean of {len(rounds)} round(s); ratio to {sizes[0]:,} keys, the mean of each round's"
      + (" (lowest-highest)" if len(rounds) > 1 else ""))
print()
print("| profile | layer | " + " | ".join(f"{s:,} keys" for s in sizes) + " | " +
      " | ".join(f"{s:,}/{sizes[0]:,}" for s in sizes[1:]) + " |")
print("|---|---|" + "---:|" * (2 * len(sizes) - 1))
with open(dat, "w") as out:
    for p in profiles:
        for l in layers:
            print(f"| {p} | {l} | " + " | ".join(f"{mean(list(tps[(p, l, s)].values())):.0f}" for s in sizes)
                  + " | " + " | ".join(ratio(p, l, s)[1] for s in sizes[1:]) + " |")
            for s in sizes:
                out.write(f"{p}\t{l}\t{s}\t{ratio(p, l, s)[0]:.3f}\n")
print()
print("| profile | layer | " + " | ".join(f"{s:,}: checkpoints, WAL bytes/txn" for s in sizes) + " |")
print("|---|---|" + "---:|" * len(sizes))
for p in profiles:
    for l in layers:
        cells = []
        for s in sizes:
            c, w, n = marks[(p, l, s)]
            cells.append(f"{c}, {w / max(n, 1):.0f}")
        print(f"| {p} | {l} | " + " | ".join(cells) + " |")
print()
print("| live keys | layer | heap MB | index MB | bytes per key |")
print("|---:|---|---:|---:|---:|")
for line in open(sizes_tsv):
    size, layer, heap, index = line.rstrip("\n").split("\t")
    n = int(size)
    print(f"| {n:,} | {layer} | {int(heap) / 2**20:.0f} | {int(index) / 2**20:.0f} | "
          f"{(int(heap) + int(index)) / n:.0f} |")
PY

if [ -n "$CHART" ] && command -v gnuplot >/dev/null 2>&1; then
	plot=""
	for profile in $PROFILES; do
		for layer in "${LAYER_LIST[@]}"; do
			awk -F'\t' -v p="$profile" -v l="$layer" '$1 == p && $2 == l { print $3, $4 }' \
				"$WORK/curve.dat" >"$WORK/curve-$profile-$layer.dat"
			plot+="${plot:+, }'$WORK/curve-$profile-$layer.dat' using 1:2 with linespoints lw 2"
			plot+=" title '$layer, $profile'"
		done
	done
	gnuplot <<EOF
set terminal pngcairo size 960,540 font 'sans,11' noenhanced
set output '$CHART'
set title "first-time path against live keys, as a share of its tps at the smallest size\n(pgbench -c $CLIENTS, ${DURATION} s runs${SLICE_NOTE}, $ROUNDS round(s))"
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
echo "server: $("$PG_CONFIG" --version); PostgreSQL's defaults (fsync, synchronous_commit, full_page_writes on) but each profile's settings; pgbench -M prepared -c $CLIENTS -j $CLIENTS -T $DURATION${SLICE_NOTE}, tps averaged after ${WARMUP} s, $ROUNDS round(s)"
