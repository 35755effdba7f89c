#!/usr/bin/env bash
# clients/run-tests.sh: run the tests of the HTTP clients (clients/node, clients/python).
#
# Usage: PGHOST=... PGPORT=... PGUSER=postgres PGDATABASE=... bash clients/run-tests.sh
#
# Needs a running server with the idempotency extension installed, named by
# the PG* variables: a superuser (the tests read the ledger and move its clock
# with idempotency.clock_offset) and a database where CREATE EXTENSION
# idempotency may be run or was run.  The tests make their own tables (names
# with a random suffix), start their HTTP servers on 127.0.0.1 only, and drop
# what they made.
#
# Installs what is missing first: Debian's packages (as root, or through
# sudo -n), and the node packages of clients/node/package-lock.json with
# `npm ci` (skipped when node_modules already matches the lock file).  A tree
# the invoker cannot write is copied to a temporary directory first.
#
# Prints each runner's own output and summary, then one line
# "clients: N passed, M failed"; the exit status is non-zero on any failure.
#
# Environment:
#   CLIENTS_TIMEOUT   seconds each runner may take (default 300)
#   CLIENTS_ONLY      node or python: run that package's tests only
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TIMEOUT=${CLIENTS_TIMEOUT:-300}
ONLY=${CLIENTS_ONLY:-}
PYTHON=/usr/bin/python3   # Debian's, which sees Debian's python3-* packages

DEBS=(python3 python3-pytest python3-psycopg python3-psycopg-pool python3-starlette
      python3-fastapi python3-uvicorn python3-httpx)

PASSED=0
FAILED=0
WORK=$(mktemp -d /tmp/idem-clients.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

log() { printf 'clients: %s\n' "$*"; }

finish() {
    echo
    echo "clients: $PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
    exit
}

# A step that could not even start a runner counts as one failure.
setup_failed() {
    log "$*" >&2
    FAILED=$((FAILED + 1))
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        return 1
    fi
}

is_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

install_debs() {
    local -a missing=()
    local p
    for p in "$@"; do
        is_installed "$p" || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "installing ${missing[*]}"
    local aptlog=$WORK/apt.log
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get -q update >"$aptlog" 2>&1 ||
       ! as_root env DEBIAN_FRONTEND=noninteractive apt-get -q -y --no-install-recommends \
            -o Dpkg::Use-Pty=0 install "${missing[@]}" >>"$aptlog" 2>&1; then
        tail -n 20 "$aptlog" >&2
        log "could not install ${missing[*]}: install them as root" >&2
        return 1
    fi
}

# count_node FILE RC: add the node test runner's counts to the totals.
count_node() {
    local out=$1 rc=$2 pass fail cancelled
    pass=$(grep -aoE '^(ℹ|#) pass [0-9]+' "$out" | tail -n 1 | grep -oE '[0-9]+$')
    fail=$(grep -aoE '^(ℹ|#) fail [0-9]+' "$out" | tail -n 1 | grep -oE '[0-9]+$')
    cancelled=$(grep -aoE '^(ℹ|#) cancelled [0-9]+' "$out" | tail -n 1 | grep -oE '[0-9]+$')
    if [ -z "$pass" ]; then
        FAILED=$((FAILED + 1))
        log "node: no summary (exit status $rc)" >&2
        return
    fi
    fail=$((${fail:-0} + ${cancelled:-0}))
    if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
        fail=1
    fi
    PASSED=$((PASSED + pass))
    FAILED=$((FAILED + fail))
}

# count_pytest FILE RC: the same for pytest's closing line.
count_pytest() {
    local out=$1 rc=$2 line pass fail errors
    line=$(grep -aE '[0-9]+ (passed|failed|error|errors)\b' "$out" | tail -n 1)
    pass=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+')
    fail=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+')
    errors=$(grep -oE '[0-9]+ errors?' <<<"$line" | grep -oE '[0-9]+')
    pass=${pass:-0}
    fail=$((${fail:-0} + ${errors:-0}))
    if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
        fail=1
        log "python: pytest exited with $rc" >&2
    fi
    PASSED=$((PASSED + pass))
    FAILED=$((FAILED + fail))
}

# The clients tree, or a copy of it that the invoker can write (npm ci
# writes node_modules in clients/node; the tests read ../README.md).
tree() {
    if [ -w "$HERE/node" ]; then
        echo "$HERE"
        return
    fi
    mkdir -p "$WORK/clients" &&
        tar -C "$HERE" --exclude=./node/node_modules -cf - . | tar -C "$WORK/clients" -xf - &&
        echo "$WORK/clients"
}

run_node() {
    echo
    echo "---------- clients/node (node --test) ----------"
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        install_debs nodejs npm || { setup_failed "node and npm are needed"; return; }
    fi
    local major
    major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
    if [ "$major" -lt 20 ]; then
        setup_failed "clients/node needs node 20 or later (found $(node --version 2>/dev/null))"
        return
    fi
    local dir stamp want
    dir=$TREE/node
    want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
    stamp=$dir/node_modules/.lock-sha256
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        log "npm ci in $dir"
        if ! (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >"$WORK/npm.log" 2>&1); then
            tail -n 30 "$WORK/npm.log" >&2
            setup_failed "npm ci failed"
            return
        fi
        echo "$want" >"$stamp"
    fi
    local out=$WORK/node.out rc
    (cd "$dir" && timeout -k 10 "$TIMEOUT" node --test --test-concurrency=1 --test-reporter=spec test/*.test.js) 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    count_node "$out" "$rc"
}

run_python() {
    echo
    echo "---------- clients/python (pytest) ----------"
    install_debs "${DEBS[@]}" || { setup_failed "Debian's python3 packages are needed"; return; }
    local out=$WORK/python.out rc
    (cd "$TREE/python" && PYTHONDONTWRITEBYTECODE=1 timeout -k 10 "$TIMEOUT" \
        "$PYTHON" -m pytest -p no:cacheprovider -q -rfE) 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    count_pytest "$out" "$rc"
}

if [ -z "${PGHOST:-}" ] && [ -z "${PGPORT:-}" ]; then
    # libpq's defaults would name whatever cluster runs on the machine
    setup_failed "set PGHOST and PGPORT (and PGUSER, PGDATABASE) to the server to test against"
    finish
fi
log "server: host ${PGHOST:-(default)} port ${PGPORT:-(default)} user ${PGUSER:-(default)} database ${PGDATABASE:-(default)}"
START=$SECONDS
if ! TREE=$(tree); then
    setup_failed "cannot copy $HERE to a writable directory"
    finish
fi
case "$ONLY" in
    node) run_node ;;
    python) run_python ;;
    "") run_node; run_python ;;
    *) setup_failed "CLIENTS_ONLY is node or python, not $ONLY" ;;
esac
log "took $((SECONDS - START)) s"
finish
