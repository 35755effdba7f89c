#!/usr/bin/env bash
# scripts/valgrind.sh: the pg_regress suite against a server under valgrind memcheck.
#
# Usage: bash scripts/valgrind.sh [--isolation]
#
# Builds nothing: it tests the idempotency extension installed for PG_CONFIG
# (run "make install", or scripts/test.sh, first).  It creates a throwaway
# cluster (scripts/cluster.sh), starts the postmaster under valgrind memcheck
# so that every backend and background worker it forks runs under it too,
# runs the pg_regress files named by the Makefile's REGRESS (and, with
# --isolation, the isolation specs of ISOLATION), stops the server, and reads
# valgrind's reports, one per server process.  An error with any stack frame
# in idempotency.so (an invalid read or write, a jump on uninitialised
# memory, an invalid free, ...) fails the run and is printed with its stack;
# errors whose stacks never enter the extension belong to PostgreSQL or the
# libraries and are only counted.  A frame is in the extension when valgrind
# names idempotency.so as its object, or, with debug information, one of the
# extension's source files (src/*.c, src/*.h) as its file.
#
# Suppressions: PostgreSQL's own src/tools/valgrind.supp when one is found
# (VALGRIND_SUPP, or PG_SRC pointing at a PostgreSQL source tree), together
# with test/valgrind.supp, a minimal file for the noise of a packaged server
# (Debian does not ship src/tools/valgrind.supp).
#
# What it can see: Debian's PostgreSQL is built without USE_VALGRIND, so
# memcheck knows malloc()'s blocks but not the palloc() chunks carved out of
# them.  It catches reads of uninitialised memory, use of memory outside any
# block, invalid frees, and overruns past a whole block; an overrun from one
# palloc chunk into the next one of the same block goes unseen.  For the full
# check, use a server configured with CPPFLAGS=-DUSE_VALGRIND (PG_CONFIG=...)
# and its src/tools/valgrind.supp (PG_SRC=...).
#
# Not part of CI (scripts/test.sh): under valgrind the suite takes minutes
# rather than seconds.  The server's memory growth over a million calls is
# checked in CI by test/t/025_memory.pl instead.
#
# Exit status: 0 when the suite passed and no error touched the extension;
# 1 when valgrind reported an error in the extension; 2 when the suite failed
# or could not run (the report still lists any extension errors).
#
# Environment:
#   PG_CONFIG        pg_config of the server to test (default: PostgreSQL 15's)
#   VALGRIND_SUPP    PostgreSQL's valgrind.supp, when not under PG_SRC
#   PG_SRC           a PostgreSQL source tree (for src/tools/valgrind.supp)
#   CLUSTER_PRELOAD=idempotency   preload the library (runs the sweeper launcher too)
#   IDEM_KEEP=1      keep the throwaway directory (cluster, valgrind logs, results)
#   VALGRIND_OPTS    extra valgrind options
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS PGPASSWORD PGDATA
# shellcheck source=scripts/cluster.sh
. "$ROOT/scripts/cluster.sh"

ISOLATION=0
for arg in "$@"; do
	case $arg in
		--isolation) ISOLATION=1 ;;
		-h | --help)
			sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
			exit 0
			;;
		*)
			echo "valgrind.sh: unknown argument $arg" >&2
			exit 2
			;;
	esac
done

say() { printf 'valgrind: %s\n' "$*"; }
die() {
	say "$*"
	exit 2
}

command -v valgrind >/dev/null 2>&1 || die "valgrind is not installed (apt-get install valgrind)"
command -v "$PG_CONFIG" >/dev/null 2>&1 || die "no $PG_CONFIG"
BINDIR=$("$PG_CONFIG" --bindir)
PGXS_DIR=$(dirname "$("$PG_CONFIG" --pgxs)")/../..
LIBDIR=$("$PG_CONFIG" --pkglibdir)
[ -f "$LIBDIR/idempotency.so" ] || die "idempotency is not installed in $LIBDIR: run make install first"

# The suites, as the Makefile names them (printing a variable builds nothing)
make_var() {
	make -s --no-print-directory -C "$ROOT" PG_CONFIG="$PG_CONFIG" \
		-f Makefile -f - "print-$1" <<<'print-%: ; @echo $($*)'
}
REGRESS_LIST=$(make_var REGRESS)
ISOLATION_LIST=$(make_var ISOLATION)
[ -n "$REGRESS_LIST" ] || die "the Makefile names no REGRESS tests"

# Suppressions
SUPP_ARGS=()
pg_supp=${VALGRIND_SUPP:-}
if [ -z "$pg_supp" ] && [ -n "${PG_SRC:-}" ] && [ -f "$PG_SRC/src/tools/valgrind.supp" ]; then
	pg_supp=$PG_SRC/src/tools/valgrind.supp
fi
if [ -n "$pg_supp" ]; then
	[ -f "$pg_supp" ] || die "no suppression file $pg_supp"
	SUPP_ARGS+=("--suppressions=$pg_supp")
	say "PostgreSQL's suppressions: $pg_supp"
else
	say "PostgreSQL's valgrind.supp not found (set VALGRIND_SUPP or PG_SRC); using test/valgrind.supp only"
fi
SUPP_ARGS+=("--suppressions=$ROOT/test/valgrind.supp")

WORK=$(mktemp -d /tmp/idem-valgrind.XXXXXX) || die "mktemp failed"
chmod 755 "$WORK"
if [ "${IDEM_KEEP:-0}" = 1 ]; then
	CLUSTER_KEEP=1
	say "keeping $WORK afterwards"
else
	# shellcheck disable=SC2016 # expanded at exit
	cluster_at_exit 'rm -rf "$WORK"'
fi
VGDIR=$WORK/valgrind
OUT=$WORK/results
mkdir -p "$VGDIR" "$OUT"

cluster_create "$WORK/cluster" || die "initdb failed"
[ "$(id -u)" -eq 0 ] && chown -R "$CLUSTER_USER:" "$VGDIR" "$OUT"
cat >>"$CLUSTER_DATA/postgresql.conf" <<EOF
# under valgrind everything is slow: no timeouts that a slow server would trip
max_connections = 20
statement_timeout = 0
log_min_messages = warning
EOF

# Start the postmaster under valgrind (it forks every other server process)
say "starting the server under valgrind memcheck (log: $CLUSTER_LOG)"
# shellcheck disable=SC2086 # VALGRIND_OPTS is a list of options
cluster_as_user valgrind --quiet --leak-check=no --track-origins=yes \
	--num-callers=40 --read-inline-info=yes --fullpath-after= --gen-suppressions=all \
	--error-markers=VALGRINDERROR-BEGIN,VALGRINDERROR-END \
	"${SUPP_ARGS[@]}" ${VALGRIND_OPTS:-} --log-file="$VGDIR/%p.log" \
	"$BINDIR/postgres" -D "$CLUSTER_DATA" >"$CLUSTER_LOG" 2>&1 &
VG_PID=$!
# shellcheck disable=SC2016 # expanded at exit
cluster_at_exit 'kill "$VG_PID" 2>/dev/null; wait "$VG_PID" 2>/dev/null'
for _ in $(seq 1 300); do
	cluster_as_user pg_isready -q -d postgres -t 1 && break
	kill -0 "$VG_PID" 2>/dev/null || {
		cluster_log_tail 40
		die "the server died while starting"
	}
	sleep 1
done
cluster_as_user pg_isready -q -d postgres -t 1 || die "the server did not start within 300s"

# The suites
SUITE_RC=0
say "pg_regress: $REGRESS_LIST"
# shellcheck disable=SC2086 # word lists
cluster_as_user "$PGXS_DIR/src/test/regress/pg_regress" --inputdir="$ROOT" \
	--outputdir="$OUT/regress" --bindir="$BINDIR" --dbname=contrib_regression \
	--host="$CLUSTER_SOCKDIR" --port="$CLUSTER_PORT" $REGRESS_LIST || SUITE_RC=$?
if [ "$ISOLATION" = 1 ] && [ -n "$ISOLATION_LIST" ]; then
	say "isolation: $ISOLATION_LIST"
	# shellcheck disable=SC2086 # word lists
	cluster_as_user "$PGXS_DIR/src/test/isolation/pg_isolation_regress" --inputdir="$ROOT/test" \
		--outputdir="$OUT/isolation" --bindir="$BINDIR" --dbname=isolation_regression \
		--host="$CLUSTER_SOCKDIR" --port="$CLUSTER_PORT" $ISOLATION_LIST || SUITE_RC=$?
fi
for diffs in "$OUT"/regress/regression.diffs "$OUT"/isolation/regression.diffs; do
	[ -s "$diffs" ] && { echo "----- $diffs -----"; head -n 200 "$diffs"; }
done

# Stop the server and wait for valgrind to write its last report
cluster_stop
wait "$VG_PID" 2>/dev/null

# Read the reports: errors with a frame in idempotency.so, and the rest
say "reading $(find "$VGDIR" -name '*.log' | wc -l) valgrind reports (one per server process)"
REPORT=$WORK/report.txt
SOURCES=$(cd "$ROOT/src" && ls -- *.c *.h 2>/dev/null | tr '\n' ' ')
perl -e '
	my ($dir, $sources) = @ARGV;
	my %ours = map { $_ => 1 } split " ", $sources;
	my ($ours, $theirs, %kinds) = (0, 0);
	for my $file (sort glob("$dir/*.log")) {
		open(my $fh, "<", $file) or next;
		my ($in, @block) = (0);
		while (my $line = <$fh>) {
			if ($line =~ /VALGRINDERROR-BEGIN/) { ($in, @block) = (1); next; }
			if ($in && $line =~ /VALGRINDERROR-END/) {
				$in = 0;
				# the first stack is where the error happened; later ones
				# (where the memory was allocated, or left uninitialised)
				# are context: they decide nothing
				my (@frames, $what);
				my ($in_ext, $stack) = (0, 0);
				my $last_was_frame = 0;
				for (@block) {
					if (/^==\d+==\s+(?:at|by) 0x[0-9A-Fa-f]+: (.*?) \((.*)\)\s*$/) {
						my ($fn, $where) = ($1, $2);
						$stack++ unless $last_was_frame;
						$last_was_frame = 1;
						if ($stack == 1) {
							$in_ext = 1 if $where =~ m{(?:^|/)idempotency\.so$};
							$in_ext = 1 if $where =~ m{(?:^|/)src/([^/:]+):\d+$} && $ours{$1};
						}
						push @frames, "    $fn ($where)";
					} else {
						$last_was_frame = 0;
						if (/^==\d+==\s+(\S.*)$/) {
							if (defined $what) { push @frames, "  $1"; } else { $what = $1; }
						}
					}
				}
				$what //= "?";
				if ($in_ext) {
					$ours++;
					(my $pid = $file) =~ s{.*/(\d+)\.log$}{$1};
					print "error in the extension (process $pid): $what\n",
						join("\n", @frames), "\n\n";
				} else {
					$theirs++;
					(my $kind = $what) =~ s/[(0-9].*//;
					$kinds{$kind}++;
				}
				next;
			}
			push @block, $line if $in;
		}
	}
	print "errors elsewhere (PostgreSQL, libraries): $theirs\n";
	print "    $kinds{$_} x $_\n" for sort keys %kinds;
	print "errors in the extension: $ours\n";
' "$VGDIR" "$SOURCES" | tee "$REPORT"

OURS=$(sed -nE 's/^errors in the extension: ([0-9]+)$/\1/p' "$REPORT")
if [ "${OURS:-0}" -gt 0 ]; then
	say "FAILED: valgrind found $OURS errors in idempotency.so"
	[ "${IDEM_KEEP:-0}" = 1 ] || say "(rerun with IDEM_KEEP=1 to keep the reports)"
	exit 1
fi
if [ "$SUITE_RC" -ne 0 ]; then
	say "FAILED: the suite failed under valgrind (exit status $SUITE_RC); no error in the extension"
	exit 2
fi
say "passed: the suite passed under valgrind with no error in the extension"
exit 0
