#!/usr/bin/env bash
# bench/profile.sh: where a layer's time goes, by CPU profile of the backend.
#
# Usage: bash bench/profile.sh [WORKLOAD] [LAYER...]
#
# WORKLOAD is first (default), replay or once, as in bench/run.sh; LAYERs are
# among bare, hand, ext and ext_unlogged (default: hand ext).  One throwaway
# server with bench/run.sh's settings; for each layer, pgbench runs the
# workload's script with one client (-M prepared -c 1 -j 1 -T DURATION) while
# perf samples the one backend serving it (software event cpu-clock, call
# graphs by DWARF unwinding; see CALLGRAPH below).  Before that, the same run without perf
# measures the tps and the backend's CPU time per call (utime + stime from
# /proc over pgbench's transactions), since sampling slows the backend (on this
# VM, 4999 samples a second double its CPU time per call, user and system
# alike).  Printed per layer: both tps, the CPU time per call, the share of
# each DSO and the top functions by self time; at the end, a table of the
# samples grouped by subsystem for all the layers side by side, as a share of
# the samples and as microseconds per call (that share of the CPU time per
# call measured without perf).
#
# The buckets: each sample goes to the innermost frame of its call chain that
# names a known subsystem (XLogInsert..., heap_*, _bt_*, ReadBuffer..., palloc,
# ...; plpgsql.so and idempotency.so by DSO): a memcpy called by
# XLogInsertRecord counts as WAL, a palloc called by heap_insert as memory.
# Frames that name none (dynahash, libc, the kernel, PostgreSQL's static
# functions, which Debian's stripped binary has no symbol for) pass the sample
# on to their caller.  Time in the kernel gets a row of its own, "BUCKET
# [kernel]", where it reaches 0.5% in some layer.  In the top functions, the
# kernel is labelled by the user-space function that entered it and a function
# without a symbol by its nearest named caller.
#
# Needs perf (package linux-perf) and root (or perf_event_paranoid <= 0).
# Environment: DURATION (10), FREQ (4999 samples per second), KEYS (100000
# completed keys per layer for replay), TOP (25 functions per layer),
# CALLGRAPH (dwarf: 8 KB of stack per sample, some 300 MB of perf.data per
# layer at 10 s, in the throwaway directory; fp works too, as Debian builds
# PostgreSQL and PGXS this extension with -fno-omit-frame-pointer, but it loses
# the callers of libc's and OpenSSL's frameless functions, so that a share of
# OpenSSL's sha256 under idem_begin counts as the extension's own code),
# BASELINE=0 to skip the runs without perf, PERF_REPORT=1 to print perf report's own flat profile too,
# PERF_OUT=DIR to keep the perf.data files there.
set -euo pipefail

WORKLOAD=${1:-first}
[ $# -gt 0 ] && shift
LAYERS=("$@")
[ ${#LAYERS[@]} -eq 0 ] && LAYERS=(hand ext)
DURATION=${DURATION:-10}
FREQ=${FREQ:-4999}
KEYS=${KEYS:-100000}
TOP=${TOP:-25}
CALLGRAPH=${CALLGRAPH:-dwarf}
BASELINE=${BASELINE:-1}

case "$WORKLOAD" in
	first | replay | once) ;;
	*)
		echo "usage: bash bench/profile.sh [first|replay|once] [bare|hand|ext|ext_unlogged ...]" >&2
		exit 2
		;;
esac
for layer in "${LAYERS[@]}"; do
	case "$layer" in
		bare | hand | ext | ext_unlogged) ;;
		*)
			echo "profile: unknown layer $layer (bare, hand, ext, ext_unlogged)" >&2
			exit 2
			;;
	esac
done
PERF=$(command -v perf || true)
if [ -z "$PERF" ] || ! "$PERF" version >/dev/null 2>&1; then
	echo "profile: perf is missing (apt-get install linux-perf)" >&2
	exit 1
fi

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_server profile
bench_settings
cluster_start

for db in bench_logged bench_unlogged; do
	psql_q -d postgres -c "CREATE DATABASE $db"
	psql_q -d "$db" -f "$WORK/tree/bench/layers.sql" >/dev/null
done
psql_q -d bench_unlogged -c "SELECT idem_set_logged(false)" >/dev/null

# db_of LAYER, fn_of LAYER: where a layer runs and the suffix of its functions
db_of() { if [ "$1" = ext_unlogged ]; then echo bench_unlogged; else echo bench_logged; fi; }
fn_of() { if [ "$1" = ext_unlogged ]; then echo ext; else echo "$1"; fi; }

if [ "$WORKLOAD" = replay ]; then
	echo "profile: loading $KEYS completed keys per layer"
	for layer in "${LAYERS[@]}"; do
		[ "$layer" = bare ] && continue   # bare has nothing to replay
		psql_q -d "$(db_of "$layer")" -c "SELECT count(pay_$(fn_of "$layer")('r-' || i, 100))
		                                  FROM generate_series(1, $KEYS) i" >/dev/null
	done
	for db in bench_logged bench_unlogged; do
		psql_q -d "$db" -c "VACUUM ANALYZE" >/dev/null
	done
fi

# pgbench scripts, the same as bench/run.sh's
SCRIPTS=$WORK/scripts
bench_scripts "$SCRIPTS" "$KEYS"

PROF=$WORK/perf
mkdir -p "$PROF"

# The backend serving pgbench's client: pgbench first opens a setup connection
# and closes it, then connects its client, so wait for the connection that runs
# the workload's function (pg_stat_activity.query keeps the last statement).
find_backend() {
	local db=$1 i pid
	for ((i = 0; i < 400; i++)); do
		pid=$(psql_v -d postgres -c "SELECT pid FROM pg_stat_activity
		                             WHERE application_name = 'pgbench' AND datname = '$db'
		                               AND backend_type = 'client backend'
		                               AND query ~ '(pay|consume)_' LIMIT 1" 2>/dev/null || true)
		if [ -n "$pid" ]; then
			echo "$pid"
			return 0
		fi
		sleep 0.05
	done
	return 1
}

# cpu_ticks PID: the process's user and system CPU time so far, in clock ticks
cpu_ticks() {
	local -a st
	{ read -r -a st <"/proc/$1/stat"; } 2>/dev/null || return 1
	echo "${st[13]} ${st[14]}"
}

# run_one LAYER MODE: pgbench for DURATION seconds, MODE perf under perf, MODE
# plain without.  Leaves in $PROF/LAYER.MODE: tps, transactions, the backend's
# pid and its user and system CPU time over its life in clock ticks (read from
# /proc until it exits, so within 50 ms of the end); MODE perf also leaves
# $PROF/LAYER.data and the call chains in $PROF/LAYER.script.
run_one() {
	local layer=$1 mode=$2 db fn pgb pid perfpid=0 ticks="" t
	db=$(db_of "$layer")
	fn=$(fn_of "$layer")
	psql_q -d "$db" -c "CHECKPOINT" >/dev/null
	cluster_as_user pgbench -n -M prepared -c 1 -j 1 -T "$DURATION" \
		-f "$SCRIPTS/${WORKLOAD}_${fn}.sql" "$db" >"$PROF/$layer.$mode.pgbench" 2>&1 &
	pgb=$!
	if ! pid=$(find_backend "$db"); then
		wait "$pgb" || true
		cat "$PROF/$layer.$mode.pgbench" >&2
		echo "profile: did not find the backend serving pgbench" >&2
		return 1
	fi
	if [ "$mode" = perf ]; then
		# perf stops by itself when the backend exits at the end of the run
		"$PERF" record -e cpu-clock -F "$FREQ" --call-graph="$CALLGRAPH" -p "$pid" \
			-o "$PROF/$layer.data" >"$PROF/$layer.perf.log" 2>&1 &
		perfpid=$!
	fi
	while t=$(cpu_ticks "$pid"); do
		ticks=$t
		sleep 0.05
	done
	if ! wait "$pgb"; then
		cat "$PROF/$layer.$mode.pgbench" >&2
		echo "profile: pgbench failed" >&2
		[ "$perfpid" -ne 0 ] && { kill -INT "$perfpid" 2>/dev/null || true; wait "$perfpid" || true; }
		return 1
	fi
	printf '%s %s %s %s\n' \
		"$(awk '/^tps = / { print $3 }' "$PROF/$layer.$mode.pgbench")" \
		"$(awk '/^number of transactions actually processed:/ { print $NF }' "$PROF/$layer.$mode.pgbench")" \
		"$pid" "$ticks" >"$PROF/$layer.$mode"
	[ "$mode" = perf ] || return 0

	# the backend is gone; perf follows it out
	for ((t = 0; t < 100; t++)); do
		kill -0 "$perfpid" 2>/dev/null || break
		sleep 0.1
	done
	kill -INT "$perfpid" 2>/dev/null || true
	wait "$perfpid" || true
	if [ ! -s "$PROF/$layer.data" ]; then
		cat "$PROF/$layer.perf.log" >&2
		echo "profile: perf recorded nothing" >&2
		return 1
	fi
	# the call chains, innermost frame first, for the analysis below
	"$PERF" script -i "$PROF/$layer.data" -F time,period,ip,sym,dso --no-inline \
		>"$PROF/$layer.script" 2>/dev/null
}

for layer in "${LAYERS[@]}"; do
	if [ "$BASELINE" = 1 ]; then
		echo "profile: $WORKLOAD $layer: pgbench -c 1 for ${DURATION}s without perf"
		run_one "$layer" plain
	fi
	echo "profile: $WORKLOAD $layer: pgbench -c 1 for ${DURATION}s under perf"
	run_one "$layer" perf
done

# The report: per layer, the DSO shares and the top functions; then the
# buckets of all the layers side by side.
cat >"$PROF/analyze.py" <<'PYEOF'
# Arguments: TOP WORKLOAD CLK_TCK LAYER:PREFIX...  For each layer, PREFIX.script
# is `perf script -F time,period,ip,sym,dso` output (call chains, innermost
# frame first), PREFIX.perf and PREFIX.plain (when there was a run without
# perf) hold "tps transactions pid utime stime" of pgbench's run and of its
# backend.  Prints per layer the DSO shares and the top functions by self
# time, then the buckets of all the layers side by side.
import collections, os, re, sys

top = int(sys.argv[1])
workload = sys.argv[2]
clk_tck = float(sys.argv[3])
layers = []  # (name, prefix)
for arg in sys.argv[4:]:
    name, prefix = arg.split(":", 1)
    layers.append((name, prefix))

def run_info(path):
    """tps, backend CPU us per transaction (from /proc), its system share"""
    if not os.path.exists(path):
        return None
    tps, xacts, pid, utime, stime = open(path).read().split()
    cpu = (int(utime) + int(stime)) / clk_tck
    return {"tps": float(tps), "pid": pid,
            "us": cpu / max(int(xacts), 1) * 1e6,
            "sys": int(stime) / max(int(utime) + int(stime), 1)}

# (pattern, bucket), first match wins; a frame is tried against all of them,
# then the next frame out.  Frames that match nothing (dynahash, libc, the
# kernel, functions without a symbol) pass the sample on to their caller.
RULES = [
    (r"^(XLog|XactLog|log_heap|log_newpage|CopyXLog|ReserveXLog|WALInsert|GetXLogBuffer"
     r"|AdvanceXLInsert|WaitXLogInsertions|pg_comp_crc32c)", "WAL (XLogInsert, records, CRC)"),
    (r"^heap_(form|deform|copy|modify|getattr|attisnull|freetuple|compute_data_size|fill"
     r"|expand|copy_tuple_as_datum)|^(ExecFetch|ExecStore|ExecCopySlot|MakeTupleTableSlot|slot_|tts_"
     r"|CreateTupleDesc|CreateTemplateTupleDesc|TupleDescInitEntry|FreeTupleDesc|BlessTupleDesc"
     r"|lookup_rowtype_tupdesc|assign_record_type_typmod)",
     "executor (ExecutorStart/Run/End, exprs, slots)"),
    (r"^(heap_|heapam_|RelationGetBufferForTuple|RelationPutHeapTuple|HeapTuple|simple_heap_"
     r"|index_fetch_heap|GetPageWithFreeSpace|RecordPageWithFreeSpace|RecordAndGetPageWithFreeSpace"
     r"|fsm_|visibilitymap_|table_tuple|toast_|MultiXactIdSetOldestMember)", "heap (insert, update, fetch, prune)"),
    (r"^(_bt|bt[a-z]+$|index_|ExecInsertIndexTuples|ExecCheckIndexConstraints|check_exclusion"
     r"|FormIndexDatum|ExecOpenIndices|ExecCloseIndices|BuildIndexInfo)", "btree / index AM"),
    (r"^(ReadBuffer|ReleaseBuffer|UnlockReleaseBuffer|LockBuffer|ConditionalLockBuffer"
     r"|MarkBufferDirty|BufTable|PinBuffer|UnpinBuffer|IncrBufferRefCount|BufferGet|StrategyGetBuffer"
     r"|BufferIsPermanent|Page[A-Z]|smgr|md[a-z]+$|RelationGetNumberOfBlocks|ExtendBufferedRel"
     r"|LockRelationForExtension|UnlockRelationForExtension)", "buffers, pages, storage"),
    (r"^(LWLock|LockAcquire|LockRelease|LockRelation|UnlockRelation|LockRelid|XactLockTable"
     r"|ConditionalXactLockTable|LockTuple|SpeculativeInsertion|s_lock|LockCheckConflicts|GrantLock"
     r"|FastPath|LockHeldByMe|LockTagHashCode|VirtualXactLock|ConditionalLockRelation)",
     "locks (LWLock, heavyweight)"),
    (r"^(AllocSet|MemoryContext|palloc|pfree|repalloc|pstrdup|pnstrdup|psprintf|Generation|Slab"
     r"|GetMemoryChunk)", "memory (palloc, contexts)"),
    (r"^(exec_bind_message|exec_execute_message|exec_parse_message|exec_describe|pq_|secure_read"
     r"|secure_write|internal_flush|WaitEventSet|WaitLatchOrSocket|ProcessClient|printtup"
     r"|SendRowDescription|EndCommand|ReadyForQuery|Portal|CreatePortal|pgstat_report_activity"
     r"|set_ps_display|BeginCommand|CreateDestReceiver|ReadCommand|SocketBackend|PostgresMain"
     r"|GetCommandTagName|FetchPreparedStatement|makeParamList|pg_client_to_server"
     r"|SetCurrentStatementStartTimestamp|PostmasterMain)", "client protocol, portal, socket I/O"),
    (r"^(CommitTransaction|StartTransaction|AbortTransaction|RecordTransactionCommit|ProcArrayEndTransaction"
     r"|AtEOXact_|AtCommit_|AtStart_|AtEOSubXact|AtSubCommit|AtSubAbort|CallXactCallbacks"
     r"|CallSubXactCallbacks|GetNewTransactionId|AssignTransactionId|TransactionId|TransactionLog"
     r"|ExtendCLOG|ExtendSUBTRANS|SimpleLru|GetSnapshotData|GetTransactionSnapshot|GetLatestSnapshot"
     r"|GetActiveSnapshot|RegisterSnapshot|UnregisterSnapshot|PushActiveSnapshot|PushCopiedSnapshot"
     r"|PopActiveSnapshot|CopySnapshot|SnapshotReset|InvalidateCatalogSnapshot|PreCommit_|SetLatch"
     r"|CommandCounterIncrement|BeginInternalSubTransaction|ReleaseCurrentSubTransaction"
     r"|RollbackAndReleaseCurrentSubTransaction|pgstat_|finish_xact_command|start_xact_command"
     r"|GetCurrentTransaction|GetTopTransaction|xactGetCommittedChildren|XidInMVCCSnapshot"
     r"|TransactionIdIsInProgress|TransactionIdDidCommit|AtCCI_)", "transaction, snapshot, commit"),
    (r"^(SearchCatCache|SearchSysCache|SysCache|ReleaseCatCache|ReleaseSysCache|GetSysCache"
     r"|RelationIdGetRelation|RelationClose|RelationIncrementReferenceCount|RelationDecrementReferenceCount"
     r"|relation_open|relation_close|table_open|table_close|try_relation_open|RelationBuild"
     r"|RelationGetIndexList|RelationGetPrimaryKeyIndex|RelationGetIndexAttrBitmap|CopyTriggerDesc|lookup_type_cache|get_[a-z_]+$|getTypeOutputInfo|getTypeInputInfo"
     r"|getBaseType|fmgr_info|FuncnameGetCandidates|RangeVarGetRelid|AcceptInvalidationMessages"
     r"|ReceiveSharedInvalidMessages|SIGetDataEntries|LocalExecuteInvalidationMessage"
     r"|CatalogCache|InvalidateSystemCaches|check_enable_rls|pg_class_aclcheck|pg_proc_aclcheck"
     r"|object_aclcheck|pg_[a-z]+_aclmask|has_privs_of_role|superuser)", "catalog caches, ACL checks"),
    (r"^(SPI_|_SPI|spi_|GetCachedPlan|ReleaseCachedPlan|CheckCachedPlan|RevalidateCachedQuery"
     r"|CachedPlan|BuildCachedPlan|choose_custom_plan|cached_plan_cost|CompleteCachedPlan"
     r"|CreateCachedPlan|SaveCachedPlan|pg_plan|planner|standard_planner|subquery_planner"
     r"|grouping_planner|query_planner|create_[a-z_]+$|make_one_rel|set_base_rel|build_simple_rel"
     r"|eval_const_expressions|estimate_|clauselist_selectivity|cost_|add_path|preprocess_"
     r"|setrefs|set_plan_references|AcquireExecutorLocks|AcquirePlannerLocks|ScanQueryForLocks"
     r"|pg_analyze|parse_analyze|transform|raw_parser|base_yyparse|copyObject|equal$)",
     "SPI, plan cache, planner"),
    (r"^(Exec|standard_Executor|Executor|CreateExecutorState|FreeExecutorState|InitPlan|InitResultRelInfo"
     r"|CheckValidResultRel|ExprEvalPushStep|exprType|exprTypmod|exprCollation|expression_tree"
     r"|ExecEval|EvalPlanQual|CreateExprContext|FreeExprContext|ReScanExprContext|ExecAssign"
     r"|MakeSingleTupleTableSlot|table_slot|AfterTrigger|GetUserIdAndSecContext)",
     "executor (ExecutorStart/Run/End, exprs, slots)"),
    (r"^(plpgsql_|exec_stmt|exec_eval|exec_assign|exec_run_select|exec_prepare_plan|exec_move_row"
     r"|exec_toplevel_block|make_expanded_record|expanded_record|ER_|DatumGetEOHP|EOH_)",
     "PL/pgSQL interpreter, records"),
    (r"^(jsonb|Jsonb|pushJsonbValue|convertJsonb|compareJsonb|findJsonb|fillJsonbValue|getJsonb"
     r"|JsonbIterator|JsonbValue|uniqueifyJsonbObject|convertToJsonb|datum_to_jsonb|add_jsonb"
     r"|to_jsonb|escape_json|json_|sha256|pg_sha256|pg_cryptohash|EVP_|SHA256|sha256_block"
     r"|encode|hex_encode|binary_encode|convert_to|pg_convert|cstring_to_text|text_to_cstring"
     r"|textin|textout|textcat|text_catenate|textlen|int4out|int8out|int4in|int8in|timestamptz"
     r"|GetCurrentTimestamp|now$|interval_|timestamp_|numeric|uuid|array_|construct_array"
     r"|deconstruct_array|byteaout|byteain|OutputFunctionCall|InputFunctionCall|DirectFunctionCall"
     r"|OidOutputFunctionCall|OidInputFunctionCall|pg_detoast|detoast|heap_tuple_untoast)",
     "jsonb, sha256, text, timestamps (builtins)"),
]
RULES = [(re.compile(p), b) for p, b in RULES]
DSO_BUCKETS = {
    "idempotency.so": "idempotency.so (own code)",
    "plpgsql.so": "PL/pgSQL interpreter, records",
    "libcrypto.so.3": "jsonb, sha256, text, timestamps (builtins)",
}
BUCKET_ORDER = []
for _, b in RULES:
    if b not in BUCKET_ORDER:
        BUCKET_ORDER.append(b)
BUCKET_ORDER.insert(BUCKET_ORDER.index("PL/pgSQL interpreter, records") + 1, "idempotency.so (own code)")
BUCKET_ORDER.append("libc, caller lost (malloc, free, locks)")
BUCKET_ORDER.append("other")

def short_dso(dso):
    base = os.path.basename(dso.strip("()"))
    if base == "[kernel.kallsyms]" or base.startswith("[kernel"):
        return "kernel"
    return base

def dso_group(d):
    if d in ("postgres", "kernel", "idempotency.so", "plpgsql.so"):
        return d
    if d.startswith("libc.so") or d.startswith("ld-linux"):
        return "libc"
    if d.startswith("libcrypto"):
        return "libcrypto"
    return "other"

frame_re = re.compile(r"^\s*([0-9a-f]+)\s+(.*?)\s+\(([^()]*)\)\s*$")
cache = {}

def bucket_of(frames):
    for sym, dso in frames:
        key = (sym, dso)
        b = cache.get(key)
        if b is None:
            b = ""
            if dso in DSO_BUCKETS:
                b = DSO_BUCKETS[dso]
            elif dso == "postgres" and sym != "[unknown]":
                s = re.sub(r"\+0x[0-9a-f]+$", "", sym)
                for rx, name in RULES:
                    if rx.search(s):
                        b = name
                        break
            cache[key] = b
        if b:
            return b
    user = [d for _, d in frames if d != "kernel"]
    if user and dso_group(user[0]) == "libc" and len(user) <= 2:
        return "libc, caller lost (malloc, free, locks)"
    return "other"

def leaf_label(frames):
    sym, dso = frames[0]
    if dso == "kernel":
        for s, d in frames[1:]:
            if d != "kernel":
                return f"[k] kernel, called from {s if s != '[unknown]' else d}"
        return "[k] kernel"
    if sym == "[unknown]":
        for s, d in frames[1:]:
            if s != "[unknown]":
                return f"{dso}: static fn called from {s}"
        return f"{dso}: [unknown]"
    return f"{dso}: {sym}"

def read(path):
    samples = []  # (period, frames)
    t0 = t1 = None
    period, frames = None, []
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                if period is not None and frames:
                    samples.append((period, frames))
                period, frames = None, []
                continue
            if line[0] not in " \t":
                head = line.split()
                t = float(head[0].rstrip(":"))
                t0 = t if t0 is None else t0
                t1 = t
                period = int(head[1]) if len(head) > 1 else 0
                frames = []
                continue
            m = frame_re.match(line)
            if m:
                frames.append((re.sub(r"\+0x[0-9a-f]+$", "", m.group(2)), short_dso(m.group(3))))
    if period is not None and frames:
        samples.append((period, frames))
    return samples, (t1 - t0) if t0 is not None else 0.0

results = {}
scaled = all(os.path.exists(prefix + ".plain") for _, prefix in layers)
for name, prefix in layers:
    under, plain = run_info(prefix + ".perf"), run_info(prefix + ".plain")
    samples, span = read(prefix + ".script")
    total = sum(p for p, _ in samples) or 1
    # microseconds per call: the share of the samples times the backend's CPU
    # time per call without perf where measured, else under perf
    unit = (plain or under)["us"] if scaled else under["us"]
    dsos = collections.Counter()
    leaves = collections.Counter()
    buckets = collections.Counter()
    kernel_by_bucket = collections.Counter()
    for p, frames in samples:
        g = dso_group(frames[0][1])
        dsos[g] += p
        leaves[leaf_label(frames)] += p
        b = bucket_of(frames)
        if g == "kernel":
            kernel_by_bucket[b] += p
            b += " [kernel]"
        buckets[b] += p
    results[name] = (total, buckets, unit, under, plain, kernel_by_bucket)
    print()
    print(f"=== {workload} / {name}: backend pid {under['pid']}, {len(samples)} samples over {span:.1f} s")
    if plain:
        print(f"without perf: {plain['tps']:.0f} tps, backend CPU {plain['us']:.1f} us per call "
              f"({plain['sys'] * 100:.0f}% of it system time)")
    print(f"under perf:   {under['tps']:.0f} tps, backend CPU {under['us']:.1f} us per call "
          f"({under['sys'] * 100:.0f}% of it system time); "
          f"backend on CPU {total / 1e9 / span * 100 if span else 0:.0f}% of the time")
    print("by DSO: " + ", ".join(f"{d} {dsos[d] / total * 100:.1f}%"
                                  for d in ["postgres", "kernel", "libc", "plpgsql.so", "idempotency.so",
                                            "libcrypto", "other"] if dsos[d]))
    print(f"top {top} by self time: % of samples, us per call{' (scaled to the run without perf)' if scaled else ''}")
    for label, p in leaves.most_common(top):
        print(f"  {p / total * 100:5.1f}%  {p / total * unit:6.2f} us  {label}")

names = [l[0] for l in layers]
print()
print(f"### {workload}: backend CPU by subsystem (innermost matching frame): share of the samples, and us per call"
      + (" (the share times the backend's CPU per call without perf)" if scaled else " (under perf)"))
print()
print("| bucket | " + " | ".join(f"{n} %" for n in names) + " | " + " | ".join(f"{n} us" for n in names) + " |")
print("|---|" + "---:|" * (2 * len(names)))
# kernel time apart where it is at least 0.5% in some layer; else with its bucket
for b in BUCKET_ORDER:
    k = b + " [kernel]"
    if all(results[n][1][k] < 0.005 * results[n][0] for n in names):
        for n in names:
            results[n][1][b] += results[n][1].pop(k, 0)
for b in [x for b in BUCKET_ORDER for x in (b, b + " [kernel]")]:
    if not any(results[n][1][b] for n in names):
        continue
    row = [f"{results[n][1][b] / results[n][0] * 100:.1f}" for n in names]
    row += [f"{results[n][1][b] / results[n][0] * results[n][2]:.2f}" for n in names]
    print(f"| {b} | " + " | ".join(row) + " |")

def line(label, left, right):
    print(f"| {label} | " + " | ".join(left) + " | " + " | ".join(right) + " |")

blank = ["" for n in names]
line("**total**", ["100.0" for n in names], [f"**{results[n][2]:.2f}**" for n in names])
line("(of which in the kernel)",
     [f"{sum(results[n][5].values()) / results[n][0] * 100:.1f}" for n in names],
     [f"{sum(results[n][5].values()) / results[n][0] * results[n][2]:.2f}" for n in names])
if scaled:
    line("tps without perf (pgbench -c 1)", [f"{results[n][4]['tps']:.0f}" for n in names], blank)
line("tps under perf", [f"{results[n][3]['tps']:.0f}" for n in names], blank)
if scaled:
    line("backend CPU us per call, without perf / under perf", blank,
         [f"{results[n][4]['us']:.1f} / {results[n][3]['us']:.1f}" for n in names])
PYEOF

args=()
for layer in "${LAYERS[@]}"; do
	args+=("$layer:$PROF/$layer")
	if [ "${PERF_REPORT:-0}" = 1 ]; then
		echo
		echo "--- perf report for $layer (self time, top $TOP) ---"
		"$PERF" report -i "$PROF/$layer.data" --stdio --no-children --sort dso,symbol -g none \
			2>/dev/null | grep -v -e '^#' -e '^$' | head -n "$TOP" || true
	fi
done
python3 "$PROF/analyze.py" "$TOP" "$WORKLOAD" "$(getconf CLK_TCK)" "${args[@]}"
if [ -n "${PERF_OUT:-}" ]; then
	mkdir -p "$PERF_OUT"
	for layer in "${LAYERS[@]}"; do
		cp "$PROF/$layer.data" "$PERF_OUT/$WORKLOAD-$layer.perf.data"
	done
	echo "profile: perf data kept in $PERF_OUT (perf report -i FILE)"
fi
echo
echo "machine: $(nproc) cores, $(uname -sr); server: $("$PG_CONFIG" --version); synchronous_commit=off, shared_buffers=1GB"
echo "pgbench -n -M prepared -c 1 -j 1 -T $DURATION; perf record -e cpu-clock -F $FREQ --call-graph=$CALLGRAPH -p BACKEND"
