#!/usr/bin/env bash
# scripts/test.sh: build idempotency and run every test suite against a throwaway cluster.
#
# Usage: bash scripts/test.sh                          PostgreSQL 15 (or PG_CONFIG's major)
#        PG_VERSIONS="15 17 18" bash scripts/test.sh   each major, and the moves from 15 (scripts/matrix.sh)
#
# Copies the tree into a throwaway directory owned by the test user ("postgres"
# when run as root, the invoker otherwise), builds and installs it there
# (scripts/cluster.sh), starts a throwaway cluster and runs, as that user:
#
#   regress    sql/*.sql                   make installcheck (REGRESS)
#   isolation  test/specs/*.spec           make installcheck (ISOLATION)
#   tap        test/t/*.pl, file by file   make installcheck (PROVE_TESTS)
#   pgtap      test/pgtap/*.sql            pg_prove, in a database with pgtap and idempotency
#   canonical  test/canonical_check.py     in a database with idempotency
#   model      test/model/ (pytest)        in a database with idempotency, as superuser
#   clients    clients/run-tests.sh        the HTTP middlewares (where Node.js is)
#
# The counts are the tools' own (scripts/results.sh): pg_regress's, prove's and
# pytest's summaries, canonical_check.py's closing line.  A tool that exits
# non-zero, runs past its time limit or prints no summary fails its suite; a
# suite whose tests are absent is skipped, and a TAP file that skips itself
# (test/t/03x_citus*.pl where Citus is not installed) is named in the tap row.  The last line is "N passed, M
# failed"; the exit status is non-zero when anything failed.
#
# Environment:
#   PG_CONFIG         pg_config of the server (default: PostgreSQL 15's)
#   PG_VERSIONS       several majors: see scripts/matrix.sh
#   IDEM_SKIP_DEPS=1  do not run scripts/deps.sh
#   IDEM_KEEP=1       keep the throwaway directory (tree, logs, stopped cluster)
#   CLUSTER_PRELOAD=idempotency   start the cluster with the library preloaded
#   IDEM_BUDGET       seconds the suites may take together (default 1500)
#   IDEM_T_REGRESS, IDEM_T_ISOLATION, IDEM_T_TAP_FILE, IDEM_T_PGTAP, IDEM_T_CANONICAL,
#   IDEM_T_MODEL, IDEM_T_CLIENTS
#                     seconds one suite (one TAP file) may take (240 240 240 120 60 300 400):
#                     a hung test fails its suite, not the run
#   PG_TEST_TIMEOUT_DEFAULT   PostgreSQL::Test's wait limit (default here 90)
#   IDEM_REQUIRE_CITUS=1      the Citus TAP files fail, not skip, without Citus (CI sets it)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ -z "${PG_VERSIONS:-}" ] || exec bash "$ROOT/scripts/matrix.sh"
exec 2>&1   # one stream, so that CI logs keep the order of events
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS PGPASSWORD PGDATA
# shellcheck source=scripts/cluster.sh
. "$ROOT/scripts/cluster.sh"
# shellcheck source=scripts/results.sh
. "$ROOT/scripts/results.sh"

BUDGET=${IDEM_BUDGET:-1500}
export PG_TEST_TIMEOUT_DEFAULT=${PG_TEST_TIMEOUT_DEFAULT:-90}

# Stop what is still running, print the summary and, last, the closing line.
finish() {
	stop_stray_servers
	_cluster_run_at_exit >/dev/null 2>&1
	print_results
	exit
}

fatal() {
	echo "test: $1 failed: $2; no test could run"
	row "$1" 0 1 "$((SECONDS - START))" "$2"
	finish
}

# run NAME KIND SECS CMD...: run CMD in the tree as the test user, for at most
# SECS seconds or what is left of the budget, and read its summary (counts);
# false when anything failed.
run() {
	local name=$1 kind=$2 limit=$((START_SUITES + BUDGET - SECONDS)) rc
	[ "$limit" -lt "$3" ] || limit=$3
	shift 3
	if [ "$limit" -lt 10 ]; then
		P=0 F=1 NOTE="not run: the ${BUDGET}s budget is spent"
		return 1
	fi
	section "$name: $*"
	cluster_as_user_timeout "$limit" "$@" 2>&1 | tee "$WORK/$name.log"
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
	local db=$1 ext
	shift
	cluster_psql -d postgres -c 'SET client_min_messages = warning' \
		-c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" || return 1
	for ext in "$@"; do
		cluster_psql -d "$db" -c "CREATE EXTENSION $ext" || return 1
	done
}

has() { compgen -G "$TREE/$1" >/dev/null; }

# ---------------------------------------------------------------- setup

section "build"
WORK=$(mktemp -d /tmp/idem-test.XXXXXX) || fatal setup "mktemp"
chmod 755 "$WORK"   # the test user works in $WORK/tree
if [ "${IDEM_KEEP:-0}" = 1 ]; then
	CLUSTER_KEEP=1
	echo "test: keeping $WORK"
else
	# shellcheck disable=SC2016 # expanded at exit
	cluster_at_exit 'rm -rf "$WORK"'
fi
if [ "${IDEM_SKIP_DEPS:-0}" != 1 ]; then
	bash "$ROOT/scripts/deps.sh" || fatal deps "scripts/deps.sh"
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

# ---------------------------------------------------------------- suites

if has 'sql/*.sql'; then
	suite regress pg_regress "${IDEM_T_REGRESS:-240}" \
		make PG_CONFIG="$PG_CONFIG" installcheck ISOLATION= TAP_TESTS= || show_diffs regression.diffs
else skip regress "no tests in sql/"; fi

if has 'test/specs/*.spec'; then
	suite isolation pg_regress "${IDEM_T_ISOLATION:-240}" \
		make PG_CONFIG="$PG_CONFIG" installcheck REGRESS= TAP_TESTS= || show_diffs output_iso/regression.diffs
else skip isolation "no specs in test/specs/"; fi

# One make installcheck per TAP file, so that each has its own time limit.
if has 'test/t/*.pl'; then
	tap_p=0 tap_f=0 tap_notes='' t0=$SECONDS
	for file in test/t/*.pl; do
		if ! run tap prove "${IDEM_T_TAP_FILE:-240}" \
				make PG_CONFIG="$PG_CONFIG" installcheck REGRESS= ISOLATION= PROVE_TESTS="$file"; then
			tap_notes+="; $file: $NOTE"
			for f in tmp_check/log/*; do
				[ -f "$f" ] && { echo "----- $f"; tail -n 60 "$f"; }
			done
		fi
		# a file that skipped (Citus missing) is named in the row, not lost in the log
		if grep -qE "^${file//./\\.} \.+ skipped" "$WORK/tap.log"; then
			tap_notes+="; skipped: ${file##*/}"
		fi
		stop_stray_servers
		tap_p=$((tap_p + P)) tap_f=$((tap_f + F))
	done
	row tap "$tap_p" "$tap_f" "$((SECONDS - t0))" "files: $(compgen -G 'test/t/*.pl' | wc -l)$tap_notes"
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
		/usr/bin/python3 -m pytest -q -p no:cacheprovider test/model
else row model 0 1 0 "could not create database model_test"; fi

# The HTTP clients need Node.js, which the roots of other majors do not have:
# they are tested once, against the server of this machine's own major.
if [ ! -f clients/run-tests.sh ]; then
	skip clients "no clients/"
elif ! command -v node >/dev/null 2>&1; then
	skip clients "no Node.js here"
elif fresh_db clients_test idempotency; then
	suite clients line "${IDEM_T_CLIENTS:-400}" env PGDATABASE=clients_test PGUSER="$CLUSTER_USER" \
		bash clients/run-tests.sh
else row clients 0 1 0 "could not create database clients_test"; fi

finish
