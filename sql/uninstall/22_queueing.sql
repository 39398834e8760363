-- Undoes repeatable/22_queueing.sql: every capture function, and the transient hook table (it
-- never holds a row past its transaction). The queued rows stay.
DROP TABLE IF EXISTS data_sync_capture_hook;
DROP FUNCTION IF EXISTS data_sync_capture_hook_fire();
DROP FUNCTION IF EXISTS data_sync_customers_touched();
DROP FUNCTION IF EXISTS data_sync_queue_customer_set(text, text, bigint[]);
DROP FUNCTION IF EXISTS data_sync_rebuild_customer(bigint);
DROP FUNCTION IF EXISTS data_sync_expand_customer_sets(integer);
DROP FUNCTION IF EXISTS data_sync_customers_deleted();
DROP FUNCTION IF EXISTS data_sync_segment_renamed();
DROP FUNCTION IF EXISTS data_sync_customer_changed();
DROP FUNCTION IF EXISTS data_sync_transaction_posted();
DROP FUNCTION IF EXISTS data_sync_queue_customer(bigint, text, text);
DROP FUNCTION IF EXISTS data_sync_capture_mode_fast();
