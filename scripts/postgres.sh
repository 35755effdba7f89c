#!/usr/bin/env bash
# scripts/postgres.sh: a clean Debian root holding one PostgreSQL major, for building and testing there.
#
# Usage:
#   bash scripts/postgres.sh VERSION              make the root (once; kept between runs)
#   bash scripts/postgres.sh VERSION run CMD...   run CMD inside it, as root, with /proc, /dev
#                                                 and the work tree mounted (at /src, read-only)
#   bash scripts/postgres.sh VERSION path         print the root's directory
#
# PostgreSQL 15 is this machine's own Debian package (scripts/deps.sh) and has no root.
# Majors that this Debian release does not package come from the suite that does, as
# Debian's PostgreSQL team tests extensions: one minimal root per major, made with
# debootstrap and entered with chroot.
#
#   VERSION   suite     packages
#   16        bookworm  not packaged by Debian: refused (see README, "Supported versions")
#   17        trixie    postgresql-17, postgresql-server-dev-17, postgresql-17-pgtap
#   18        sid       postgresql-18, postgresql-server-dev-18, postgresql-18-pgtap
#
# plus gcc, make, pg_prove, IPC::Run, the Python packages the tests use and valgrind.  The
# mirror is the one this machine's own apt sources name for Debian.  Roots live in
# $IDEM_ROOTS (default /var/cache/idempotency), one directory per major; a root is
# complete once its stamp file names the current package list, so an interrupted
# build or a changed list is finished or extended on the next call.
#
# Mounts made for `run` live in a private mount namespace (unshare), so they vanish
# with the last process inside: a server started there keeps them while it runs.
#
# Citus is not among the packages: `bash scripts/citus.sh --root VERSION` builds it into
# a root (and installs, there, the Debian packages its build needs); it is kept with the
# root until the root is made afresh.
set -euo pipefail

ROOTS=${IDEM_ROOTS:-/var/cache/idempotency}
ROOT_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

usage() {
	echo "usage: bash scripts/postgres.sh VERSION [run CMD... | path]" >&2
	exit 2
}

[ $# -ge 1 ] || usage
VERSION=$1
shift

case "$VERSION" in
	17) SUITE=trixie ;;
	18) SUITE=sid ;;
	15) die "PostgreSQL 15 is this machine's own package: use scripts/deps.sh, no root is needed" ;;
	16) die "PostgreSQL 16 is packaged by no Debian suite that can be reached here" ;;
	*) die "unsupported PostgreSQL major '$VERSION' (supported: 15, 17, 18)" ;;
esac

DIR=$ROOTS/pg$VERSION
STAMP=$DIR/.idempotency-root
PACKAGES=(
	"postgresql-$VERSION" "postgresql-server-dev-$VERSION" "postgresql-$VERSION-pgtap"
	libtap-parser-sourcehandler-pgtap-perl libipc-run-perl
	gcc make libc6-dev
	python3 python3-psycopg python3-hypothesis python3-pytest
	procps iproute2 util-linux
	valgrind  # bench/instructions.sh
)

# The Debian mirror this machine's apt uses for its own release: the URI of the first
# source (one-line or deb822 format) that carries the release's main suite.
debian_mirror() {
	local codename uri
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
	[ -n "$codename" ] || return 1
	uri=$(
		{
			cat /etc/apt/sources.list 2>/dev/null || true
			cat /etc/apt/sources.list.d/*.list 2>/dev/null || true
		} | awk -v s="$codename" '$1 == "deb" {
				i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
				if ($(i + 1) == s) { print $i; exit }
			}'
	)
	if [ -z "$uri" ]; then
		uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v s="$codename" '
			BEGIN { RS = ""; FS = "\n" }
			{
				u = ""; hit = 0
				for (i = 1; i <= NF; i++) {
					if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); u = a[2] }
					if ($i ~ /^Suites:/) { n = split($i, b, /[ \t]+/); for (j = 2; j <= n; j++) if (b[j] == s) hit = 1 }
				}
				if (hit && u != "") { print u; exit }
			}')
	fi
	[ -n "$uri" ] || return 1
	printf '%s\n' "$uri"
}

root_ready() { [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "${SUITE} ${PACKAGES[*]}" ]; }

# Make the root, or finish one that an earlier call left incomplete; one caller at
# a time (the lock is not held by what `run` starts, such as a server).
make_root() {
	root_ready && return 0
	[ "$(id -u)" -eq 0 ] || die "making a root needs root (debootstrap, chroot)"
	mkdir -p "$ROOTS"
	(
		flock 9
		root_ready || build_root
	) 9>"$ROOTS/pg$VERSION.lock"
}

build_root() {
	local mirror
	if ! command -v debootstrap >/dev/null 2>&1; then
		# the roots are made side by side, and scripts/citus.sh may use apt here too:
		# one apt-get at a time, under the lock that citus.sh takes
		(
			flock 8
			command -v debootstrap >/dev/null 2>&1 && exit 0
			log "installing debootstrap"
			DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600 update >/dev/null
			DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600 \
				install --no-install-recommends debootstrap >/dev/null
		) 8>/tmp/idem-apt.lock
	fi
	mirror=$(debian_mirror) || die "no Debian mirror found in this machine's apt sources"
	if [ ! -x "$DIR/usr/bin/apt-get" ] || [ ! -f "$DIR/.debootstrap-done" ]; then
		rm -rf "$DIR"
		log "debootstrap $SUITE into $DIR"
		# sid's keys may be newer than this machine's keyring: fall back to no check for sid only.
		if ! debootstrap --variant=minbase "$SUITE" "$DIR" "$mirror" >"$ROOTS/pg$VERSION.debootstrap.log" 2>&1; then
			if [ "$SUITE" = sid ]; then
				log "debootstrap of sid could not verify its Release file with this keyring; retrying without"
				rm -rf "$DIR"
				debootstrap --no-check-gpg --variant=minbase "$SUITE" "$DIR" "$mirror" \
					>"$ROOTS/pg$VERSION.debootstrap.log" 2>&1 ||
					{ tail -n 30 "$ROOTS/pg$VERSION.debootstrap.log" >&2; die "debootstrap failed"; }
			else
				tail -n 30 "$ROOTS/pg$VERSION.debootstrap.log" >&2
				die "debootstrap failed"
			fi
		fi
		touch "$DIR/.debootstrap-done"
	fi
	printf 'deb %s %s main\n' "$mirror" "$SUITE" >"$DIR/etc/apt/sources.list"
	rm -f "$DIR"/etc/apt/sources.list.d/*.sources
	if [ "$SUITE" = sid ]; then
		# sid's Release file may be past its Valid-Until date on a snapshot mirror.
		echo 'Acquire::Check-Valid-Until "false";' >"$DIR/etc/apt/apt.conf.d/99idempotency-sid"
	fi
	# Keep the package's own cluster out of the way: no cluster "main" is made in the root.
	mkdir -p "$DIR/etc/postgresql-common/createcluster.d"
	echo 'create_main_cluster = false' >"$DIR/etc/postgresql-common/createcluster.d/idempotency.conf"
	# No services are started inside the root by package scripts.
	printf '#!/bin/sh\nexit 101\n' >"$DIR/usr/sbin/policy-rc.d"
	chmod 755 "$DIR/usr/sbin/policy-rc.d"
	same_postgres_user
	log "installing ${PACKAGES[*]} in the $SUITE root"
	in_root env DEBIAN_FRONTEND=noninteractive apt-get -q -y update >"$ROOTS/pg$VERSION.apt.log" 2>&1 ||
		{ tail -n 30 "$ROOTS/pg$VERSION.apt.log" >&2; die "apt-get update failed in the root"; }
	in_root env DEBIAN_FRONTEND=noninteractive apt-get -q -y install --no-install-recommends "${PACKAGES[@]}" \
		>>"$ROOTS/pg$VERSION.apt.log" 2>&1 ||
		{ tail -n 30 "$ROOTS/pg$VERSION.apt.log" >&2; die "apt-get install failed in the root"; }
	in_root apt-get clean >/dev/null 2>&1 || true
	printf '%s' "${SUITE} ${PACKAGES[*]}" >"$STAMP"
	log "root ready: $DIR ($(in_root "/usr/lib/postgresql/$VERSION/bin/pg_config" --version))"
}

# Give the root's postgres user this machine's uid and gid, so that its servers and
# files show as postgres outside it too; only where the ids are free in the root.
same_postgres_user() {
	local uid gid
	uid=$(id -u postgres 2>/dev/null) && gid=$(id -g postgres 2>/dev/null) || return 0
	in_root getent passwd postgres >/dev/null && return 0
	in_root getent passwd "$uid" >/dev/null && return 0
	in_root getent group "$gid" >/dev/null && return 0
	in_root getent group postgres >/dev/null && return 0
	in_root groupadd -r -g "$gid" postgres &&
		in_root useradd -r -u "$uid" -g postgres -d /var/lib/postgresql -s /bin/bash postgres ||
		log "could not give the root's postgres user uid $uid; the package will choose one"
}

# Run a command inside the root, in a private mount namespace with /proc, /dev,
# /dev/pts, /dev/shm and the work tree (read-only, at /src) mounted.
in_root() {
	mkdir -p "$DIR/src"
	unshare --mount --propagation private -- /bin/bash -c '
		set -e
		d=$1 src=$2
		shift 2
		mount -t proc proc "$d/proc"
		mount --rbind /dev "$d/dev"
		mount -t tmpfs -o mode=1777 shm "$d/dev/shm" 2>/dev/null || true
		mount --bind "$src" "$d/src"
		mount -o remount,bind,ro "$d/src" 2>/dev/null || true
		cp -L /etc/resolv.conf "$d/etc/resolv.conf" 2>/dev/null || true
		exec chroot "$d" /usr/bin/env -i HOME=/root TERM="${TERM:-dumb}" LANG=C.UTF-8 \
			PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
	' in_root "$DIR" "$ROOT_SRC" "$@"
}

case "${1:-}" in
	"")
		make_root
		;;
	path)
		echo "$DIR"
		;;
	run)
		shift
		[ $# -ge 1 ] || usage
		make_root
		in_root "$@"
		;;
	*)
		usage
		;;
esac
