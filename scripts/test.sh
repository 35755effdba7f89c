#!/usr/bin/env bash
# scripts/test.sh: build idempotency and run every test suite, on one PostgreSQL major or on several.
#
# Usage: bash scripts/test.sh                          PostgreSQL 15 (or PG_CONFIG's major)
#        PG_VERSIONS="15 17 18" bash scripts/test.sh   each major, then upgrades from 15
#
# One major: copy the tree into a throwaway directory owned by the test user
# ("postgres" when run as root, the invoker otherwise), build and install it
# there (scripts/cluster.sh), start a throwaway cluster, and run as that user:
#
#   regress    sql/*.sql                   make installcheck (REGRESS)
#   isolation  test/specs/*.spec           make installcheck (ISOLATION)
#   tap        test/t/*.pl, file by file   make installcheck (PROVE_TESTS)
#   pgtap      test/pgtap/*.sql            pg_prove, in a database with pgtap and idempotency
#   canonical  test/canonical_check.py     in a database with idempotency
#   model      test/model/ (pytest)        in a database with idempotency, as superuser
#
# Counts are the tools' own: pg_regress's "All N tests passed" / "N of M tests
# failed", prove's "Tests=N" and "Failed: N", pytest's summary line, and
# canonical_check.py's "N passed, M failed".  A tool that exits non-zero, runs
# past its time limit or prints no summary fails its suite (one failure at
# least); a suite whose tests are absent is skipped.
#
# Several majors (PG_VERSIONS): 15 runs on this machine, any other major inside
# its root (scripts/postgres.sh, made first when missing; needs root or sudo).
# When 15 and newer majors are listed, the suite "upgrade" also moves a filled
# ledger from 15 to each (test/upgrade/run.sh).  These runs go side by side,
# IDEM_JOBS (3) at a time; each one's output is shown when all are done, then
# one summary row for each.
#
# The last line is "N passed, M failed" for everything that ran; a major run
# for a matrix closes with "pgNN: N passed, M failed" instead.  The exit status
# is non-zero when anything failed.
#
# Environment:
#   PG_CONFIG         pg_config of the server (default: PostgreSQL 15's); in a matrix, 15's
#   PG_VERSIONS       the majors to run, e.g. "15 17 18"
#   IDEM_ROOTS        where the roots live (scripts/postgres.sh)
#   IDEM_SKIP_DEPS=1  do not run scripts/deps.sh
#   IDEM_KEEP=1       keep the throwaway directory (tree, logs, stopped cluster)
#   CLUSTER_PRELOAD=idempotency   start the cluster with the library preloaded
#   IDEM_BUDGET       seconds the suites of one major may take together (default 720)
#   IDEM_T_REGRESS, IDEM_T_ISOLATION, IDEM_T_TAP_FILE, IDEM_T_PGTAP, IDEM_T_CANONICAL,
#   IDEM_T_MODEL, IDEM_T_UPGRADE   time limit in seconds of one suite, of one TAP
#                     file, of one upgrade (240 240 240 120 60 300 300): a hung test
#                     fails its suite, not the run
#   PG_TEST_TIMEOUT_DEFAULT   PostgreSQL::Test's wait limit (default here 90)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
exec 2>&1   # one stream, so that CI logs keep the order of events
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS PGPASSWORD PGDATA
# shellcheck source=scripts/cluster.sh
. "$ROOT/scripts/cluster.sh"

START=$SECONDS
BUDGET=${IDEM_BUDGET:-720}
export PG_TEST_TIMEOUT_DEFAULT=${PG_TEST_TIMEOUT_DEFAULT:-90}
ROWS=()
TOTAL_P=0
TOTAL_F=0

section() { printf '\n========== %s ==========\n' "$*"; }

# row NAME PASSED FAILED SECONDS NOTE: one line of the summary
row() {
	local result=PASS
	[ "$3" -eq 0 ] || result=FAIL
	ROWS+=("$(printf '%-10s %s %5d passed, %3d failed %5ss  %s' "$1" "$result" "$2" "$3" "$4" "$5")")
	TOTAL_P=$((TOTAL_P + $2))
	TOTAL_F=$((TOTAL_F + $3))
}
skip() { ROWS+=("$(printf '%-10s SKIP  %s' "$1" "$2")"); }

# Stop what is still running, print the summary and, last, the closing line.
finish() {
	stop_stray_servers
	_cluster_run_at_exit >/dev/null 2>&1
	section summary
	printf '%s\n' "${ROWS[@]}"
	printf 'total time %ss\n' "$((SECONDS - START))"
	printf '%s%d passed, %d failed\n' "${IDEM_LABEL:+$IDEM_LABEL: }" "$TOTAL_P" "$TOTAL_F"
	[ "$TOTAL_F" -eq 0 ]
	exit
}

fatal() {
	echo "test: $1 failed: ${2:-}; no test could run"
	row "$1" 0 1 "$((SECONDS - START))" "${2:-}"
	finish
}

# counts KIND LOG RC: sets P, F and NOTE from the summary in LOG of a tool of
# KIND (pg_regress, prove, pytest, line) and its exit status RC.
counts() {
	local s n
	P=0 F=0 NOTE=
	case $1 in
	pg_regress)
		s=$(grep -oE 'All [0-9]+ tests passed|[0-9]+ of [0-9]+ tests failed' "$2" | tail -n 1)
		case $s in
		All*) P=${s//[^0-9]/} ;;
		?*) read -r F _ n _ <<<"$s" && P=$((n - F)) ;;
		esac ;;
	prove)
		s=$(sed -nE 's/^Files=[0-9]+, Tests=([0-9]+),.*/\1/p' "$2" | tail -n 1)
		F=$(grep -oE 'Failed: [0-9]+\)' "$2" | awk '{ n += $2 } END { print n + 0 }')
		P=$((${s:-0} - F)) ;;
	pytest)
		s=$(grep -E '[0-9]+ (passed|failed|errors?)\b.* in [0-9.]+s' "$2" | tail -n 1)
		P=$(grep -oE '[0-9]+ passed' <<<"$s" | awk '{ n += $1 } END { print n + 0 }')
		F=$(grep -oE '[0-9]+ (failed|errors?)' <<<"$s" | awk '{ n += $1 } END { print n + 0 }') ;;
	line)
		s=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$2" | tail -n 1)
		[ -z "$s" ] || read -r P _ F _ <<<"${s//,/}" ;;
	esac
	[ -n "$s" ] || NOTE="no summary line"
	[ "$3" -ne 124 ] && [ "$3" -ne 137 ] || NOTE="timed out"
	if [ "$3" -ne 0 ] || [ -z "$s" ]; then
		[ "$F" -gt 0 ] || F=1
		[ -n "$NOTE" ] || NOTE="exit status $3"
	fi
}

# limit SECS: sets LIMIT to SECS or what is left of the budget; false when under 10s are left.
limit() {
	LIMIT=$((START_SUITES + BUDGET - SECONDS))
	[ "$LIMIT" -lt "$1" ] || LIMIT=$1
	[ "$LIMIT" -ge 10 ]
}

# run NAME KIND SECS CMD...: run CMD in the tree as the test user, for at most
# SECS seconds, and read its summary (counts); false when anything failed.
run() {
	local name=$1 kind=$2 rc
	shift 2
	if ! limit "$1"; then
		P=0 F=1 NOTE="not run: the ${BUDGET}s budget is spent"
		return 1
	fi
	shift
	section "$name: $*"
	cluster_as_user_timeout "$LIMIT" "$@" 2>&1 | tee "$WORK/$name.log"
	rc=${PIPESTATUS[0]}
	counts "$kind" "$WORK/$name.log" "$rc"
	[ "$F" -eq 0 ] || { cluster_log_tail 40; return 1; }
}

# suite NAME KIND SECS CMD...: run, and record one row.
suite() {
	local t0=$SECONDS rc=0
	run "$@" || rc=1
	row "$1" "$P" "$F" "$((SECONDS - t0))" "$NOTE"
	return $rc
}

# Print FILE's diffs, each test's cut after 150 lines, so that every failing test shows.
show_diffs() {
	[ -f "$1" ] || return 0
	awk '/^diff / { n = 0 } ++n <= 150' "$1"
}

# Servers started by TAP tests live under the tree; stop any still running.
stop_stray_servers() {
	local pidfile
	[ -n "${TREE:-}" ] && [ -d "$TREE" ] || return 0
	while IFS= read -r pidfile; do
		cluster_as_user pg_ctl -D "$(dirname "$pidfile")" -m immediate -w stop >/dev/null 2>&1 || true
	done < <(find "$TREE" -name postmaster.pid -type f 2>/dev/null)
}

# fresh_db NAME EXTENSION...: a new database NAME with those extensions.
fresh_db() {
	local db=$1
	shift
	cluster_psql -d postgres -c 'SET client_min_messages = warning' \
		-c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" &&
		cluster_psql -d "$db" "${@/#/-cCREATE EXTENSION }"
}

has() { compgen -G "$TREE/$1" >/dev/null; }

# ---------------------------------------------------------------- several majors

# major_cmd VERSION: sets CMD to the command that runs the whole suite on one
# major, for a matrix: 15 here, any other in its root.
major_cmd() {
	local var
	local -a pass=(PG_VERSIONS= IDEM_LABEL="pg$1" IDEM_SKIP_DEPS=1)
	if [ "$1" = 15 ]; then
		CMD=(env "${pass[@]}" bash "$ROOT/scripts/test.sh")
		return
	fi
	for var in $(compgen -e); do
		case $var in
		IDEM_ROOTS | IDEM_LABEL | IDEM_SKIP_DEPS) ;;
		IDEM_* | CLUSTER_* | PG_TEST_* | CI) pass+=("$var=${!var}") ;;
		esac
	done
	CMD=("${SUDO[@]}" bash "$ROOT/scripts/postgres.sh" "$1" run env "${pass[@]}"
		PG_CONFIG="/usr/lib/postgresql/$1/bin/pg_config" bash /src/scripts/test.sh)
}

# job NAME SECS CMD...: run CMD in the background, IDEM_JOBS at a time, for at
# most SECS seconds; its output goes to $WORK/NAME.log, "STATUS SECONDS" to NAME.rc.
job() {
	local name=$1 secs=$2
	shift 2
	while [ "$(jobs -rp | wc -l)" -ge "${IDEM_JOBS:-3}" ]; do wait -n; done
	echo "test: $name started"
	(
		t0=$SECONDS
		timeout -k 30 "$secs" "$@" >"$WORK/$name.log" 2>&1
		echo "$? $((SECONDS - t0))" >"$WORK/$name.rc"
		echo "test: $name finished after $((SECONDS - t0))s"
	) &
}

matrix() {
	local v name rc secs s
	local -a upgrades=()
	SUDO=()
	[ "$(id -u)" -eq 0 ] || SUDO=(sudo -n)
	section "matrix: PostgreSQL $PG_VERSIONS"
	if [ "${IDEM_SKIP_DEPS:-0}" != 1 ]; then
		bash "$ROOT/scripts/deps.sh" || fatal deps
	fi
	# The roots first, side by side; then every major and every move from 15.
	for v in $PG_VERSIONS; do
		[ "$v" = 15 ] || "${SUDO[@]}" bash "$ROOT/scripts/postgres.sh" "$v" &
	done
	wait
	for v in $PG_VERSIONS; do
		major_cmd "$v"
		job "pg$v" $((BUDGET + 600)) "${CMD[@]}"
	done
	if [[ " $PG_VERSIONS " == *" 15 "* ]]; then
		for v in $PG_VERSIONS; do
			[ "$v" -le 15 ] || upgrades+=("$v")
		done
	fi
	for v in "${upgrades[@]}"; do
		job "up15-$v" "${IDEM_T_UPGRADE:-300}" env IDEM_UPGRADE_PORT=$((56000 + 20 * v)) \
			bash "$ROOT/test/upgrade/run.sh" 15 "$v"
	done
	wait
	for v in $PG_VERSIONS; do
		section "PostgreSQL $v"
		cat "$WORK/pg$v.log"
		read -r rc secs <"$WORK/pg$v.rc"
		s=$(grep -E "^pg$v: [0-9]+ passed, [0-9]+ failed$" "$WORK/pg$v.log" | tail -n 1)
		P=0 F=0
		[ -z "$s" ] || read -r _ P _ F _ <<<"${s//,/}"
		NOTE=$(awk '/^=+ summary =+$/ { on = 1 } on && $2 == "FAIL" { printf "%s ", $1 }' "$WORK/pg$v.log")
		if [ "$rc" -ne 0 ] && [ "$F" -eq 0 ]; then
			F=1
			NOTE="exit status $rc"
		fi
		row "pg$v" "$P" "$F" "$secs" "${NOTE:+failed: $NOTE}"
	done
	for v in "${upgrades[@]}"; do
		name=up15-$v
		section "upgrade: 15 to $v (test/upgrade/run.sh)"
		cat "$WORK/$name.log"
		read -r rc secs <"$WORK/$name.rc"
		counts prove "$WORK/$name.log" "$rc"
		row "$name" "$P" "$F" "$secs" "$NOTE"
	done
	unset IDEM_LABEL
	finish
}

WORK=$(mktemp -d /tmp/idem-test.XXXXXX) || fatal setup "mktemp"
chmod 755 "$WORK"   # the test user works in $WORK/tree
if [ "${IDEM_KEEP:-0}" = 1 ]; then
	CLUSTER_KEEP=1
else
	# shellcheck disable=SC2016 # expanded at exit
	cluster_at_exit 'rm -rf "$WORK"'
fi
[ -z "${PG_VERSIONS:-}" ] || matrix

# ---------------------------------------------------------------- one major

section "build"
if [ "${IDEM_SKIP_DEPS:-0}" != 1 ]; then
	bash "$ROOT/scripts/deps.sh" || fatal deps
fi
command -v "$PG_CONFIG" >/dev/null 2>&1 || fatal deps "no $PG_CONFIG"
echo "test: $("$PG_CONFIG" --version), test user $(cluster_os_user)"
TREE=$WORK/tree
cluster_build_extension "$ROOT" "$TREE" || fatal build "build or install"
cd "$TREE" || fatal build "cd $TREE"

section "cluster"
cluster_create "$WORK/cluster" || fatal cluster initdb
cluster_start || fatal cluster "server start"
START_SUITES=$SECONDS

if has 'sql/*.sql'; then
	suite regress pg_regress "${IDEM_T_REGRESS:-240}" \
		make PG_CONFIG="$PG_CONFIG" installcheck ISOLATION= TAP_TESTS= || show_diffs regression.diffs
else skip regress "no tests in sql/"; fi

if has 'test/specs/*.spec'; then
	suite isolation pg_regress "${IDEM_T_ISOLATION:-240}" \
		make PG_CONFIG="$PG_CONFIG" installcheck REGRESS= TAP_TESTS= || show_diffs output_iso/regression.diffs
else skip isolation "no specs in test/specs/"; fi

# One make installcheck per TAP file: each has its own time limit.
if has 'test/t/*.pl'; then
	tap_p=0 tap_f=0 tap_notes='' t0=$SECONDS
	for file in test/t/*.pl; do
		if ! run tap prove "${IDEM_T_TAP_FILE:-240}" \
				make PG_CONFIG="$PG_CONFIG" installcheck REGRESS= ISOLATION= PROVE_TESTS="$file"; then
			tap_notes+="$file: ${NOTE:-failed}; "
			for f in tmp_check/log/*; do
				[ -f "$f" ] && { echo "----- $f"; tail -n 60 "$f"; }
			done
		fi
		stop_stray_servers
		tap_p=$((tap_p + P)) tap_f=$((tap_f + F))
	done
	row tap "$tap_p" "$tap_f" "$((SECONDS - t0))" "files: $(compgen -G 'test/t/*.pl' | wc -l); $tap_notes"
else skip tap "no tests in test/t/"; fi

if ! has 'test/pgtap/*.sql'; then
	skip pgtap "no tests in test/pgtap/"
elif fresh_db pgtap_test pgtap idempotency; then
	suite pgtap prove "${IDEM_T_PGTAP:-120}" pg_prove --failures -d pgtap_test test/pgtap/*.sql
else row pgtap 0 1 0 "could not create database pgtap_test"; fi

if [ ! -f test/canonical_check.py ]; then
	skip canonical "no test/canonical_check.py"
elif fresh_db canonical_check idempotency; then
	suite canonical line "${IDEM_T_CANONICAL:-60}" env PGDATABASE=canonical_check python3 test/canonical_check.py
else row canonical 0 1 0 "could not create database canonical_check"; fi

if [ ! -d test/model ]; then
	skip model "no test/model/"
elif fresh_db model_test idempotency; then
	suite model pytest "${IDEM_T_MODEL:-300}" env PGDATABASE=model_test PGUSER="$CLUSTER_USER" \
		python3 -m pytest -q -p no:cacheprovider test/model
else row model 0 1 0 "could not create database model_test"; fi

finish
