# scripts/cluster.sh: throwaway PostgreSQL clusters for the test and demo scripts.
#
# Source it, then:
#
#   cluster_create [DIR]   initdb a new cluster in DIR (default: a new mktemp dir
#                          under /tmp), on a free port >= 55432 and its own unix
#                          socket directory; sets CLUSTER_DIR, CLUSTER_DATA,
#                          CLUSTER_SOCKDIR, CLUSTER_PORT, CLUSTER_LOG, CLUSTER_USER
#   cluster_start          start it and wait until it accepts connections
#   cluster_stop           stop it (fast shutdown)
#   cluster_destroy        stop it and remove its directory
#   cluster_as_user CMD..  run CMD as the cluster's OS user, with PATH, PGHOST and
#                          PGPORT pointing at the cluster
#   cluster_as_user_timeout SECS CMD..   the same, killed after SECS seconds
#   cluster_psql ARGS..    psql as the cluster's OS user, quiet, stopping on error
#   cluster_at_exit CMD    run the shell command CMD at exit (last added, first run)
#   cluster_build_extension SRC TREE
#                          copy the source tree SRC to TREE (owned by the cluster's
#                          OS user), build it there and install it, as root or
#                          through sudo, under flock /tmp/idem-build.lock (for a
#                          PostgreSQL under /usr/lib/postgresql; for any other,
#                          a lock of its own, /tmp/idem-build.HASH.lock)
#
# cluster_create arranges for cluster_destroy to run when the shell exits.  When
# the invoker is root the cluster runs as the "postgres" OS user (initdb refuses
# root); otherwise as the invoker.  The server listens on its unix socket only,
# so it can neither clash with nor reach any other cluster on the machine.
#
# Settings, through the environment:
#   PG_CONFIG             pg_config of the server to use (default: PostgreSQL 15's)
#   CLUSTER_PORT_BASE     first port to try (default 55432)
#   CLUSTER_PRELOAD       shared_preload_libraries for the server (default: none)
#   CLUSTER_KEEP=1        keep the directory at exit, for a look afterwards

if [ -z "${PG_CONFIG:-}" ]; then
	if [ -x /usr/lib/postgresql/15/bin/pg_config ]; then
		PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
	else
		PG_CONFIG=pg_config
	fi
fi
export PG_CONFIG

CLUSTER_DIR=
CLUSTER_DATA=
CLUSTER_SOCKDIR=
CLUSTER_PORT=
CLUSTER_LOG=
CLUSTER_USER=
CLUSTER_BINDIR=
_CLUSTER_AT_EXIT=()

cluster_log() { printf 'cluster: %s\n' "$*" >&2; }

# Run each registered exit action once, newest first, whatever the exit status.
_cluster_run_at_exit() {
	local i
	for ((i = ${#_CLUSTER_AT_EXIT[@]} - 1; i >= 0; i--)); do
		eval "${_CLUSTER_AT_EXIT[$i]}" || true
	done
	_CLUSTER_AT_EXIT=()
}

cluster_at_exit() {
	if [ "${#_CLUSTER_AT_EXIT[@]}" -eq 0 ]; then
		trap _cluster_run_at_exit EXIT
		trap 'exit 130' INT
		trap 'exit 143' TERM
	fi
	_CLUSTER_AT_EXIT+=("$1")
}

# The OS user the server and the tests run as.
cluster_os_user() {
	if [ "$(id -u)" -eq 0 ]; then
		echo postgres
	else
		id -un
	fi
}

# Run a command as the cluster's OS user.  PATH starts with the server's bindir
# so that initdb, pg_ctl and psql are PostgreSQL 15's and not a wrapper's.
cluster_as_user() {
	cluster_as_user_timeout 0 "$@"
}

# The same, killed (with everything it started) after SECS seconds; 0: no limit.
cluster_as_user_timeout() {
	local secs=$1
	shift
	local bindir=${CLUSTER_BINDIR:-$("$PG_CONFIG" --bindir)}
	local -a cmd=(env "PATH=$bindir:$PATH")
	[ -n "$CLUSTER_SOCKDIR" ] && cmd+=("PGHOST=$CLUSTER_SOCKDIR" "PGPORT=$CLUSTER_PORT")
	if [ "$(id -u)" -eq 0 ]; then
		cmd=(runuser -u "${CLUSTER_USER:-postgres}" -- "${cmd[@]}")
	fi
	if [ "$secs" -gt 0 ]; then
		cmd=(timeout -k 15 "$secs" "${cmd[@]}")
	fi
	"${cmd[@]}" "$@"
}

cluster_psql() {
	cluster_as_user psql -X -q -v ON_ERROR_STOP=1 "$@"
}

# True when nothing seems to use PORT: no listening TCP socket, no socket in the
# usual directories or in another throwaway cluster of these scripts, and no
# server answering.  (Our servers listen on a private socket only, so a clash
# would be harmless; distinct ports just keep logs and ps output clear.)
_cluster_port_free() {
	local port=$1 d
	if command -v ss >/dev/null 2>&1; then
		[ -z "$(ss -Hltn "sport = :$port" 2>/dev/null)" ] || return 1
	fi
	for d in /tmp /var/run/postgresql /run/postgresql; do
		[ -e "$d/.s.PGSQL.$port" ] && return 1
		[ -e "$d/.s.PGSQL.$port.lock" ] && return 1
	done
	compgen -G "/tmp/idem-*/port.$port" >/dev/null && return 1
	compgen -G "/tmp/idem-*/cluster/port.$port" >/dev/null && return 1
	if command -v pg_isready >/dev/null 2>&1; then
		pg_isready -q -h localhost -p "$port" -t 1 >/dev/null 2>&1
		[ $? -eq 2 ] || return 1
	fi
	return 0
}

_cluster_pick_port() {
	local port=${CLUSTER_PORT_BASE:-55432} last
	last=$((port + 500))
	while [ "$port" -lt "$last" ]; do
		if _cluster_port_free "$port"; then
			echo "$port"
			return 0
		fi
		port=$((port + 1))
	done
	cluster_log "no free port between ${CLUSTER_PORT_BASE:-55432} and $last"
	return 1
}

# Print the end of the server log, to show why something failed.
cluster_log_tail() {
	local n=${1:-60}
	if [ -n "$CLUSTER_LOG" ] && [ -f "$CLUSTER_LOG" ]; then
		echo "----- last $n lines of $CLUSTER_LOG -----" >&2
		tail -n "$n" "$CLUSTER_LOG" >&2
		echo "-----" >&2
	fi
}

cluster_create() {
	local dir=${1:-}

	CLUSTER_USER=$(cluster_os_user)
	CLUSTER_BINDIR=$("$PG_CONFIG" --bindir) || {
		cluster_log "cannot run $PG_CONFIG"
		return 1
	}
	if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
		cluster_log "running as root, but there is no postgres OS user to run the server"
		return 1
	fi

	if [ -z "$dir" ]; then
		dir=$(mktemp -d /tmp/idem-cluster.XXXXXX)
	else
		mkdir -p "$dir"
	fi
	CLUSTER_DIR=$(cd "$dir" && pwd)
	CLUSTER_DATA=$CLUSTER_DIR/data
	CLUSTER_SOCKDIR=$CLUSTER_DIR/sock
	CLUSTER_LOG=$CLUSTER_DIR/postgres.log
	cluster_at_exit cluster_destroy

	mkdir -p "$CLUSTER_SOCKDIR"
	chmod 700 "$CLUSTER_DIR"
	if [ "$(id -u)" -eq 0 ]; then
		chown -R "$CLUSTER_USER": "$CLUSTER_DIR"
	fi

	CLUSTER_PORT=$(_cluster_pick_port) || return 1
	: >"$CLUSTER_DIR/port.$CLUSTER_PORT"   # taken, for the next cluster_create

	local initlog=$CLUSTER_DIR/initdb.log
	if ! cluster_as_user initdb -D "$CLUSTER_DATA" -U "$CLUSTER_USER" -A trust \
			-E UTF8 --locale=C --no-sync >"$initlog" 2>&1; then
		cluster_log "initdb failed:"
		tail -n 40 "$initlog" >&2
		return 1
	fi

	cat >>"$CLUSTER_DATA/postgresql.conf" <<-EOF

	# throwaway test cluster (scripts/cluster.sh)
	port = $CLUSTER_PORT
	listen_addresses = ''
	unix_socket_directories = '$CLUSTER_SOCKDIR'
	fsync = off
	synchronous_commit = off
	full_page_writes = off
	max_connections = 100
	max_worker_processes = 16
	shared_preload_libraries = '${CLUSTER_PRELOAD:-}'
	log_line_prefix = '%m [%p] %q%a '
	EOF
	cluster_log "created $CLUSTER_DATA (port $CLUSTER_PORT, socket $CLUSTER_SOCKDIR, user $CLUSTER_USER)"
}

cluster_start() {
	if ! cluster_as_user pg_ctl -D "$CLUSTER_DATA" -l "$CLUSTER_LOG" -w -t 60 start >/dev/null 2>&1; then
		cluster_log "server failed to start"
		cluster_log_tail 40
		return 1
	fi
	if ! cluster_as_user pg_isready -q -d postgres -t 30; then
		cluster_log "server does not accept connections"
		cluster_log_tail 40
		return 1
	fi
	cluster_log "started on port $CLUSTER_PORT; log: $CLUSTER_LOG"
}

cluster_stop() {
	[ -n "$CLUSTER_DATA" ] && [ -f "$CLUSTER_DATA/postmaster.pid" ] || return 0
	cluster_as_user pg_ctl -D "$CLUSTER_DATA" -m fast -w -t 60 stop >/dev/null 2>&1 ||
		cluster_as_user pg_ctl -D "$CLUSTER_DATA" -m immediate -w stop >/dev/null 2>&1 || true
}

cluster_destroy() {
	[ -n "$CLUSTER_DIR" ] || return 0
	cluster_stop
	if [ "${CLUSTER_KEEP:-0}" = 1 ]; then
		cluster_log "kept $CLUSTER_DIR"
	else
		rm -rf "$CLUSTER_DIR"
	fi
	CLUSTER_DIR=
	CLUSTER_DATA=
	CLUSTER_SOCKDIR=
}

# True when the installed module, control files and scripts are the ones in TREE.
_cluster_installed_is_current() {
	local tree=$1 f ext_dir lib_dir
	ext_dir=$("$PG_CONFIG" --sharedir)/extension
	lib_dir=$("$PG_CONFIG" --pkglibdir)
	cmp -s "$tree/idempotency.so" "$lib_dir/idempotency.so" || return 1
	for f in "$tree"/*.control "$tree"/*--*.sql; do
		cmp -s "$f" "$ext_dir/$(basename "$f")" || return 1
	done
}

cluster_build_extension() {
	local src=$1 tree=$2 user log lock lib_dir
	local -a install sudo=()
	user=$(cluster_os_user)
	log=$(dirname "$tree")/build.log

	mkdir -p "$tree"
	if ! tar -C "$src" -cf - \
			--exclude=./.git --exclude=./results --exclude=./output_iso --exclude=./tmp_check \
			--exclude=./tmp_check_iso --exclude=./log --exclude=./.cluster \
			--exclude=./regression.diffs --exclude=./regression.out \
			--exclude='*.o' --exclude='*.so' --exclude='*.bc' . |
			tar -C "$tree" -xf -; then
		cluster_log "copying $src to $tree failed"
		return 1
	fi
	if [ "$(id -u)" -eq 0 ]; then
		chown -R "$user:" "$tree" || return 1
	fi
	cluster_log "copied $src to $tree"

	# The prefix map keeps the throwaway path out of the binary, so that equal
	# sources give an equal idempotency.so wherever they were built.
	if ! cluster_as_user make -C "$tree" PG_CONFIG="$PG_CONFIG" COPT="-ffile-prefix-map=$tree=." \
			-j"$(nproc 2>/dev/null || echo 2)" >"$log" 2>&1; then
		cat "$log" >&2
		cluster_log "make failed"
		return 1
	fi
	grep -E 'warning:' "$log" >&2 || true
	cluster_log "built idempotency.so ($(grep -c 'warning:' "$log") compiler warnings)"

	install=(make -C "$tree" PG_CONFIG="$PG_CONFIG" install)
	if command -v flock >/dev/null 2>&1; then
		# Only installs into the same PostgreSQL need to wait for each other.
		lock=/tmp/idem-build.lock
		lib_dir=$("$PG_CONFIG" --pkglibdir)
		case $lib_dir in
		/usr/lib/postgresql/*) ;;
		*) lock=/tmp/idem-build.$(printf '%s' "$lib_dir" | md5sum | cut -c1-12).lock ;;
		esac
		install=(flock "$lock" "${install[@]}")
	fi
	if [ "$(id -u)" -ne 0 ]; then
		if _cluster_installed_is_current "$tree"; then
			cluster_log "the installed extension is this build already; not installing"
			return 0
		elif ! command -v sudo >/dev/null 2>&1; then
			cluster_log "not root and no sudo: cannot install; run 'make install' as root first"
			return 1
		elif [ -t 0 ]; then
			sudo=(sudo)
		else
			sudo=(sudo -n)
		fi
	fi
	if ! "${sudo[@]}" "${install[@]}" >>"$log" 2>&1; then
		tail -n 30 "$log" >&2
		cluster_log "make install failed"
		return 1
	fi
	cluster_log "installed into $("$PG_CONFIG" --pkglibdir) and $("$PG_CONFIG" --sharedir)/extension"
}
