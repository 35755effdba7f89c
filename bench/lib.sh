# bench/lib.sh: sourced by the benchmarks.  Builds and installs the extension
# and creates (not starts) a throwaway cluster for them.
#
#   bench_server NAME   deps, build and install from this tree, initdb a cluster
#                       under a new /tmp/idem-NAME.XXXXXX (WORK), removed at exit;
#                       CLUSTER_PRELOAD in the environment preloads the library
#   bench_settings      append the settings every benchmark shares to the
#                       cluster's postgresql.conf (the figure is CPU, not fsync)
#   bench_scripts DIR KEYS
#                       write the pgbench scripts DIR/WORKLOAD_LAYER.sql for the
#                       workloads first, replay (over KEYS completed keys 'r-N')
#                       and once, and the layers bare, hand and ext
#   psql_q ARGS..       psql as the cluster's user, quiet, stopping on error
#   psql_v ARGS..       the same, unaligned tuples only (for values)
#
# PG_VERSION picks the major (default 15, or PG_CONFIG's).  A major this
# machine does not have runs inside its root (scripts/postgres.sh): sourcing
# this file then runs the whole benchmark there again, with its settings
# (ROUNDS, DURATION, ...) passed on, and returns its exit status.  Files it
# names (CG_KEEP, PERF_OUT) are then inside the root: prefix them with
# `bash scripts/postgres.sh VERSION path`.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS

if [ -n "${PG_VERSION:-}" ] && [ "$PG_VERSION" != 15 ] &&
	! { [ -n "${PG_CONFIG:-}" ] && "$PG_CONFIG" --version | grep -q "^PostgreSQL $PG_VERSION\\."; }; then
	if [ -x "/usr/lib/postgresql/$PG_VERSION/bin/pg_config" ]; then
		PG_CONFIG=/usr/lib/postgresql/$PG_VERSION/bin/pg_config
	else
		_bench_env=(PG_VERSION="$PG_VERSION" IDEM_SKIP_DEPS=1)
		for _v in BASELINE BATCH BIG BIG_KEYS BUFFERS BYTES_KEYS CALLGRAPH CALLS CG_KEEP CLIENTS CYCLES \
			DURATION FREQ KEYS LAYERS NAPTIME PAUSE PERF_OUT PERF_REPORT PROFILES ROUNDS SIZES TOP WARMUP CLUSTER_PRELOAD; do
			[ -z "${!_v+set}" ] || _bench_env+=("$_v=${!_v}")
		done
		_bench_sudo=()
		[ "$(id -u)" -eq 0 ] || _bench_sudo=(sudo -n)
		echo "bench: PostgreSQL $PG_VERSION is not on this machine: running $(basename "$0") in its root" >&2
		"${_bench_sudo[@]}" bash "$ROOT/scripts/postgres.sh" "$PG_VERSION" run env "${_bench_env[@]}" \
			bash "/src/bench/$(basename "$0")" "$@"
		exit
	fi
fi
# shellcheck source=scripts/cluster.sh
. "$ROOT/scripts/cluster.sh"

bench_server() {
	[ "${IDEM_SKIP_DEPS:-0}" = 1 ] || bash "$ROOT/scripts/deps.sh"
	WORK=$(mktemp -d "/tmp/idem-$1.XXXXXX")
	chmod 755 "$WORK"
	cluster_at_exit 'rm -rf "$WORK"'
	cluster_build_extension "$ROOT" "$WORK/tree" >/dev/null
	cluster_create "$WORK/cluster"
}

bench_settings() {
	cat >>"$CLUSTER_DATA/postgresql.conf" <<EOF
# benchmark settings: the figure is CPU, not fsync
fsync = on
synchronous_commit = off
full_page_writes = on
shared_buffers = '1GB'
max_wal_size = '8GB'
checkpoint_timeout = '30min'
autovacuum = on
EOF
}

bench_scripts() {
	local dir=$1 keys=$2 layer
	mkdir -p "$dir"
	for layer in bare hand ext; do
		printf '\\set k random(1, 1000000000000)\nSELECT pay_%s(:client_id || %s || :k, 100);\n' \
			"$layer" "'-f-'" >"$dir/first_$layer.sql"
		printf '\\set k random(1, %d)\nSELECT pay_%s(%s || :k, 100);\n' \
			"$keys" "$layer" "'r-'" >"$dir/replay_$layer.sql"
		printf '\\set k random(1, 1000000000000)\nSELECT consume_%s(:client_id || %s || :k);\n' \
			"$layer" "'-m-'" >"$dir/once_$layer.sql"
	done
	chmod -R a+r "$dir"
}

psql_q() { cluster_as_user psql -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_v() { cluster_as_user psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
