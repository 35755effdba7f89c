--
-- idem_once: consumer de-duplication in one call
--
CREATE EXTENSION idempotency;
\set SHOW_CONTEXT never
SET timezone = 'UTC';

-- true the first time, false while the record lives
SELECT idem_once('msg-1');
SELECT idem_once('msg-1');
SELECT idem_once('msg-1');
-- the record: completed, nothing to replay, kept for the default ttl
SELECT scope, key, state, status, response, attempt, fingerprint IS NULL AS no_request,
       expires_at - created_at AS kept_for
  FROM idem_ledger WHERE key = 'msg-1';

-- scopes are separate
SELECT idem_once('msg-1', 'billing');
SELECT idem_once('msg-1', 'billing');
SELECT idem_once('msg-1', 'shipping');
SELECT scope, key FROM idem_ledger WHERE key = 'msg-1' ORDER BY scope;

-- a rollback forgets the key
BEGIN;
SELECT idem_once('msg-2');
SELECT idem_once('msg-2');
ROLLBACK;
SELECT idem_once('msg-2');
-- so does a rollback to a savepoint
BEGIN;
SAVEPOINT consume;
SELECT idem_once('msg-3');
ROLLBACK TO SAVEPOINT consume;
SELECT idem_once('msg-3');
COMMIT;
SELECT idem_once('msg-3');

-- the ttl: true again once the record has expired
SELECT idem_once('msg-4', ttl => '1 hour');
SELECT expires_at - created_at AS kept_for FROM idem_ledger WHERE key = 'msg-4';
SET idempotency.clock_offset = '59 minutes';
SELECT idem_once('msg-4');
SET idempotency.clock_offset = '1 hour 1 minute';
SELECT idem_once('msg-4');
SELECT idem_once('msg-4');
-- keys with the default ttl of a day are still there
SELECT idem_once('msg-1');
RESET idempotency.clock_offset;

-- ttl validation
SELECT idem_once('msg-5', ttl => '0');
\echo :SQLSTATE
SELECT idem_once('msg-5', ttl => '-1 hour');
\echo :SQLSTATE
SELECT idem_once('msg-5', ttl => '101 years');
\echo :SQLSTATE
SELECT count(*) FROM idem_ledger WHERE key = 'msg-5';
SELECT idem_once('msg-5', ttl => NULL);

-- idem_once and idem_begin share keys: a key held by an attempt is not new,
-- a released or lapsed attempt is
SELECT * FROM idem_begin('shared-1');
SELECT idem_once('shared-1');
SELECT * FROM idem_begin('shared-2');
SELECT idem_fail('shared-2');
SELECT idem_once('shared-2');
SELECT idem_once('shared-2');
SELECT * FROM idem_begin('shared-3', lease => '1 minute');
SET idempotency.clock_offset = '2 minutes';
SELECT idem_once('shared-3');
SELECT idem_once('shared-3');
RESET idempotency.clock_offset;

-- a consumer that does its work only the first time a message arrives
CREATE TABLE processed (msg_id text, payload text);
CREATE FUNCTION consume(msg_id text, payload text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF idem_once(msg_id, 'consumer') THEN
        INSERT INTO processed VALUES (msg_id, payload);
        RETURN true;
    END IF;
    RETURN false;
END
$$;
SELECT consume('m-100', 'hello');
SELECT consume('m-100', 'hello');
SELECT consume('m-100', 'hello again');
SELECT * FROM processed;
-- a redelivery after the consumer's transaction failed is processed
BEGIN;
SELECT consume('m-101', 'first try');
ROLLBACK;
SELECT consume('m-101', 'second try');
SELECT * FROM processed ORDER BY msg_id;
DROP FUNCTION consume(text, text);
DROP TABLE processed;

DROP EXTENSION idempotency;
