#!/usr/bin/env bash
# scripts/test.sh: build idempotency and run every test suite against a throwaway cluster.
#
# Usage: bash scripts/test.sh
#
# Steps: install missing packages (scripts/deps.sh), copy the tree into a
# throwaway directory owned by the test user, build there, install the
# extension (as root, or through sudo), start a throwaway cluster
# (scripts/cluster.sh), then run, as the test user:
#
#   regress     pg_regress over sql/                 (make installcheck, REGRESS)
#   isolation   isolation specs in test/specs         (make installcheck, ISOLATION)
#   tap         Perl TAP tests test/t/*.pl            (make installcheck, TAP_TESTS;
#               each test starts clusters of its own)
#   pgtap       pg_prove over test/pgtap/*.sql, in a database pgtap_test that has
#               the pgtap and idempotency extensions
#   canonical   python3 test/canonical_check.py, with PGHOST, PGPORT and
#               PGDATABASE naming a database that has the extension
#
# A suite whose directory holds no test yet is skipped.  The test user is
# "postgres" when run as root (pg_regress and PostgreSQL::Test::Cluster refuse
# root), the invoker otherwise.  The repository itself is only read.  The last
# line is "N passed, M failed", counting tests: pg_regress and isolation tests
# (one per file), TAP and pgTAP assertions (a file that dies or breaks its plan
# counts as one more failure), and what canonical_check.py reports.  The exit
# status is non-zero when anything failed.
#
# Environment:
#   PG_CONFIG       pg_config of the server to test against (default: PostgreSQL 15's)
#   IDEM_KEEP=1     keep the throwaway directory (tree, results, cluster) afterwards
#   IDEM_SKIP_DEPS=1  do not run scripts/deps.sh
#   CLUSTER_PRELOAD=idempotency   start the shared cluster with the library preloaded
#   IDEM_BUDGET     seconds all the suites together may take (default 720); a
#                   suite or TAP file that would run past it fails instead
#   IDEM_T_REGRESS, IDEM_T_ISOLATION, IDEM_T_TAP_FILE, IDEM_T_PGTAP, IDEM_T_CANONICAL
#                   time limits in seconds for one suite, one TAP file for the
#                   last (240, 240, 240, 120, 60); a hung test fails, not the run
#   PG_TEST_TIMEOUT_DEFAULT   PostgreSQL::Test's wait limit for TAP (default here 90)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
exec 2>&1   # one stream, so that CI logs keep the order of events
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS PGPASSWORD PGDATA
# shellcheck source=scripts/cluster.sh
. "$ROOT/scripts/cluster.sh"

START=$SECONDS

# Time limits (seconds): a hung test fails its suite, not the run, and the
# whole run stays well inside a CI job.
BUDGET=${IDEM_BUDGET:-720}
T_REGRESS=${IDEM_T_REGRESS:-240}
T_ISOLATION=${IDEM_T_ISOLATION:-240}
T_TAP_FILE=${IDEM_T_TAP_FILE:-240}
T_PGTAP=${IDEM_T_PGTAP:-120}
T_CANONICAL=${IDEM_T_CANONICAL:-60}
export PG_TEST_TIMEOUT_DEFAULT=${PG_TEST_TIMEOUT_DEFAULT:-90}
DEADLINE=

SUITES=()
declare -A S_RESULT S_PASS S_FAIL S_NOTE S_SECS
TOTAL_PASS=0
TOTAL_FAIL=0

section() { printf '\n========== %s ==========\n' "$*"; }
info() { printf 'test: %s\n' "$*"; }

# record NAME RESULT PASSED FAILED NOTE SECONDS
record() {
	SUITES+=("$1")
	S_RESULT[$1]=$2
	S_PASS[$1]=$3
	S_FAIL[$1]=$4
	S_NOTE[$1]=$5
	S_SECS[$1]=$6
	TOTAL_PASS=$((TOTAL_PASS + $3))
	TOTAL_FAIL=$((TOTAL_FAIL + $4))
}

print_summary() {
	local s
	section "summary"
	for s in "${SUITES[@]}"; do
		if [ "${S_RESULT[$s]}" = SKIP ]; then
			printf '%-10s %-5s %s\n' "$s" SKIP "${S_NOTE[$s]}"
		else
			printf '%-10s %-5s %3d passed, %3d failed  %4ss  %s\n' "$s" "${S_RESULT[$s]}" \
				"${S_PASS[$s]}" "${S_FAIL[$s]}" "${S_SECS[$s]}" "${S_NOTE[$s]}"
		fi
	done
	printf 'total time %ss\n' "$((SECONDS - START))"
	if [ "${IDEM_KEEP:-0}" = 1 ]; then
		printf 'kept %s (tree, logs, results, stopped cluster)\n' "${WORK:-}"
	fi
}

# Stop the throwaway servers (ours and any a killed TAP test left behind), remove
# the throwaway directory, print the summary and, last, the closing line.
finish() {
	stop_stray_servers
	_cluster_run_at_exit >/dev/null 2>&1
	print_summary
	printf '%d passed, %d failed\n' "$TOTAL_PASS" "$TOTAL_FAIL"
	if [ "$TOTAL_FAIL" -gt 0 ]; then
		exit 1
	fi
	exit 0
}

# A step before the suites failed: nothing can be tested.
fatal() {
	info "$1 failed; no test could run"
	record "$1" FAIL 0 1 "${2:-}" "$((SECONDS - START))"
	finish
}

# Print a file, or its last lines when it is long, for the CI log.
show_file() {
	local f=$1 max=${2:-400} n
	[ -f "$f" ] || return 0
	n=$(wc -l <"$f")
	if [ "$n" -gt "$max" ]; then
		echo "----- $f (last $max of $n lines) -----"
		tail -n "$max" "$f"
	else
		echo "----- $f -----"
		cat "$f"
	fi
	echo "----- end of $f -----"
}

# Print a regression.diffs file, each test's diff cut after MAX lines, so that
# every failing test shows in the CI log however long one diff is.
show_diffs() {
	local f=$1 max=${2:-150}
	[ -f "$f" ] || return 0
	echo "----- $f -----"
	awk -v max="$max" '
		function flush() { if (n > max) printf "... (%d more lines of this diff)\n", n - max }
		/^diff / { flush(); n = 0 }
		{ n++; if (n <= max) print }
		END { flush() }' "$f"
	echo "----- end of $f -----"
}

# Servers started by TAP tests live under the tree; stop any still running.
stop_stray_servers() {
	local pidfile
	[ -n "${TREE:-}" ] && [ -d "$TREE" ] || return 0
	while IFS= read -r pidfile; do
		cluster_as_user pg_ctl -D "$(dirname "$pidfile")" -m immediate -w stop >/dev/null 2>&1 || true
	done < <(find "$TREE" -name postmaster.pid -type f 2>/dev/null)
}

# Count pg_regress results (PostgreSQL 15 "test x ... ok" lines, and the TAP-like
# "ok N - x" lines of later releases) in LOG; sets P and F.
count_pg_regress() {
	local log=$1
	P=$(grep -cE '^ *(test +)?[^ ]+ +\.\.\. +(ok|failed \(ignored\))|^ok [0-9]+ ' "$log")
	F=$(grep -cE '^ *(test +)?[^ ]+ +\.\.\. +FAILED|^not ok [0-9]+ ' "$log")
}

# Count prove results in LOG, per assertion: "Files=N, Tests=M" gives the total,
# the "Test Summary Report" lines "file (Wstat: .. Tests: a Failed: b)" the
# failures; a file listed there with no failed assertion (it died, or ran fewer
# tests than it planned) counts as one failure; one listed only for passing TODO
# tests does not.  Sets P, F and NFILES.
count_prove() {
	local log=$1 total
	NFILES=$(sed -nE 's/^Files=([0-9]+),.*/\1/p' "$log" | tail -n 1)
	total=$(sed -nE 's/^Files=[0-9]+, Tests=([0-9]+),.*/\1/p' "$log" | tail -n 1)
	read -r P F < <(awk -v total="${total:-0}" '
		/^[^ ].* \(Wstat: [0-9]+/ {
			n = 0
			if (match($0, /Failed: [0-9]+/)) n = substr($0, RSTART + 8, RLENGTH - 8) + 0
			failed += n
			counted = (n > 0)
			if (!counted && $0 !~ /Wstat: 0 /) { broken++; counted = 1 }
			next
		}
		/^  Parse errors:/ && !counted { broken++; counted = 1 }
		END { printf "%d %d\n", total - failed, failed + broken }' "$log")
}

# Run a pg_regress-driven suite (regress or isolation) through make installcheck.
# run_make_suite NAME TIMEOUT DIFFS MAKEVARS...
run_make_suite() {
	local name=$1 secs=$2 diffs=$3 t0=$SECONDS rc log
	shift 3
	log=$WORK/$name.log
	section "$name: make installcheck $*"
	cluster_as_user_timeout "$secs" make -C "$TREE" PG_CONFIG="$PG_CONFIG" installcheck "$@" 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	count_pg_regress "$log"
	suite_result "$name" "$rc" "$secs" "$t0"
	if [ "$rc" -ne 0 ]; then
		show_diffs "$TREE/$diffs"
		cluster_log_tail 40 2>&1
	fi
}

# Turn an exit status and the counts P and F into a recorded result.
suite_result() {
	local name=$1 rc=$2 secs=$3 t0=$4 note=
	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		note="timed out after ${secs}s"
	fi
	if [ "$rc" -ne 0 ] && [ "$F" -eq 0 ]; then
		F=1
		[ -n "$note" ] || note="exit status $rc"
	fi
	if [ "$rc" -eq 0 ] && [ "$F" -ne 0 ]; then
		rc=1
	fi
	if [ "$rc" -eq 0 ] && [ "$P" -eq 0 ]; then
		P=1
	fi
	if [ "$rc" -eq 0 ]; then
		record "$name" PASS "$P" 0 "$note" "$((SECONDS - t0))"
	else
		record "$name" FAIL "$P" "$F" "$note" "$((SECONDS - t0))"
	fi
}

has_files() {
	compgen -G "$1" >/dev/null
}

# Sets LIMIT to SECS, or to what is left of the budget when that is less; fails
# when too little is left to start anything.
take_limit() {
	local left=$((DEADLINE - SECONDS))
	LIMIT=$1
	[ "$left" -lt "$LIMIT" ] && LIMIT=$left
	[ "$LIMIT" -ge 10 ]
}

# Record a suite that the budget left no time for.
no_time() {
	info "$1: not run, the ${BUDGET}s budget is spent"
	record "$1" FAIL 0 "${2:-1}" "not run: the ${BUDGET}s budget is spent" 0
}

# ---------------------------------------------------------------- setup

section "dependencies"
if [ "${IDEM_SKIP_DEPS:-0}" != 1 ]; then
	bash "$ROOT/scripts/deps.sh" || fatal deps
fi
command -v "$PG_CONFIG" >/dev/null 2>&1 || fatal deps "no $PG_CONFIG"
info "PostgreSQL: $("$PG_CONFIG" --version), test user: $(cluster_os_user)"

section "build"
WORK=$(mktemp -d /tmp/idem-test.XXXXXX) || fatal build "mktemp failed"
if [ "${IDEM_KEEP:-0}" = 1 ]; then
	CLUSTER_KEEP=1
	info "keeping $WORK afterwards"
else
	# shellcheck disable=SC2016 # expanded at exit
	cluster_at_exit 'rm -rf "$WORK"'
fi
chmod 755 "$WORK"   # the test user works in $WORK/tree
cd "$WORK" || fatal build "cd $WORK failed"
TREE=$WORK/tree
cluster_build_extension "$ROOT" "$TREE" || fatal build "build or install failed"

section "cluster"
cluster_create "$WORK/cluster" || fatal cluster "initdb failed"
cluster_start || fatal cluster "server start failed"

# ---------------------------------------------------------------- suites

DEADLINE=$((SECONDS + BUDGET))

if ! has_files "$TREE/sql/*.sql"; then
	record regress SKIP 0 0 "no tests in sql/" 0
elif take_limit "$T_REGRESS"; then
	run_make_suite regress "$LIMIT" regression.diffs ISOLATION= TAP_TESTS=
else
	no_time regress
fi

if ! has_files "$TREE/test/specs/*.spec"; then
	record isolation SKIP 0 0 "no specs in test/specs/" 0
elif take_limit "$T_ISOLATION"; then
	run_make_suite isolation "$LIMIT" output_iso/regression.diffs REGRESS= TAP_TESTS=
else
	no_time isolation
fi

# TAP: one make installcheck per file, so that each file has its own time limit
# and one hung file cannot take the others' results with it.
if has_files "$TREE/test/t/*.pl"; then
	t0=$SECONDS
	tap_pass=0
	tap_fail=0
	tap_notes=()
	section "tap: make installcheck REGRESS= ISOLATION= PROVE_TESTS=test/t/<file>.pl"
	: >"$WORK/tap.log"
	for path in "$TREE"/test/t/*.pl; do
		file=test/t/$(basename "$path")
		if ! take_limit "$T_TAP_FILE"; then
			info "$file: not run, the ${BUDGET}s budget is spent"
			tap_fail=$((tap_fail + 1))
			tap_notes+=("$file not run")
			continue
		fi
		echo "--- $file (limit ${LIMIT}s)"
		cluster_as_user_timeout "$LIMIT" make -C "$TREE" PG_CONFIG="$PG_CONFIG" installcheck \
			REGRESS= ISOLATION= PROVE_TESTS="$file" 2>&1 | tee "$WORK/tap-file.log"
		rc=${PIPESTATUS[0]}
		cat "$WORK/tap-file.log" >>"$WORK/tap.log"
		stop_stray_servers
		count_prove "$WORK/tap-file.log"
		if [ "$rc" -ne 0 ]; then
			[ "$F" -eq 0 ] && F=1
			if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
				tap_notes+=("$file timed out after ${LIMIT}s")
			fi
			for f in "$TREE"/tmp_check/log/*; do
				[ -f "$f" ] && show_file "$f" 60
			done
		fi
		tap_pass=$((tap_pass + P))
		tap_fail=$((tap_fail + F))
	done
	note="files: $(compgen -G "$TREE/test/t/*.pl" | wc -l)"
	for n in "${tap_notes[@]}"; do
		note="$note; $n"
	done
	if [ "$tap_fail" -eq 0 ]; then
		record tap PASS "$tap_pass" 0 "$note" "$((SECONDS - t0))"
	else
		record tap FAIL "$tap_pass" "$tap_fail" "$note" "$((SECONDS - t0))"
	fi
else
	record tap SKIP 0 0 "no tests in test/t/" 0
fi

if ! has_files "$TREE/test/pgtap/*.sql"; then
	record pgtap SKIP 0 0 "no tests in test/pgtap/" 0
elif ! take_limit "$T_PGTAP"; then
	no_time pgtap "$(compgen -G "$TREE/test/pgtap/*.sql" | wc -l)"
else
	t0=$SECONDS
	section "pgtap: pg_prove test/pgtap/*.sql"
	nfiles=$(compgen -G "$TREE/test/pgtap/*.sql" | wc -l)
	if cluster_psql -d postgres -c 'SET client_min_messages = warning' \
			-c 'DROP DATABASE IF EXISTS pgtap_test' -c 'CREATE DATABASE pgtap_test' &&
		cluster_psql -d pgtap_test -c 'CREATE EXTENSION pgtap' -c 'CREATE EXTENSION idempotency'; then
		(cd "$TREE" && cluster_as_user_timeout "$LIMIT" pg_prove --failures -d pgtap_test test/pgtap/*.sql) \
			2>&1 | tee "$WORK/pgtap.log"
		rc=${PIPESTATUS[0]}
		count_prove "$WORK/pgtap.log"
		suite_result pgtap "$rc" "$LIMIT" "$t0"
		[ -n "$NFILES" ] && S_NOTE[pgtap]="${S_NOTE[pgtap]:+${S_NOTE[pgtap]}; }files: $NFILES"
		[ "$rc" -ne 0 ] && cluster_log_tail 40 2>&1
	else
		record pgtap FAIL 0 "$nfiles" "could not create database pgtap_test with both extensions" \
			"$((SECONDS - t0))"
		cluster_log_tail 40 2>&1
	fi
fi

if [ ! -f "$TREE/test/canonical_check.py" ]; then
	record canonical SKIP 0 0 "no test/canonical_check.py" 0
elif ! take_limit "$T_CANONICAL"; then
	no_time canonical
else
	t0=$SECONDS
	section "canonical: python3 test/canonical_check.py"
	if cluster_psql -d postgres -c 'SET client_min_messages = warning' \
			-c 'DROP DATABASE IF EXISTS canonical_check' -c 'CREATE DATABASE canonical_check' &&
		cluster_psql -d canonical_check -c 'CREATE EXTENSION idempotency'; then
		(cd "$TREE" && cluster_as_user_timeout "$LIMIT" env PGDATABASE=canonical_check \
			python3 test/canonical_check.py) 2>&1 | tee "$WORK/canonical.log"
		rc=${PIPESTATUS[0]}
		# Use the script's own closing "N passed, M failed" line when it prints one.
		line=$(grep -E '^([A-Za-z]+: )?[0-9]+ passed, [0-9]+ failed' "$WORK/canonical.log" | tail -n 1)
		if [ -n "$line" ]; then
			P=$(sed -nE 's/^([A-Za-z]+: )?([0-9]+) passed.*/\2/p' <<<"$line")
			F=$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$line")
		else
			P=0
			F=0
		fi
		suite_result canonical "$rc" "$LIMIT" "$t0"
	else
		record canonical FAIL 0 1 "could not create database canonical_check with the extension" \
			"$((SECONDS - t0))"
	fi
fi

finish
