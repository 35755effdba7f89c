#!/usr/bin/env bash
# scripts/citus.sh: build and install the vendored Citus release that matches a PostgreSQL major.
#
# Usage:
#   bash scripts/citus.sh VERSION        build Citus for PostgreSQL VERSION (15, 16, 17 or 18)
#
# Citus is not packaged for Debian; its release sources live in ../shared/vendor (see the README
# there; $CITUS_VENDOR names another directory).  13.2.2 is used for PostgreSQL 15 to 17, 14.0.1
# for 18.  The build goes into the directories of the server that $PG_CONFIG names (default:
# Debian's /usr/lib/postgresql/VERSION/bin/pg_config, as CI uses it), with
# `./configure PG_CONFIG=... && make -j2 && make install` (without the LLVM bitcode that JIT
# inlining would use), in a scratch copy of the tarball, never in the vendor directory.  For 17
# and 18, run it inside the roots made by scripts/postgres.sh, which see the tree at /src but
# not the vendor directory:
#
#   cp -r ../shared/vendor "$(bash scripts/postgres.sh 17 path)/tmp/citus-vendor"
#   bash scripts/postgres.sh 17 run env CITUS_VENDOR=/tmp/citus-vendor bash /src/scripts/citus.sh 17
#
# Idempotent: a stamp file beside citus.so names the release and the server it was built for;
# when it matches and citus.so is there, nothing is built.  As root, the Debian packages Citus
# needs to build are installed with apt-get when missing.
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

[ $# -eq 1 ] || { echo "usage: bash scripts/citus.sh VERSION" >&2; exit 2; }
MAJOR=$1

case "$MAJOR" in
	15 | 16 | 17) CITUS=13.2.2 ;;
	18) CITUS=14.0.1 ;;
	*) die "no vendored Citus for PostgreSQL '$MAJOR' (supported: 15, 16, 17, 18)" ;;
esac

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/$MAJOR/bin/pg_config}
[ -x "$PG_CONFIG" ] || PG_CONFIG=$(command -v pg_config || true)
[ -n "$PG_CONFIG" ] && [ -x "$PG_CONFIG" ] || die "no pg_config for PostgreSQL $MAJOR (set PG_CONFIG)"
PG_VERSION=$("$PG_CONFIG" --version)
case "$PG_VERSION" in
	"PostgreSQL $MAJOR."*) ;;
	*) die "$PG_CONFIG is $PG_VERSION, not PostgreSQL $MAJOR" ;;
esac

TARBALL=$VENDOR/citus-$CITUS.tar.gz
[ -r "$TARBALL" ] || die "missing $TARBALL (see $VENDOR/README.md)"

PKGLIBDIR=$("$PG_CONFIG" --pkglibdir)
STAMP=$PKGLIBDIR/citus.stamp
WANT="citus $CITUS for $PG_VERSION ($(sha256sum "$TARBALL" | cut -c1-16))"

if [ -f "$PKGLIBDIR/citus.so" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
	log "$WANT is installed in $PKGLIBDIR: nothing to do"
	exit 0
fi

# Debian packages Citus's configure and build need.
DEPS=(libpq-dev libcurl4-openssl-dev liblz4-dev libzstd-dev libkrb5-dev libssl-dev libselinux1-dev
	libxslt1-dev libpam0g-dev zlib1g-dev libreadline-dev make gcc autoconf flex bison)
missing=()
for p in "${DEPS[@]}"; do
	[ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -eq 0 ]; then
		log "installing ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}" ||
			{ apt-get -o DPkg::Lock::Timeout=600 update &&
				apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}"; }
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
(
	cd "$SRC"
	./configure PG_CONFIG="$PG_CONFIG" --quiet
	# no LLVM bitcode for JIT inlining: it doubles the build for little
	make -s -j"$JOBS" with_llvm=no
	make -s install with_llvm=no
)
echo "$WANT" >"$STAMP"
log "installed $WANT in $PKGLIBDIR in $(($(date +%s) - start)) s"
