# shellcheck shell=bash disable=SC2034  # P, F and NOTE are for the caller
# scripts/results.sh: sourced by scripts/test.sh and scripts/matrix.sh.  The
# summary table, the closing line, and the counts read from a tool's own summary.
#
#   section TITLE          a heading in the log
#   row NAME P F SECS NOTE one summary row: PASS when F is 0, FAIL otherwise
#   skip NAME NOTE         a row for a suite that has nothing to run
#   counts KIND LOG RC     P, F and NOTE from the summary that a tool of KIND
#                          (pg_regress, prove, pytest, line) left in LOG, and
#                          its exit status RC: a tool that exits non-zero
#                          (124, 137: timed out) or prints no summary adds a
#                          failure when its summary counts none
#   print_results          the rows, the total time and, last, the closing line
#                          "N passed, M failed" (prefixed "LABEL: " when
#                          IDEM_LABEL is set); false when anything failed

START=$SECONDS
ROWS=()
TOTAL_P=0
TOTAL_F=0

section() { printf '\n========== %s ==========\n' "$*"; }

row() {
	local result=PASS
	[ "$3" -eq 0 ] || result=FAIL
	ROWS+=("$(printf '%-10s %s %5d passed, %3d failed %5ss  %s' "$1" "$result" "$2" "$3" "$4" "$5")")
	TOTAL_P=$((TOTAL_P + $2))
	TOTAL_F=$((TOTAL_F + $3))
}

skip() { ROWS+=("$(printf '%-10s SKIP  %s' "$1" "$2")"); }

counts() {
	local s n
	P=0 F=0 NOTE=
	case $1 in
	pg_regress)   # "All 17 tests passed." or "2 of 17 tests failed.", with "# " from 16 on
		s=$(grep -oE 'All [0-9]+ tests passed|[0-9]+ of [0-9]+ tests failed' "$2" | tail -n 1)
		case $s in
		All*) P=${s//[^0-9]/} ;;
		?*) read -r F _ n _ <<<"$s" && P=$((n - F)) ;;
		esac ;;
	prove)        # "Files=2, Tests=38, ..." and, per failing file, "(Wstat: ... Failed: 1)"
		s=$(sed -nE 's/^Files=[0-9]+, Tests=([0-9]+),.*/\1/p' "$2" | tail -n 1)
		F=$(grep -oE 'Failed: [0-9]+\)' "$2" | awk '{ n += $2 } END { print n + 0 }')
		P=$((${s:-0} - F)) ;;
	pytest)       # "3 passed, 1 failed, 2 errors in 0.52s"
		s=$(grep -E '[0-9]+ (passed|failed|errors?)\b.* in [0-9.]+s' "$2" | tail -n 1)
		P=$(grep -oE '[0-9]+ passed' <<<"$s" | awk '{ n += $1 } END { print n + 0 }')
		F=$(grep -oE '[0-9]+ (failed|errors?)' <<<"$s" | awk '{ n += $1 } END { print n + 0 }') ;;
	line)         # "3300 passed, 0 failed", or "clients: 49 passed, 0 failed"
		s=$(grep -E '^([a-z]+: )?[0-9]+ passed, [0-9]+ failed' "$2" | tail -n 1)
		s=${s#*: }
		[ -z "$s" ] || read -r P _ F _ <<<"${s//,/}" ;;
	esac
	[ -n "$s" ] || NOTE="no summary line"
	[ "$3" -ne 124 ] && [ "$3" -ne 137 ] || NOTE="timed out"
	if [ "$3" -ne 0 ] || [ -z "$s" ]; then
		[ "$F" -gt 0 ] || F=1
		[ -n "$NOTE" ] || NOTE="exit status $3"
	fi
}

print_results() {
	section summary
	printf '%s\n' "${ROWS[@]}"
	printf 'total time %ss\n' "$((SECONDS - START))"
	printf '%s%d passed, %d failed\n' "${IDEM_LABEL:+$IDEM_LABEL: }" "$TOTAL_P" "$TOTAL_F"
	[ "$TOTAL_F" -eq 0 ]
}
