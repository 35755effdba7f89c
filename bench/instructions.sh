#!/usr/bin/env bash
# bench/instructions.sh: the layers' cost per call in instructions, counted by
# valgrind's callgrind: a figure that a noisy machine does not move.
#
# Usage: bash bench/instructions.sh
#
# Layers and workloads as in bench/run.sh (bench/layers.sql): bare, hand, ext,
# ext_unlogged (ext in a second database after idem_set_logged(false)); first
# (a payment with a fresh key), replay (a key that completed before), once
# (consumer de-duplication of a fresh message id).
#
# Method.  One throwaway server with bench/run.sh's settings whose postmaster
# runs under valgrind --tool=callgrind, so that every process it forks (each
# client backend too) is a callgrind run of its own, with its own profile
# file.  They all start with instrumentation off (--instr-atstart=no): they
# run at valgrind's base speed and count nothing.  For each (workload, layer)
# pair, one pgbench session (-M prepared -c 1 -t WARMUP+CALLS+1, as
# bench/run.sh runs its clients: one call per transaction, prepared) makes
# WARMUP calls, then CALLS measured ones, then one more.  The measurement is
# switched by the backend itself, through callgrind's client requests in a
# tiny C function cg(int) that the script compiles (against
# valgrind/callgrind.h) and creates in each database: right before the first
# measured call the session runs SELECT cg(1), which turns the backend's
# instrumentation on and zeroes its counters; right after the last one it
# runs SELECT cg(2), which dumps the profile (callgrind.out.PID.1) and turns
# the instrumentation off.  (callgrind_control cannot do it from outside:
# vgdb's FIFOs exist in a forked child only with --trace-children=yes, and
# even then vgdb hangs on a backend asleep in its socket read, here.)  The
# session's first transaction runs cg(0), which does nothing, so that cg's
# statement is prepared and the function looked up and loaded during the
# warm-up.  The dump thus holds the CALLS calls and nothing else of the
# session: no backend start, no warm-up (catalog caches, plan caches,
# PL/pgSQL compilation), no exit; the only extra is the end of cg(1)'s
# statement and the start of cg(2)'s (some tens of thousands of
# instructions: a few instructions per call, the same for every layer).
# Instructions per call = the dump's total / CALLS.  Two runs give the same
# table to the last digit shown.
#
# Keys are deterministic and of one length ('f-1000201', ...), the same
# sequence for every layer (each layer has its own ledger): first and once
# use fresh keys, replay the keys 'r-...' that each layer itself completed
# beforehand (WARMUP + CALLS + 1 of them, then VACUUM ANALYZE); bare has nothing
# to replay and just inserts its payment, as in bench/run.sh.  A CHECKPOINT
# precedes each run, as in bench/run.sh, so the runs pay alike for full-page
# images.  The ledgers stay small (a few thousand keys, B-trees of two
# levels), where bench/run.sh's replay runs on 100000 keys.
#
# Printed: instructions per call in thousands for each layer, ext/hand, and
# the idempotency layer's own instructions per call (the layer minus bare) for
# hand and for ext, with their ratio; then, for the first-time path, the
# functions with the most instructions per call in hand or in ext, inclusive
# and self, side by side (callgrind_annotate).  Debian's postgres binary has
# no symbols for its static functions (nor has plpgsql.so): those show as
# addresses, in the self list only (their inclusive cost is in their named
# callers'); callgrind names a function's recursive calls NAME'2.
#
# Needs valgrind (callgrind, callgrind_annotate, valgrind/callgrind.h), a C
# compiler and python3.  Environment: CALLS (2000 measured calls per pair),
# WARMUP (200 calls before them), TOP (15 functions per list), CG_KEEP=DIR to
# copy the callgrind profiles (callgrind.WORKLOAD.LAYER) to DIR.  About a
# minute with the defaults on a 2-core VM.
set -euo pipefail

CALLS=${CALLS:-2000}
WARMUP=${WARMUP:-200}
TOP=${TOP:-15}
CG_KEEP=${CG_KEEP:-}

for tool in valgrind callgrind_annotate cc python3; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "instructions: $tool is missing" >&2
		exit 1
	fi
done

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_server instr
bench_settings
cat >>"$CLUSTER_DATA/postgresql.conf" <<EOF
# under valgrind everything is slow: no timeouts that a slow server would trip
statement_timeout = 0
log_min_messages = warning
EOF

CG=$WORK/callgrind
mkdir -p "$CG"
chown "$CLUSTER_USER:" "$CG"
BINDIR=$("$PG_CONFIG" --bindir)

# cg(0) does nothing; cg(1) turns the instrumentation on and zeroes the
# counters; cg(2) dumps the profile and turns the instrumentation off:
# callgrind's client requests, made by the backend itself, so that no outside
# tool has to stop it (vgdb cannot reach a forked child of the postmaster).
cat >"$WORK/cg.c" <<'EOF'
#include "postgres.h"
#include "fmgr.h"
#include <valgrind/callgrind.h>

PG_MODULE_MAGIC;
PG_FUNCTION_INFO_V1(cg);
Datum
cg(PG_FUNCTION_ARGS)
{
	switch (PG_GETARG_INT32(0))
	{
		case 1:
			CALLGRIND_START_INSTRUMENTATION;
			CALLGRIND_ZERO_STATS;
			break;
		case 2:
			CALLGRIND_DUMP_STATS_AT("measured");
			CALLGRIND_STOP_INSTRUMENTATION;
			break;
	}
	PG_RETURN_VOID();
}
EOF
if [ ! -f /usr/include/valgrind/callgrind.h ]; then
	echo "instructions: valgrind/callgrind.h is missing (apt-get install valgrind)" >&2
	exit 1
fi
cc -O2 -fPIC -shared -I"$("$PG_CONFIG" --includedir-server)" -o "$WORK/cg.so" "$WORK/cg.c"
chmod a+r "$WORK/cg.so"

# The postmaster under callgrind, instrumentation off; every process it forks
# is a callgrind run of its own, with its own profile file.
echo "instructions: starting the server under callgrind (log: $CLUSTER_LOG)"
cluster_as_user valgrind --tool=callgrind --instr-atstart=no --vgdb=no \
	--callgrind-out-file="$CG/callgrind.out.%p" \
	"$BINDIR/postgres" -D "$CLUSTER_DATA" >"$CLUSTER_LOG" 2>&1 &
VG_PID=$!
# shellcheck disable=SC2016 # expanded at exit
cluster_at_exit 'cluster_stop; wait "$VG_PID" 2>/dev/null'
for ((i = 0; i < 300; i++)); do
	cluster_as_user pg_isready -q -d postgres -t 1 && break
	if ! kill -0 "$VG_PID" 2>/dev/null; then
		cluster_log_tail 40
		echo "instructions: the server died while starting" >&2
		exit 1
	fi
	sleep 1
done
if ! cluster_as_user pg_isready -q -d postgres -t 1; then
	echo "instructions: the server did not start within 300s" >&2
	exit 1
fi

for db in bench_logged bench_unlogged; do
	psql_q -d postgres -c "CREATE DATABASE $db"
	psql_q -d "$db" -f "$WORK/tree/bench/layers.sql" >/dev/null
	psql_q -d "$db" -c "CREATE FUNCTION cg(int) RETURNS void AS '$WORK/cg.so' LANGUAGE C STRICT"
done
psql_q -d bench_unlogged -c "SELECT idem_set_logged(false)" >/dev/null

# Completed keys for replay, made through each layer itself
TOTAL=$((WARMUP + CALLS))
echo "instructions: loading $((TOTAL + 1)) completed keys per layer"
for run in "bench_logged hand" "bench_logged ext" "bench_unlogged ext"; do
	read -r db layer <<<"$run"
	psql_q -d "$db" -c "SELECT count(pay_$layer('r-' || (i + 1000000), 100))
	                      FROM generate_series(1, $((TOTAL + 1))) i" >/dev/null
done
for db in bench_logged bench_unlogged; do
	psql_q -d "$db" -c "VACUUM ANALYZE" >/dev/null
done

# pgbench scripts.  :i counts the session's transactions (pgbench keeps a
# client's variables from one transaction to the next), the key is
# 'P-' || 1000000+i.  The first transaction runs cg(0), to have its statement
# prepared and planned and the function looked up and loaded; transaction
# WARMUP+1 runs cg(1) before its call; transaction TOTAL+1 runs cg(2) before
# its call (so its call is not measured).
SCRIPTS=$WORK/scripts
mkdir -p "$SCRIPTS"
for layer in bare hand ext; do
	for workload in first replay once; do
		case $workload in
		first) call="pay_$layer('f-' || :k, 100)" ;;
		replay) call="pay_$layer('r-' || :k, 100)" ;;
		once) call="consume_$layer('m-' || :k)" ;;
		esac
		cat >"$SCRIPTS/${workload}_$layer.sql" <<-EOF
		\\set i :i + 1
		\\set k :i + 1000000
		\\set act -1
		\\if :i = 1
		\\set act 0
		\\elif :i = $((WARMUP + 1))
		\\set act 1
		\\elif :i = $((TOTAL + 1))
		\\set act 2
		\\endif
		\\if :act >= 0
		SELECT cg(:act);
		\\endif
		SELECT $call;
		EOF
	done
done
chmod -R a+r "$SCRIPTS"

# measure WORKLOAD LAYER: prints the instructions of the CALLS measured calls
measure() {
	local workload=$1 layer=$2 db=bench_logged fn=$2 log dump
	if [ "$layer" = ext_unlogged ]; then
		db=bench_unlogged
		fn=ext
	fi
	log=$WORK/$workload.$layer.pgbench
	psql_q -d "$db" -c "CHECKPOINT" >/dev/null
	if ! cluster_as_user pgbench -n -M prepared -c 1 -j 1 -t $((TOTAL + 1)) -D i=0 \
			-f "$SCRIPTS/${workload}_$fn.sql" "$db" >"$log" 2>&1; then
		cat "$log" >&2
		echo "instructions: pgbench failed ($workload, $layer)" >&2
		return 1
	fi
	# the dump is written by the time cg(2) returns: callgrind.out.PID.1
	dump=$(find "$CG" -name 'callgrind.out.*.*' | head -n 1)
	if [ -z "$dump" ]; then
		echo "instructions: no dump of the measured calls ($workload, $layer)" >&2
		return 1
	fi
	mv "$dump" "$CG/callgrind.$workload.$layer"
	awk '/^(summary|totals):/ { print $2; exit }' "$CG/callgrind.$workload.$layer"
}

RESULTS=$WORK/results.tsv
: >"$RESULTS"
for workload in first replay once; do
	for layer in bare hand ext ext_unlogged; do
		ir=$(measure "$workload" "$layer")
		printf '%s\t%s\t%s\n' "$workload" "$layer" "$ir" >>"$RESULTS"
		printf 'instructions: %-6s %-13s %8.1f k instructions per call\n' \
			"$workload" "$layer" "$(awk -v ir="$ir" -v n="$CALLS" 'BEGIN { print ir / n / 1000 }')"
	done
done

# The functions of the first-time path, hand and ext side by side
for kind in inclusive self; do
	incl=no
	[ "$kind" = inclusive ] && incl=yes
	for layer in hand ext; do
		callgrind_annotate --inclusive="$incl" --threshold=100 --auto=no \
			"$CG/callgrind.first.$layer" >"$WORK/annotate.$kind.$layer" 2>&1
	done
done

if [ -n "$CG_KEEP" ]; then
	mkdir -p "$CG_KEEP"
	cp "$CG"/callgrind.first.* "$CG"/callgrind.replay.* "$CG"/callgrind.once.* "$CG_KEEP"/
	echo "instructions: profiles kept in $CG_KEEP"
fi

python3 - "$RESULTS" "$CALLS" "$TOP" "$WORK" <<'EOF'
import re, sys
path, calls, top, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ir = {}
for line in open(path):
    workload, layer, n = line.split("\t")
    ir[(workload, layer)] = int(n) / calls / 1000
layers = ["bare", "hand", "ext", "ext_unlogged"]
print()
print("k instructions per call | " + " | ".join(layers) +
      " | ext/hand | hand−bare | ext−bare | (ext−bare)/(hand−bare) |")
print("|---|" + "---:|" * (len(layers) + 4))
for w in ["first", "replay", "once"]:
    c = {l: ir[(w, l)] for l in layers}
    hb, eb = c["hand"] - c["bare"], c["ext"] - c["bare"]
    ratio = f"{eb / hb:.2f}" if hb > 0 and eb > 0 else "–"
    print(f"| {w} | " + " | ".join(f"{c[l]:.1f}" for l in layers) +
          f" | {c['ext'] / c['hand']:.2f} | {hb:.1f} | {eb:.1f} | {ratio} |")
print()
print("replay: bare makes its payment again, hand and ext return the stored response, so their"
      " minus-bare columns are the replay's cost less one payment insert.")

line_re = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S.*?)\s*$")
def annotate(kind, layer):
    fns = {}
    for line in open(f"{work}/annotate.{kind}.{layer}"):
        m = line_re.match(line)
        if not m or m.group(2) == "PROGRAM TOTALS" or m.group(2).startswith("=>"):
            continue
        name = m.group(2)
        om = re.match(r"^(.*?)\s+\[(.*)\]$", name)
        if om:
            name = f"{om.group(1)} [{om.group(2).rsplit('/', 1)[-1]}]"
        name = re.sub(r"^\S*?:(?=\S)", "", name)  # the file: '???:', './src/ledger.c:'
        fns[name] = fns.get(name, 0) + int(m.group(1).replace(",", "")) / calls / 1000
    return fns
for kind in ["inclusive", "self"]:
    hand, ext = annotate(kind, "hand"), annotate(kind, "ext")
    if kind == "inclusive":
        # named functions only: a static function's inclusive cost is in its named callers
        hand = {n: v for n, v in hand.items() if not n.startswith("0x")}
        ext = {n: v for n, v in ext.items() if not n.startswith("0x")}
    names = sorted(hand, key=hand.get, reverse=True)[:top]
    names += [n for n in sorted(ext, key=ext.get, reverse=True)[:top] if n not in names]
    names.sort(key=lambda n: max(hand.get(n, 0), ext.get(n, 0)), reverse=True)
    print()
    print(f"first, {kind} k instructions per call (top {top} of hand and of ext) | hand | ext | ext−hand |")
    print("|---|---:|---:|---:|")
    for n in names:
        h, e = hand.get(n, 0), ext.get(n, 0)
        print(f"| `{n}` | {h:.1f} | {e:.1f} | {e - h:+.1f} |")
EOF
echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr), $(valgrind --version)"
echo "server: $("$PG_CONFIG" --version); synchronous_commit=off, shared_buffers=1GB; under callgrind; pgbench -M prepared -c 1, one call per transaction, $WARMUP calls of warm-up then $CALLS measured, ledgers of a few thousand keys ($((WARMUP + CALLS + 1)) completed ones for replay), CHECKPOINT before each run"
