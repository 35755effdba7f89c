#!/usr/bin/env bash
# bench/sweep.sh: how fast the sweeper removes expired keys, and what a sweep
# costs the callers of idem_begin meanwhile.
#
# Usage: bash bench/sweep.sh
#
# One throwaway server with the library preloaded.  Each round:
#   1. KEYS expired keys wait; sweeping on; the launcher's sweeper removes them
#      with nothing else running: "sweep alone", in keys per second;
#   2. KEYS expired keys wait, sweeping off: pgbench runs the foreground
#      workload for DURATION seconds: "no sweep";
#   3. the same, with sweeping turned on as pgbench starts: the foreground
#      throughput is measured over the seconds the sweep lasted ("during a
#      sweep"), and the sweep's own rate under that load.
# The foreground workload is one job per pgbench transaction: idem_begin of a
# fresh key, then idem_finish, each in its own transaction, as a worker would.
#
# Environment: KEYS (1000000), BATCH (idempotency.sweep_batch_size, 10000),
# CLIENTS (2), DURATION (20), ROUNDS (3).
set -euo pipefail

KEYS=${KEYS:-1000000}
BATCH=${BATCH:-10000}
CLIENTS=${CLIENTS:-2}
DURATION=${DURATION:-20}
ROUNDS=${ROUNDS:-3}

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLUSTER_PRELOAD=idempotency bench_server bench-sweep
bench_settings
cat >>"$CLUSTER_DATA/postgresql.conf" <<EOF
idempotency.sweep_interval = 0
idempotency.sweep_batch_size = $BATCH
EOF
cluster_start


psql_q -d postgres -c "CREATE DATABASE bench"
psql_q -d bench -c "CREATE EXTENSION idempotency"

CLOCK=0
set_conf() {
	psql_q -d postgres -c "ALTER SYSTEM SET $1 = '$2'" -c "SELECT pg_reload_conf()" >/dev/null
}

# KEYS keys with a one-hour ttl, then the clock moves past it
fill_expired() {
	psql_q -d bench -c "SELECT count(*) FROM generate_series(1, $KEYS) g
	                    WHERE idem_once('x$1-' || g, ttl => '1 hour')" >/dev/null
	CLOCK=$((CLOCK + 2))
	set_conf idempotency.clock_offset "$CLOCK hours"
	psql_q -d bench -c "VACUUM ANALYZE idem_ledger" -c "CHECKPOINT" >/dev/null
}

# Wait until a pass that started after $1 (epoch) is over; prints
# "removed start finish" (epochs) of that pass
wait_for_pass() {
	local since=$1 row
	while :; do
		# The status counts the ledger: ask for it only while no sweeper works
		if [ "$(psql_v -d bench -c "SELECT count(*) FROM pg_stat_activity
		                              WHERE backend_type = 'idempotency sweeper'")" != 0 ]; then
			sleep 0.2
			continue
		fi
		row=$(psql_v -d bench -F ' ' -c "
			SELECT removed_last_pass, extract(epoch FROM last_pass_started),
			       extract(epoch FROM last_pass_finished)
			  FROM idem_sweeper_status()
			 WHERE datname = 'bench' AND last_pass_started >= to_timestamp($since)
			   AND last_pass_finished >= last_pass_started
			   AND state <> 'sweeping'")
		if [ -n "$row" ]; then
			echo "$row"
			return
		fi
		sleep 0.5
	done
}

now() { date +%s.%N; }

SCRIPT=$WORK/foreground.sql
cat >"$SCRIPT" <<'EOF'
\set k random(1, 1000000000000)
SELECT idem_begin('fg-' || :client_id || '-' || :k);
SELECT idem_finish('fg-' || :client_id || '-' || :k, '{"ok": true}');
EOF
chmod a+r "$SCRIPT"
chmod 777 "$WORK"

# pgbench with one log line per second: "epoch transactions latency_sum ..."
run_pgbench() {
	local tag=$1
	(cd "$WORK" && cluster_as_user pgbench -n -M prepared -c "$CLIENTS" -j "$CLIENTS" \
		-T "$DURATION" -l --aggregate-interval=1 --log-prefix="$tag" \
		-f "$SCRIPT" bench >/dev/null 2>&1)
	cat "$WORK/$tag".* | sort -n >"$WORK/$tag.log"
	rm -f "$WORK/$tag".[0-9]*
}

# tps and longest latency (ms) over the whole seconds of a pgbench log that lie
# within [from, to]; the whole log when from and to are empty
window() {
	awk -v from="${2:-0}" -v to="${3:-1e12}" '
		{ t[$1] += $2; if ($6 > m[$1]) m[$1] = $6 }
		END {
			for (s in t) if (s + 0 >= from && s + 1 <= to) { n++; sum += t[s]; if (m[s] > max) max = m[s] }
			if (n) printf "%.0f %.1f %d\n", sum / n, max / 1000, n; else print "- - 0"
		}' "$1"
}

RESULTS=$WORK/results.tsv
: >"$RESULTS"
for ((round = 1; round <= ROUNDS; round++)); do
	# 1. the sweep alone
	fill_expired "a$round"
	t=$(now)
	set_conf idempotency.sweep_interval 1s
	read -r removed start finish <<<"$(wait_for_pass "$t")"
	alone=$(awk -v n="$removed" -v s="$start" -v f="$finish" 'BEGIN { printf "%.0f", n / (f - s) }')
	set_conf idempotency.sweep_interval 0

	# 2. the foreground, expired keys waiting, no sweep
	fill_expired "b$round"
	run_pgbench "off$round"
	read -r tps_off max_off _ <<<"$(window "$WORK/off$round.log")"

	# 3. the foreground while those keys are swept
	t=$(now)
	set_conf idempotency.sweep_interval 1s
	run_pgbench "on$round" &
	bench_pid=$!
	read -r removed start finish <<<"$(wait_for_pass "$t")"
	set_conf idempotency.sweep_interval 0
	wait "$bench_pid"
	loaded=$(awk -v n="$removed" -v s="$start" -v f="$finish" 'BEGIN { printf "%.0f", n / (f - s) }')
	read -r tps_on max_on secs <<<"$(window "$WORK/on$round.log" "$start" "$finish")"

	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$alone" "$loaded" \
		"$tps_off" "$tps_on" "$max_off" "$max_on" "$secs" >>"$RESULTS"
	printf 'bench: round %d: sweep alone %s keys/s, under load %s keys/s; foreground %s tps without, %s tps during the sweep (%s s)\n' \
		"$round" "$alone" "$loaded" "$tps_off" "$tps_on" "$secs"
done

python3 - "$RESULTS" <<'EOF'
import statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
def med(i):
    vals = [float(r[i]) for r in rows if r[i] != "-"]
    return statistics.median(vals) if vals else float("nan")
print()
print("| | keys/s | foreground tps | foreground longest latency (ms) |")
print("|---|---:|---:|---:|")
print(f"| no sweep | | {med(3):.0f} | {med(5):.1f} |")
print(f"| during a sweep | {med(2):.0f} | {med(4):.0f} ({med(4) / med(3):.2f}x) | {med(6):.1f} |")
print(f"| sweep alone | {med(1):.0f} | | |")
EOF
echo
echo "machine: $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
echo "server: $("$PG_CONFIG" --version); fsync=on, synchronous_commit=off, shared_buffers=1GB; sweep_batch_size=$BATCH"
echo "sweep: $KEYS expired keys; foreground: pgbench -M prepared -c $CLIENTS -j $CLIENTS -T $DURATION, idem_begin + idem_finish of fresh keys; $ROUNDS rounds, medians"
