-- Undoes repeatable/20_capture.sql: every capture trigger and function, and the transient hook
-- table (it never holds a row past its transaction). The CE tables and the queued rows stay.
DO $do$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['customer_address', 'customer_phone', 'customer_email', 'customer_note',
        'customer_alternate_key', 'customer_custom_attribute', 'customer_franchisee',
        'customer_associate_assignment', 'customer_contact_preference', 'customer_promotion_deal', 'card']
    LOOP
        IF to_regclass(t) IS NOT NULL THEN
            EXECUTE format('DROP TRIGGER IF EXISTS data_sync_child_change ON %I', t);
        END IF;
    END LOOP;
    IF to_regclass('customer') IS NOT NULL THEN
        DROP TRIGGER IF EXISTS data_sync_customer_insert ON customer;
        DROP TRIGGER IF EXISTS data_sync_customer_update ON customer;
        DROP TRIGGER IF EXISTS data_sync_customer_delete ON customer;
    END IF;
    IF to_regclass('customer_segment') IS NOT NULL THEN
        DROP TRIGGER IF EXISTS data_sync_segment_insert ON customer_segment;
        DROP TRIGGER IF EXISTS data_sync_segment_delete ON customer_segment;
    END IF;
    IF to_regclass('segment') IS NOT NULL THEN
        DROP TRIGGER IF EXISTS data_sync_segment_rename ON segment;
    END IF;
    IF to_regclass('retail_transaction') IS NOT NULL THEN
        DROP TRIGGER IF EXISTS data_sync_transaction_post ON retail_transaction;
        DROP TRIGGER IF EXISTS data_sync_transaction_change ON retail_transaction;
    END IF;
END
$do$;
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
DROP FUNCTION IF EXISTS merge_customers(bigint[]);
DROP FUNCTION IF EXISTS data_sync_customer_json(bigint);
DROP FUNCTION IF EXISTS data_sync_transaction_json(text);
DROP FUNCTION IF EXISTS data_sync_customers_json(bigint[]);
DROP FUNCTION IF EXISTS data_sync_capture_mode_fast();
