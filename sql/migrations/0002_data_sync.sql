-- Data Sync core: configuration, the pending and progress queues and the dead-letter tables.
-- Identifiers are unquoted so psql users can type DATA_SYNC_CUST_PENDING_QUEUE or lower case.

-- One sequence for every queue: a row keeps its ID from pending to progress (and to a dead letter
-- and back); it is the message's uniqueId.
CREATE SEQUENCE data_sync_queue_id_seq;

-- The appendix's System Configuration settings (Data Sync category), plus cdc-relay's own
-- extensions. Values are validated by data_sync_config_validate (repeatable/config.sql).
CREATE TABLE data_sync_config (
    name        text PRIMARY KEY,
    value       text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO data_sync_config (name, value) VALUES
    ('DataSyncEnabled', 'false'),
    ('DataSyncApiUrl', NULL),
    ('DataSyncTokenUrl', NULL),
    ('DataSyncCredentialMapName', 'ce_credentials'),
    ('DataSyncCredentialKeyName', 'datasync'),
    ('DataSyncSnapshotMode', 'capture');

-- Queue tables churn: every row is inserted and deleted within milliseconds. Autovacuum must run
-- after a fixed number of dead rows, not 20 % of a table that is usually nearly empty, or the
-- claim queries slow down on dead tuples. fillfactor leaves room for HOT updates of the
-- attempt columns in progress.
CREATE TABLE data_sync_cust_pending_queue (
    id           bigint PRIMARY KEY DEFAULT nextval('data_sync_queue_id_seq'),
    obj_name     text NOT NULL DEFAULT 'Customer',
    unique_id    text,
    action       text NOT NULL,
    json_object  json,
    created_at   timestamptz NOT NULL DEFAULT now(),
    create_flag  boolean GENERATED ALWAYS AS (action = 'CREATE') STORED,
    delete_flag  boolean GENERATED ALWAYS AS (action = 'DELETE') STORED
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 5000,
        autovacuum_vacuum_cost_delay = 0);
CREATE INDEX data_sync_cust_pending_queue_unique_id ON data_sync_cust_pending_queue (unique_id);

CREATE TABLE data_sync_trn_pending_queue (
    id           bigint PRIMARY KEY DEFAULT nextval('data_sync_queue_id_seq'),
    obj_name     text NOT NULL DEFAULT 'Transaction',
    unique_id    text,
    action       text NOT NULL,
    json_object  json,
    created_at   timestamptz NOT NULL DEFAULT now(),
    create_flag  boolean GENERATED ALWAYS AS (action = 'CREATE') STORED,
    delete_flag  boolean GENERATED ALWAYS AS (action = 'DELETE') STORED
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 5000,
        autovacuum_vacuum_cost_delay = 0);

-- Progress rows carry their delivery state, so a crash at any instant leaves a state the next
-- start resumes from: attempts, last outcome, and when the next attempt is due.
CREATE TABLE data_sync_cust_progress_queue (
    id               bigint PRIMARY KEY,
    obj_name         text NOT NULL DEFAULT 'Customer',
    unique_id        text,
    action           text NOT NULL,
    json_object      json,
    created_at       timestamptz NOT NULL DEFAULT now(),
    moved_at         timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    last_status      integer,
    last_error       text,
    last_attempt_at  timestamptz,
    next_attempt_at  timestamptz,
    create_flag      boolean GENERATED ALWAYS AS (action = 'CREATE') STORED,
    delete_flag      boolean GENERATED ALWAYS AS (action = 'DELETE') STORED
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 5000,
        autovacuum_vacuum_cost_delay = 0);
CREATE INDEX data_sync_cust_progress_queue_unique_id ON data_sync_cust_progress_queue (unique_id);

CREATE TABLE data_sync_trn_progress_queue (LIKE data_sync_cust_progress_queue INCLUDING ALL)
    WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
          autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 5000,
          autovacuum_vacuum_cost_delay = 0);
ALTER TABLE data_sync_trn_progress_queue ALTER COLUMN obj_name SET DEFAULT 'Transaction';

-- Dead letters: rows the relay gave up on (reason 'failed'), and, while order per key is kept,
-- the later rows of the same key held behind them (reason 'held'). `cdc-relay requeue` (or the
-- one-statement SQL in the README) moves them back to pending with their original IDs.
CREATE TABLE data_sync_cust_failed (
    id                bigint PRIMARY KEY,
    obj_name          text,
    unique_id         text,
    action            text,
    json_object       json,
    created_at        timestamptz NOT NULL,
    failed_at         timestamptz NOT NULL DEFAULT now(),
    reason            text NOT NULL DEFAULT 'failed',
    attempts          integer NOT NULL DEFAULT 0,
    last_status       integer,
    last_error        text,
    response_excerpt  text
);
CREATE INDEX data_sync_cust_failed_unique_id ON data_sync_cust_failed (unique_id);

CREATE TABLE data_sync_trn_failed (LIKE data_sync_cust_failed INCLUDING ALL);
