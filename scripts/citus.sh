#!/usr/bin/env bash
# scripts/citus.sh: build and install the vendored Citus release that matches a PostgreSQL major.
#
# Usage:
#   bash scripts/citus.sh VERSION          build Citus for the server of PostgreSQL VERSION here
#   bash scripts/citus.sh --root VERSION   build it inside the root of VERSION (17, 18) that
#                                          scripts/postgres.sh makes (made first when missing)
#
# Citus is not packaged for Debian; its release sources live in ../shared/vendor (see the README
# there; $CITUS_VENDOR names another directory).  13.2.2 is used for PostgreSQL 15 to 17, 14.0.1
# (which dropped 15) for 18.  The build goes into the directories of the server that $PG_CONFIG
# names (default: Debian's /usr/lib/postgresql/VERSION/bin/pg_config, as CI uses it), with
# `./configure PG_CONFIG=... && make -j2 && make install` (without the LLVM bitcode that JIT
# inlining would use), in a scratch copy of the tarball, never in the vendor directory.
#
# With --root (as root, or through sudo), the script copies the tarball into the root's /tmp
# and runs itself there, where the tree is at /src: the root's own server is built against,
# and its Citus lives in the root, kept with it between runs ($IDEM_ROOTS, as postgres.sh).
#
# Idempotent: a stamp file beside citus.so names the release and the server it was built for;
# when it matches and citus.so is there, nothing is built.  One build at a time per server
# (flock on /tmp/idem-citus-VERSION.lock, inside the root for a root).  As root, the Debian
# packages Citus needs to build (libcurl4-openssl-dev liblz4-dev libzstd-dev and the libraries
# PGXS links against) are installed with apt-get when missing, after an apt-get update: a root's
# package lists may be older than its mirror.
#
# Patches (applied to the scratch copy only):
#   13.2.2 on 15: src/include/pg_version_compat.h defines `static inline bool
#   have_createdb_privilege(void)` for PostgreSQL < 16, but current 15.x minor releases export
#   that function from commands/dbcommands.h ("static declaration follows non-static
#   declaration").  The static definition is removed; Citus then calls the server's own.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENDOR=${CITUS_VENDOR:-$ROOT/../shared/vendor}
JOBS=${CITUS_JOBS:-2}

log() { printf 'citus.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

usage() { echo "usage: bash scripts/citus.sh [--root] VERSION" >&2; exit 2; }
IN_ROOT=0
if [ "${1:-}" = --root ]; then
	IN_ROOT=1
	shift
fi
[ $# -eq 1 ] || usage
MAJOR=$1

case "$MAJOR" in
	15 | 16 | 17) CITUS=13.2.2 ;;
	18) CITUS=14.0.1 ;;
	*) die "no vendored Citus for PostgreSQL '$MAJOR' (supported: 15, 16, 17, 18)" ;;
esac

TARBALL=$VENDOR/citus-$CITUS.tar.gz
[ -r "$TARBALL" ] || die "missing $TARBALL (see $VENDOR/README.md)"

# --root: run this script inside the root, with a copy of the tarball
if [ "$IN_ROOT" = 1 ]; then
	SUDO=()
	[ "$(id -u)" -eq 0 ] || SUDO=(sudo -n)
	"${SUDO[@]}" bash "$ROOT/scripts/postgres.sh" "$MAJOR"   # make it when missing
	DIR=$(bash "$ROOT/scripts/postgres.sh" "$MAJOR" path)
	INVENDOR=$("${SUDO[@]}" mktemp -d "$DIR/tmp/citus-vendor.XXXXXX")
	trap '"${SUDO[@]}" rm -rf "$INVENDOR"' EXIT
	"${SUDO[@]}" cp "$TARBALL" "$INVENDOR/"
	rc=0
	"${SUDO[@]}" bash "$ROOT/scripts/postgres.sh" "$MAJOR" run env CITUS_VENDOR="${INVENDOR#"$DIR"}" \
		CITUS_JOBS="$JOBS" bash /src/scripts/citus.sh "$MAJOR" || rc=$?
	exit $rc
fi

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/$MAJOR/bin/pg_config}
[ -x "$PG_CONFIG" ] || PG_CONFIG=$(command -v pg_config || true)
[ -n "$PG_CONFIG" ] && [ -x "$PG_CONFIG" ] || die "no pg_config for PostgreSQL $MAJOR (set PG_CONFIG)"
PG_VERSION=$("$PG_CONFIG" --version)
case "$PG_VERSION" in
	"PostgreSQL $MAJOR."*) ;;
	*) die "$PG_CONFIG is $PG_VERSION, not PostgreSQL $MAJOR" ;;
esac

PKGLIBDIR=$("$PG_CONFIG" --pkglibdir)
STAMP=$PKGLIBDIR/citus.stamp
WANT="citus $CITUS for $PG_VERSION ($(sha256sum "$TARBALL" | cut -c1-16))"

built() { [ -f "$PKGLIBDIR/citus.so" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; }
if built; then
	log "$WANT is installed in $PKGLIBDIR: nothing to do"
	exit 0
fi
# One build at a time; a build that finished while we waited is not done again
exec 9>"/tmp/idem-citus-$MAJOR.lock"
flock 9
if built; then
	log "$WANT is installed in $PKGLIBDIR: nothing to do"
	exit 0
fi

# Debian packages Citus's configure and build need: its own libraries (curl, lz4, zstd), the
# headers the server's headers include (gssapi: krb5; ICU) and libssl, which Citus links.
DEPS=(libpq-dev libcurl4-openssl-dev liblz4-dev libzstd-dev libkrb5-dev libssl-dev libicu-dev
	zlib1g-dev make gcc)
missing=()
for p in "${DEPS[@]}"; do
	[ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -eq 0 ]; then
		log "installing ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		aptlog=$(mktemp /tmp/citus-apt.XXXXXX)
		# one apt-get at a time (scripts/postgres.sh takes this lock too; in a root, its own /tmp)
		if ! {
			flock 8 && apt-get -q -o DPkg::Lock::Timeout=600 update &&
				apt-get -q -y -o DPkg::Lock::Timeout=600 install --no-install-recommends "${missing[@]}"
		} 8>/tmp/idem-apt.lock >"$aptlog" 2>&1; then
			tail -n 30 "$aptlog" >&2
			rm -f "$aptlog"
			die "apt-get could not install ${missing[*]}"
		fi
		rm -f "$aptlog"
	else
		log "missing Debian packages (run as root to install them): ${missing[*]}"
	fi
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/citus-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
tar -xzf "$TARBALL" -C "$WORK"
SRC=$(find "$WORK" -mindepth 1 -maxdepth 1 -type d | head -n1)
[ -n "$SRC" ] || die "$TARBALL holds no directory"

# The documented patch: 13.2.2 on 15.x minors that export have_createdb_privilege().
if [ "$CITUS" = 13.2.2 ] && [ "$MAJOR" = 15 ] &&
	grep -q 'have_createdb_privilege' "$("$PG_CONFIG" --includedir-server)/commands/dbcommands.h"; then
	log "patching pg_version_compat.h: the server exports have_createdb_privilege()"
	perl -0pi -e 's/static inline bool\s*\n?\s*have_createdb_privilege\(void\)\s*\{.*?\n\}\n//s' \
		"$SRC/src/include/pg_version_compat.h"
	if grep -q 'have_createdb_privilege(void)' "$SRC/src/include/pg_version_compat.h"; then
		die "the have_createdb_privilege patch no longer applies to $TARBALL"
	fi
fi

log "building citus $CITUS for $PG_VERSION ($PG_CONFIG)"
start=$(date +%s)
# Citus's own compiler warnings are not ours: the build's output is shown when it fails
if ! (
	cd "$SRC"
	./configure PG_CONFIG="$PG_CONFIG" --quiet
	# no LLVM bitcode for JIT inlining: it doubles the build for little
	make -s -j"$JOBS" with_llvm=no
	make -s install with_llvm=no
) >"$WORK/build.log" 2>&1; then
	{ grep -E -B2 -A6 'error|Error' "$WORK/build.log" || tail -n 30 "$WORK/build.log"; } | tail -n 60 >&2
	die "the build of citus $CITUS failed"
fi
echo "$WANT" >"$STAMP"
log "installed $WANT in $PKGLIBDIR in $(($(date +%s) - start)) s"
