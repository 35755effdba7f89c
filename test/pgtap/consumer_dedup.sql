-- consumer_dedup.sql: a queue consumer that applies each message once with
-- idem_once.  The queue may deliver a message any number of times; the
-- record of it commits with the effect, or rolls back with it.
BEGIN;

SELECT plan(20);

CREATE TABLE stock (sku text PRIMARY KEY, on_hand int NOT NULL);
INSERT INTO stock VALUES ('widget', 10), ('gadget', 5);
CREATE TABLE shipments (msg_id text NOT NULL, sku text NOT NULL, qty int NOT NULL);
CREATE TABLE audit_log (msg_id text NOT NULL, body jsonb NOT NULL);

-- The order consumer: ships the order and takes it out of stock, once
CREATE FUNCTION consume(msg_id text, body jsonb) RETURNS boolean
LANGUAGE plpgsql AS $fn$
BEGIN
    IF NOT idem_once(consume.msg_id, scope => 'orders-queue') THEN
        RETURN false;           -- a redelivery: acknowledge, do nothing
    END IF;
    UPDATE stock SET on_hand = on_hand - (consume.body ->> 'qty')::int
     WHERE sku = consume.body ->> 'sku';
    INSERT INTO shipments VALUES (consume.msg_id, consume.body ->> 'sku',
                                  (consume.body ->> 'qty')::int);
    RETURN true;
END
$fn$;

-- A second consumer of the same messages, de-duplicated in its own scope
CREATE FUNCTION audit(msg_id text, body jsonb) RETURNS boolean
LANGUAGE plpgsql AS $fn$
BEGIN
    IF NOT idem_once(audit.msg_id, scope => 'audit-queue') THEN
        RETURN false;
    END IF;
    INSERT INTO audit_log VALUES (audit.msg_id, audit.body);
    RETURN true;
END
$fn$;

-- One message delivered three times
SELECT ok(consume('msg-1', '{"sku": "widget", "qty": 3}'),
          'the first delivery applies the message');
SELECT ok(NOT consume('msg-1', '{"sku": "widget", "qty": 3}'),
          'the second delivery is recognised as a duplicate');
SELECT ok(NOT consume('msg-1', '{"sku": "widget", "qty": 3}'),
          'the third delivery is recognised as a duplicate');
SELECT is((SELECT on_hand FROM stock WHERE sku = 'widget'), 7,
          'stock is taken once for three deliveries');
SELECT is((SELECT count(*) FROM shipments WHERE msg_id = 'msg-1'), 1::bigint,
          'one shipment for three deliveries');
SELECT results_eq(
    $$SELECT scope, state FROM idem_ledger
       WHERE key = 'msg-1' AND scope IN ('', 'audit-queue', 'orders-queue')$$,
    $$VALUES ('orders-queue'::text, 'completed'::text)$$,
    'the ledger records the message once, as completed, in its scope');

-- A delivery whose transaction rolls back leaves nothing behind
SAVEPOINT delivery;
SELECT ok(consume('msg-2', '{"sku": "gadget", "qty": 2}'),
          'a delivery inside a transaction that will roll back applies the message');
SELECT is((SELECT count(*) FROM idem_ledger
            WHERE scope = 'orders-queue' AND key = 'msg-2'), 1::bigint,
          'inside that transaction the message is recorded');
ROLLBACK TO SAVEPOINT delivery;

SELECT is((SELECT count(*) FROM idem_ledger
            WHERE scope = 'orders-queue' AND key = 'msg-2'), 0::bigint,
          'the rollback forgets the record of the message');
SELECT is((SELECT on_hand FROM stock WHERE sku = 'gadget'), 5,
          'the rollback undoes the effect');
SELECT ok(consume('msg-2', '{"sku": "gadget", "qty": 2}'),
          'the redelivery after the rollback applies the message');
SELECT ok(NOT consume('msg-2', '{"sku": "gadget", "qty": 2}'),
          'a further redelivery is a duplicate');
SELECT is((SELECT on_hand FROM stock WHERE sku = 'gadget'), 3,
          'stock is taken once, by the redelivery');
SELECT is((SELECT count(*) FROM shipments WHERE msg_id = 'msg-2'), 1::bigint,
          'one shipment for the rolled-back and the two later deliveries');

-- Scopes are independent: the audit consumer sees msg-1 for the first time
SELECT ok(audit('msg-1', '{"sku": "widget", "qty": 3}'),
          'the same message id is new in another scope');
SELECT ok(NOT audit('msg-1', '{"sku": "widget", "qty": 3}'),
          'a redelivery to the audit consumer is a duplicate');
SELECT ok(NOT consume('msg-1', '{"sku": "widget", "qty": 3}'),
          'recording it in the audit scope leaves the orders scope unchanged');
SELECT ok(idem_once('msg-1'),
          'the default scope is independent of both');
SELECT is((SELECT count(*) FROM audit_log WHERE msg_id = 'msg-1'), 1::bigint,
          'the audit consumer applied the message once');
SELECT results_eq(
    $$SELECT scope FROM idem_ledger
       WHERE key = 'msg-1' AND scope IN ('', 'audit-queue', 'orders-queue')
       ORDER BY scope$$,
    $$VALUES (''::text), ('audit-queue'), ('orders-queue')$$,
    'the ledger holds one record of the message per scope');

SELECT * FROM finish();
ROLLBACK;
