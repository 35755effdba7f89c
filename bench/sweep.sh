#!/usr/bin/env bash
# bench/sweep.sh: how fast the sweeper removes expired keys, and what a sweep
# costs the callers of idem_begin meanwhile, at several settings of
# idempotency.sweep_rate_limit, side by side in one run.
#
# Usage: bash bench/sweep.sh
#
# One throwaway server with the library preloaded.  Each round:
#   1. KEYS expired keys wait; the launcher's sweeper removes them, unthrottled
#      (sweep_rate_limit = 0), with nothing else running: "sweep alone", in
#      keys per second;
#   2. for each setting of LIMITS, KEYS expired keys wait and pgbench runs the
#      foreground workload for DURATION seconds; LEAD seconds in, sweeping is
#      turned on with sweep_rate_limit at that setting.  The foreground's
#      throughput is taken over the pass ("during the sweep"), over the VACUUM
#      the sweeper runs after it, and, as what they are compared with, over
#      the seconds of the same run with no sweeper at work (before the pass,
#      and after the sweeper left): on a machine shared with other work, the
#      seconds next to a sweep are the fairest "same run without a sweep".
#      "off" in LIMITS adds a run with no sweep at all.
# The foreground workload is one job per pgbench transaction: idem_begin of a
# fresh key, then idem_finish, each in its own transaction, as a worker would.
# The foreground's throughput second by second, as a share of the same run's
# with no sweeper at work (the mean of the rounds), is drawn with gnuplot into
# bench/sweep_trace.png, time 0 being the start of the pass.
#
# Environment: KEYS (1000000), BATCH (idempotency.sweep_batch_size, 10000),
# LIMITS ("0 100000 50000 25000"; the default setting is 25000), CLIENTS (2),
# DURATION (60), LEAD (8), ROUNDS (3), CHART (bench/sweep_trace.png; empty:
# none).
set -euo pipefail

KEYS=${KEYS:-1000000}
BATCH=${BATCH:-10000}
LIMITS=${LIMITS:-0 100000 50000 25000}
CLIENTS=${CLIENTS:-2}
DURATION=${DURATION:-60}
LEAD=${LEAD:-8}
ROUNDS=${ROUNDS:-3}

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
CHART=${CHART-$ROOT/bench/sweep_trace.png}

CLUSTER_PRELOAD=idempotency bench_server bench-sweep
bench_settings
cat >>"$CLUSTER_DATA/postgresql.conf" <<EOF
idempotency.sweep_interval = 0
idempotency.sweep_batch_size = $BATCH
EOF
cluster_start
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

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

# Turn sweeping on, wait until the pass that starts then is over and the
# sweeper has left (its VACUUM included), and turn sweeping off again; prints
# "removed start finish left" (epochs: pass start and end, sweeper gone)
sweep_once() {
	local since row
	since=$(now)
	set_conf idempotency.sweep_interval 1s
	while :; do
		# The status counts the ledger: ask for it only while no sweeper works
		if [ "$(psql_v -d bench -c "SELECT count(*) FROM pg_stat_activity
		                              WHERE backend_type = 'idempotency sweeper'")" != 0 ]; then
			sleep 0.2
			continue
		fi
		row=$(psql_v -d bench -F ' ' -c "
			SELECT removed_last_pass, extract(epoch FROM last_pass_started),
			       extract(epoch FROM last_pass_finished), extract(epoch FROM now())
			  FROM idem_sweeper_status()
			 WHERE datname = 'bench' AND last_pass_started >= to_timestamp($since)
			   AND last_pass_finished >= last_pass_started
			   AND state <> 'sweeping'")
		if [ -n "$row" ]; then
			set_conf idempotency.sweep_interval 0
			echo "$row"
			return
		fi
		sleep 0.2
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

# pgbench, logging each transaction: "client transaction latency_us script epoch us"
run_pgbench() {
	local tag=$1
	if ! (cd "$WORK" && cluster_as_user pgbench -n -M prepared -c "$CLIENTS" -j "$CLIENTS" \
		-T "$DURATION" -l --log-prefix="$tag" -f "$SCRIPT" bench >"$WORK/$tag.out" 2>&1); then
		echo "bench: pgbench $tag failed; its last lines:" >&2
		tail -n 5 "$WORK/$tag.out" >&2
	fi
	cat "$WORK/$tag".[0-9]* >"$WORK/$tag.log"
	rm -f "$WORK/$tag".[0-9]*
}

# tps, longest latency (ms) and seconds over the transactions of a pgbench log
# that ended within [from, to] (epochs; 0 for to: the end of the log)
window() {
	awk -v from="$2" -v to="$3" '
		{ t = $5 + $6 / 1e6; if (t > hi) hi = t }
		t >= from && (to == 0 || t <= to) { n++; if ($3 > max) max = $3 }
		END {
			if (to == 0) to = hi
			if (to - from >= 0.5) printf "%.0f %.1f %.1f\n", n / (to - from), max / 1000, to - from
			else print "- - 0"
		}' "$1"
}

# The first and the last second of a pgbench log (epochs), a second inside
# each end, where every client is at work
log_span() {
	awk '{ t = $5 + $6 / 1e6; if (!lo || t < lo) lo = t; if (t > hi) hi = t }
		END { printf "%.3f %.3f\n", lo + 1, hi - 1 }' "$1"
}

# tps over the seconds of a log outside [from, to]: the same run, no sweeper
outside() {
	local first last
	read -r first last <<<"$(log_span "$1")"
	awk -v first="$first" -v last="$last" -v from="$2" -v to="$3" '
		{ t = $5 + $6 / 1e6 }
		t >= first && t <= last && (t < from || t > to) { n++ }
		END {
			secs = (from - first) + (last - to)
			if (secs >= 0.5) printf "%.0f %.1f\n", n / secs, secs; else print "- 0"
		}' "$1"
}

# The log's tps second by second, time 0 being $2, as a share of $3 (the
# run's tps with no sweeper at work): "seconds share"
trace() {
	awk -v zero="$2" -v ref="$3" '{ b = int($5 + $6 / 1e6 - zero + 1000) - 1000; n[b]++ }
		END { for (b in n) printf "%d %.3f\n", b, n[b] / ref }' "$1" | sort -n | sed '1d;$d'
}

RESULTS=$WORK/results.tsv
: >"$RESULTS"
for ((round = 1; round <= ROUNDS; round++)); do
	# 1. the sweep alone, unthrottled
	fill_expired "a$round"
	set_conf idempotency.sweep_rate_limit 0
	read -r removed start finish left <<<"$(sweep_once)"
	alone=$(awk -v n="$removed" -v s="$start" -v f="$finish" 'BEGIN { printf "%.0f", n / (f - s) }')
	vacuum_alone=$(awk -v f="$finish" -v l="$left" 'BEGIN { printf "%.1f", l - f }')
	printf '%s\talone\t%s\t%s\t\t\t\t\t\t\t\n' "$round" "$alone" "$vacuum_alone" >>"$RESULTS"
	printf 'bench: round %d: sweep alone %s keys/s (%s keys), then its VACUUM %s s\n' \
		"$round" "$alone" "$removed" "$vacuum_alone"

	# 2. the foreground, with no sweep and with a sweep at each limit
	for limit in $LIMITS; do
		fill_expired "$limit-$round"
		tag="fg-$limit-$round"
		if [ "$limit" = off ]; then
			run_pgbench "$tag"
			read -r first last <<<"$(log_span "$WORK/$tag.log")"
			read -r tps max _ <<<"$(window "$WORK/$tag.log" "$first" "$last")"
			trace "$WORK/$tag.log" "$(awk -v f="$first" 'BEGIN { printf "%.3f", f - 1 + '"$LEAD"' }')" "$tps" \
				>"$WORK/trace-$limit-$round.dat"
			printf '%s\toff\t\t\t%s\t%s\t\t\t\t\t\t%s\n' "$round" "$tps" "$max" "$tps" >>"$RESULTS"
			printf 'bench: round %d: no sweep: foreground %s tps\n' "$round" "$tps"
			continue
		fi
		set_conf idempotency.sweep_rate_limit "$limit"
		run_pgbench "$tag" &
		bench_pid=$!
		sleep "$LEAD"
		read -r removed start finish left <<<"$(sweep_once)"
		wait "$bench_pid"
		rate=$(awk -v n="$removed" -v s="$start" -v f="$finish" 'BEGIN { printf "%.0f", n / (f - s) }')
		read -r tps max secs <<<"$(window "$WORK/$tag.log" "$start" "$finish")"
		read -r tps_vac max_vac secs_vac <<<"$(window "$WORK/$tag.log" "$finish" "$left")"
		read -r tps_ref secs_ref <<<"$(outside "$WORK/$tag.log" "$start" "$left")"
		trace "$WORK/$tag.log" "$start" "$tps_ref" >"$WORK/trace-$limit-$round.dat"
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$limit" "$rate" \
			"$(awk -v f="$finish" -v l="$left" 'BEGIN { printf "%.1f", l - f }')" \
			"$tps" "$max" "$secs" "$tps_vac" "$max_vac" "$secs_vac" \
			"$(awk -v s="$start" -v f="$finish" 'BEGIN { printf "%.1f", f - s }')" "$tps_ref" >>"$RESULTS"
		printf 'bench: round %d: sweep_rate_limit %s: sweep %s keys/s under load over %s s; foreground %s tps during the sweep, %s during its VACUUM (%s s), %s with no sweeper at work (%s s)\n' \
			"$round" "$limit" "$rate" "$secs" "$tps" "$tps_vac" "$secs_vac" "$tps_ref" "$secs_ref"
	done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$RESULTS" "$LIMITS" <<'EOF'
import statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
limits = sys.argv[2].split()
def vals(limit, i):
    return [float(r[i]) for r in rows if r[1] == limit and len(r) > i and r[i] not in ("", "-")]
def med(limit, i):
    v = vals(limit, i)
    return statistics.median(v) if v else float("nan")
def ratios(limit, i):
    # per round: the figure against the same run's seconds with no sweeper at work
    return [float(r[i]) / float(r[11]) for r in rows
            if r[1] == limit and r[i] not in ("", "-") and r[11] not in ("", "-")]
def ratio(limit, i):
    v = ratios(limit, i)
    return statistics.median(v) if v else float("nan")
print()
print("| sweep_rate_limit | sweep keys/s | pass s | foreground tps, no sweeper at work | during the pass | ratio | longest latency (ms) | during its VACUUM | ratio | VACUUM s |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for limit in limits:
    if limit == "off":
        print(f"| no sweep (a run of its own) | | | {med(limit, 11):.0f} | | | {med(limit, 5):.1f} | | | |")
        continue
    name = "0 (no limit)" if limit == "0" else limit
    print(f"| {name} | {med(limit, 2):.0f} | {med(limit, 10):.1f} | {med(limit, 11):.0f} | {med(limit, 4):.0f} | {ratio(limit, 4):.2f}"
          f" | {med(limit, 5):.1f} | {med(limit, 7):.0f} | {ratio(limit, 7):.2f} | {med(limit, 3):.1f} |")
print(f"| sweep alone, no limit | {med('alone', 2):.0f} | | | | | | | | {med('alone', 3):.1f} |")
print()
print("ratios per round, during the pass / no sweeper at work:",
      "; ".join(f"{l}: " + ", ".join(f"{v:.2f}" for v in ratios(l, 4)) for l in limits if l != "off"))
print("sweep alone, keys/s per round:", ", ".join(f"{v:.0f}" for v in vals("alone", 2)))
EOF

if [ -n "$CHART" ] && command -v gnuplot >/dev/null 2>&1; then
	plot=""
	for limit in $LIMITS; do
		# each second's mean over the rounds that have it
		cat "$WORK/trace-$limit"-*.dat |
			awk '{ s[$1] += $2; n[$1]++ } END { for (x in s) printf "%d %.3f\n", x, s[x] / n[x] }' |
			sort -n >"$WORK/trace-$limit.dat"
		case $limit in
		off) title="no sweep" ;;
		0) title="sweep, no limit" ;;
		25000) title="sweep, sweep_rate_limit = 25000 (the default)" ;;
		*) title="sweep, sweep_rate_limit = $limit" ;;
		esac
		plot+="${plot:+, }'$WORK/trace-$limit.dat' using 1:2 with lines lw 2 title '$title'"
	done
	gnuplot <<EOF
set terminal pngcairo size 960,480 font 'sans,11' noenhanced
set output '$CHART'
set title "pgbench -c $CLIENTS, idem_begin + idem_finish of fresh keys, while the sweeper removes $KEYS expired keys"
set xlabel 'seconds since the pass began (the sweeper vacuums the ledger right after it)'
set ylabel 'foreground tps / the same run with no sweeper at work'
set xrange [-$LEAD:$((DURATION - LEAD))]
set yrange [0:1.4]
set key below
set grid
plot $plot
EOF
	echo "bench: chart written to $CHART"
fi

echo
echo "machine: $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr); load average $LOAD_BEFORE at the start, $LOAD_AFTER at the end"
echo "server: $("$PG_CONFIG" --version); fsync=on, synchronous_commit=off, shared_buffers=1GB; sweep_batch_size=$BATCH"
echo "sweep: $KEYS expired keys; foreground: pgbench -M prepared -c $CLIENTS -j $CLIENTS -T $DURATION, idem_begin + idem_finish of fresh keys, the sweep starting $LEAD s in; $ROUNDS rounds, medians (ratios: the median of each round's)"
