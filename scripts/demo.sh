#!/usr/bin/env bash
# scripts/demo.sh: show idempotency keys protecting a payment, on a throwaway cluster.
#
# Usage: bash scripts/demo.sh
#
# Installs what is missing (scripts/deps.sh), builds and installs the extension,
# starts a throwaway cluster (scripts/cluster.sh), and walks through:
#   1. a first payment call
#   2. the same call again: replayed, the same response, no second charge
#   3. the same key with a different body: ERROR IK001, caught
#   4. 8 concurrent clients retrying one key 5 times each (pgbench): one charge
# The cluster and everything else it made are removed at exit.
#
# Environment: PG_CONFIG (default: PostgreSQL 15's), IDEM_SKIP_DEPS=1.
set -euo pipefail
trap 'echo "demo: failed (line $LINENO)"' ERR

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
exec 2>&1
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS PGPASSWORD PGDATA
# shellcheck source=scripts/cluster.sh
. "$ROOT/scripts/cluster.sh"

heading() { printf '\n\033[1m== %s ==\033[0m\n' "$*"; }
[ -t 1 ] || heading() { printf '\n== %s ==\n' "$*"; }

# Run SQL from stdin as the application role "app", echoing each statement.
app_sql() {
	cluster_as_user psql -X -q -e -v ON_ERROR_STOP=1 -P pager=off -U app -d demo "$@"
}

# The same as the cluster's superuser (the demo's administrator).
admin_sql() {
	cluster_as_user psql -X -q -v ON_ERROR_STOP=1 -P pager=off -d demo "$@"
}

heading "setup: packages, build, throwaway cluster"
if [ "${IDEM_SKIP_DEPS:-0}" != 1 ]; then
	bash "$ROOT/scripts/deps.sh"
fi
WORK=$(mktemp -d /tmp/idem-demo.XXXXXX)
chmod 755 "$WORK"
# shellcheck disable=SC2016 # expanded at exit
cluster_at_exit 'rm -rf "$WORK"'
cd "$WORK"
cluster_build_extension "$ROOT" "$WORK/tree"
cluster_create "$WORK/cluster"
cluster_start
cluster_psql -d postgres -c 'CREATE DATABASE demo'

heading "schema: the extension, a payments table and pay()"
admin_sql -e <<'SQL'
CREATE EXTENSION idempotency;

CREATE TABLE payments (
    id         bigserial PRIMARY KEY,
    idem_key   text        NOT NULL,
    customer   text        NOT NULL,
    amount     numeric     NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Every call of pay(), whatever happened, for the tally after the race.
CREATE TABLE pay_calls (
    idem_key text NOT NULL,
    outcome  text NOT NULL
);

-- Charge a customer once per idempotency key.  The ledger row written by
-- idem_begin and the payment commit or roll back together.
CREATE FUNCTION pay(idem_key text, amount numeric, customer text)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    r          idem_result;
    payment_id bigint;
    body       jsonb;
BEGIN
    r := idem_begin(pay.idem_key,
                    request => jsonb_build_object('amount', pay.amount,
                                                  'customer', pay.customer));
    INSERT INTO pay_calls VALUES (pay.idem_key, r.outcome);

    IF r.outcome = 'replayed' THEN
        RAISE NOTICE 'key %: replayed, nothing charged', pay.idem_key;
        RETURN jsonb_build_object('status', r.status, 'body', r.response);
    ELSIF r.outcome = 'in_progress' THEN
        RAISE NOTICE 'key %: another attempt is in progress', pay.idem_key;
        RETURN jsonb_build_object('status', 409,
                                  'body', jsonb_build_object('error', 'request in progress, retry later'));
    END IF;

    -- outcome = 'started': this call owns the key
    RAISE NOTICE 'key %: started, charging % %', pay.idem_key, pay.customer, pay.amount;
    PERFORM pg_sleep(0.2);  -- the card processor takes its time
    INSERT INTO payments (idem_key, customer, amount)
    VALUES (pay.idem_key, pay.customer, pay.amount)
    RETURNING id INTO payment_id;
    body := jsonb_build_object('payment_id', payment_id,
                               'customer', pay.customer,
                               'amount', pay.amount);
    PERFORM idem_finish(pay.idem_key, body, 201);
    RETURN jsonb_build_object('status', 201, 'body', body);
END
$$;

-- The application's role: the API through one GRANT, and its own tables.
CREATE ROLE app LOGIN;
GRANT idempotency_user TO app;
GRANT SELECT, INSERT ON payments, pay_calls TO app;
GRANT USAGE ON SEQUENCE payments_id_seq TO app;
SQL

heading "1. first call: the payment is made"
app_sql <<'SQL'
SELECT pay('order-1001', 42.00, 'alice') AS response;
SQL

heading "2. the client retries (a timeout, a double click): replayed"
app_sql <<'SQL'
SELECT pay('order-1001', 42.00, 'alice') AS response;
SELECT count(*) AS payments_for_order_1001 FROM payments WHERE idem_key = 'order-1001';
SQL

heading "3. the same key with a different body: ERROR IK001"
app_sql <<'SQL'
DO $$
DECLARE
    detail text;
BEGIN
    PERFORM pay('order-1001', 4200.00, 'alice');
EXCEPTION WHEN SQLSTATE 'IK001' THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    RAISE NOTICE 'caught SQLSTATE %: % (%)', SQLSTATE, SQLERRM, detail;
END
$$;
SQL

heading "4. concurrent retries: 8 clients x 5 calls on one key, all at once"
cat >"$WORK/retry.sql" <<'SQL'
SELECT pay('order-2002', 250.00, 'bob');
SQL
chmod 644 "$WORK/retry.sql"
echo "pgbench -n -c 8 -j 8 -t 5 -f retry.sql    (retry.sql: SELECT pay('order-2002', 250.00, 'bob');)"
if ! cluster_as_user pgbench -n -c 8 -j 8 -t 5 -U app -f "$WORK/retry.sql" demo >"$WORK/pgbench.log" 2>&1; then
	cat "$WORK/pgbench.log"
	exit 1
fi
grep -E '^(number of (clients|transactions actually processed|failed transactions)|latency average)' \
	"$WORK/pgbench.log" || true

heading "result: one charge per key"
admin_sql -e <<'SQL'
SELECT outcome, count(*) AS calls FROM pay_calls WHERE idem_key = 'order-2002'
 GROUP BY outcome ORDER BY outcome;
SELECT count(*) FROM payments WHERE idem_key = 'order-2002';
SELECT id, idem_key, customer, amount FROM payments ORDER BY id;
SELECT scope, key, state, status, response, attempt, created_at, expires_at
  FROM idem_ledger ORDER BY key;
SQL

heading "the application role cannot touch the ledger directly"
app_sql -v ON_ERROR_STOP=0 <<'SQL' || true
SELECT count(*) FROM idem_ledger;
SQL

heading "done: the throwaway cluster is removed"
