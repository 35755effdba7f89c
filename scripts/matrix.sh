#!/usr/bin/env bash
# scripts/matrix.sh: the whole test suite on several PostgreSQL majors, and the moves between them.
#
# Usage: PG_VERSIONS="15 17 18" bash scripts/test.sh   (which runs this script)
#
# 15 runs on this machine (scripts/deps.sh), any other major inside its root
# (scripts/postgres.sh; the missing roots are made first, side by side; this
# needs root, or sudo).  Each major runs scripts/test.sh as a whole; when 15
# and newer majors are listed, test/upgrade/run.sh also moves a filled ledger
# from 15 to each newer one (rows "up15-NN").  The runs go side by side,
# IDEM_JOBS (3) at a time; each one's output is printed when all are done, then
# one row per run.  A major's own closing line reads "pgNN: N passed, M
# failed"; the last line, "N passed, M failed", counts every run.
#
# Environment: as scripts/test.sh; those named IDEM_*, CLUSTER_*, PG_TEST_* and CI
# are passed into the roots.  IDEM_JOBS (3), IDEM_T_UPGRADE (600 seconds per move),
# PG_TEST_TIMEOUT_DEFAULT (180 here, since the runs share the machine).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
exec 2>&1
# shellcheck source=scripts/results.sh
. "$ROOT/scripts/results.sh"

BUDGET=${IDEM_BUDGET:-1500}
# The runs share the machine: give PostgreSQL::Test's waits more room than alone
# (a hung test still fails at its file's limit, IDEM_T_TAP_FILE).
export PG_TEST_TIMEOUT_DEFAULT=${PG_TEST_TIMEOUT_DEFAULT:-180}
SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo -n)
WORK=$(mktemp -d /tmp/idem-matrix.XXXXXX) || exit 1
[ "${IDEM_KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT

# major_cmd VERSION: sets CMD to the command that runs scripts/test.sh on one
# major: 15 here, any other in its root.
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
	echo "matrix: $name started"
	(
		t0=$SECONDS
		timeout -k 30 "$secs" "$@" >"$WORK/$name.log" 2>&1
		echo "$? $((SECONDS - t0))" >"$WORK/$name.rc"
		echo "matrix: $name finished after $((SECONDS - t0))s"
	) &
}

section "matrix: PostgreSQL $PG_VERSIONS"
if [ "${IDEM_SKIP_DEPS:-0}" != 1 ] && ! bash "$ROOT/scripts/deps.sh"; then
	row deps 0 1 0 "scripts/deps.sh failed"
	print_results
	exit
fi
for v in $PG_VERSIONS; do
	[ "$v" = 15 ] || "${SUDO[@]}" bash "$ROOT/scripts/postgres.sh" "$v" &
done
wait

UPGRADES=()
if [[ " $PG_VERSIONS " == *" 15 "* ]]; then
	for v in $PG_VERSIONS; do
		[ "$v" -le 15 ] || UPGRADES+=("$v")
	done
fi
for v in $PG_VERSIONS; do
	major_cmd "$v"
	job "pg$v" $((BUDGET + 600)) "${CMD[@]}"
done
for v in "${UPGRADES[@]}"; do
	job "up15-$v" "${IDEM_T_UPGRADE:-600}" \
		env IDEM_UPGRADE_PORT=$((56000 + 20 * v)) bash "$ROOT/test/upgrade/run.sh" 15 "$v"
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
	NOTE=${NOTE:+failed: $NOTE}
	if [ "$rc" -ne 0 ] && [ "$F" -eq 0 ]; then
		F=1
		NOTE="exit status $rc"
	fi
	row "pg$v" "$P" "$F" "$secs" "$NOTE"
done
for v in "${UPGRADES[@]}"; do
	section "upgrade: 15 to $v (test/upgrade/run.sh)"
	cat "$WORK/up15-$v.log"
	read -r rc secs <"$WORK/up15-$v.rc"
	counts prove "$WORK/up15-$v.log" "$rc"
	row "up15-$v" "$P" "$F" "$secs" "$NOTE"
done
print_results
