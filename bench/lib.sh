# bench/lib.sh: sourced by the benchmarks.  Builds and installs the extension
# and creates (not starts) a throwaway cluster for them.
#
#   bench_server NAME   deps, build and install from this tree, initdb a cluster
#                       under a new /tmp/idem-NAME.XXXXXX (WORK), removed at exit;
#                       CLUSTER_PRELOAD in the environment preloads the library
#   psql_q ARGS..       psql as the cluster's user, quiet, stopping on error
#   psql_v ARGS..       the same, unaligned tuples only (for values)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS
# shellcheck source=scripts/cluster.sh
. "$ROOT/scripts/cluster.sh"

bench_server() {
	bash "$ROOT/scripts/deps.sh"
	WORK=$(mktemp -d "/tmp/idem-$1.XXXXXX")
	chmod 755 "$WORK"
	cluster_at_exit 'rm -rf "$WORK"'
	cluster_build_extension "$ROOT" "$WORK/tree" >/dev/null
	cluster_create "$WORK/cluster"
}

psql_q() { cluster_as_user psql -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_v() { cluster_as_user psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
