#!/usr/bin/env bash
# scripts/deps.sh: install the Debian 12 packages that building and testing idempotency need.
#
# Usage: bash scripts/deps.sh [--dry-run]
#
# --dry-run prints the packages that are missing and installs nothing.
#
# Idempotent: when every package is already installed it does nothing, not even
# apt-get update.  As root it installs directly; otherwise through sudo, and only
# when something is missing.  Debian's postgresql package may create and start a
# cluster called "main" on port 5432: this script, and the other scripts here,
# leave it alone and never use it.
set -euo pipefail

PG_MAJOR=${PG_MAJOR:-15}

PACKAGES=(
	"postgresql-$PG_MAJOR"                  # server, initdb, pg_ctl, contrib modules
	"postgresql-server-dev-$PG_MAJOR"       # pg_config, PGXS, pg_regress, pg_isolation_regress
	"postgresql-$PG_MAJOR-pgtap"            # the pgtap extension
	libtap-parser-sourcehandler-pgtap-perl  # pg_prove
	libipc-run-perl                         # IPC::Run, for PostgreSQL::Test::Cluster
	build-essential                         # gcc, make
	python3                                 # test/canonical_check.py
	python3-psycopg python3-hypothesis python3-pytest   # test/model
	python3-psycopg-pool python3-starlette python3-fastapi python3-uvicorn python3-httpx   # clients/python
	iproute2                                # ss: scripts/server.sh, test/upgrade/run.sh
)
# Older Debian and PGDG packaging ship contrib as its own package; Debian 12
# folds it into postgresql-15.  Installed only where it really exists.
CONTRIB="postgresql-contrib-$PG_MAJOR"

log() { printf 'deps: %s\n' "$*"; }

is_installed() {
	[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

# True when apt knows an installable (not purely virtual) package of this name.
has_candidate() {
	local cand
	cand=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { print $2; exit }')
	[ -n "$cand" ] && [ "$cand" != "(none)" ]
}

missing_packages() {
	local p
	for p in "${PACKAGES[@]}"; do
		is_installed "$p" || printf '%s\n' "$p"
	done
	if ! is_installed "$CONTRIB" && has_candidate "$CONTRIB"; then
		printf '%s\n' "$CONTRIB"
	fi
}

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
	log "this script needs a Debian-based system (dpkg and apt-get)" >&2
	exit 1
fi

DRY_RUN=0
case "${1:-}" in
	--dry-run) DRY_RUN=1 ;;
	"") ;;
	*)
		echo "usage: bash scripts/deps.sh [--dry-run]" >&2
		exit 2
		;;
esac

mapfile -t missing < <(missing_packages)
if [ "${#missing[@]}" -eq 0 ]; then
	log "all packages present"
	exit 0
fi
if [ "$DRY_RUN" = 1 ]; then
	log "would install: ${missing[*]}"
	exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
	SUDO=()
elif command -v sudo >/dev/null 2>&1; then
	if [ -t 0 ]; then SUDO=(sudo); else SUDO=(sudo -n); fi
else
	log "missing packages: ${missing[*]}" >&2
	log "not root and no sudo: install them as root, or run this script as root" >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-q -y -o Dpkg::Use-Pty=0 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
aptlog=$(mktemp /tmp/idem-deps.XXXXXX.log)
trap 'rm -f "$aptlog"' EXIT

run_apt() {
	if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" "$@" >>"$aptlog" 2>&1; then
		log "apt-get $1 failed; last lines of its output:" >&2
		tail -n 40 "$aptlog" >&2
		exit 1
	fi
}

log "missing: ${missing[*]}"
log "apt-get update"
run_apt update

# The package lists are fresh now: look for a separate contrib package again.
mapfile -t missing < <(missing_packages)
if [ "${#missing[@]}" -eq 0 ]; then
	log "all packages present"
	exit 0
fi
log "apt-get install ${missing[*]}"
run_apt install --no-install-recommends "${missing[@]}"

mapfile -t still < <(missing_packages)
if [ "${#still[@]}" -ne 0 ]; then
	log "still missing after install: ${still[*]}" >&2
	exit 1
fi
log "installed: ${missing[*]}"
