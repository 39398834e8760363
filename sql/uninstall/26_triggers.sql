-- Undoes repeatable/26_triggers.sql: every capture trigger. The CE tables and the queued rows
-- stay. Runs before the capture functions' scripts are undone (uninstall goes in reverse name
-- order), so no trigger is left calling a dropped function.
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
    IF to_regclass('data_sync_capture_hook') IS NOT NULL THEN
        DROP TRIGGER IF EXISTS data_sync_hook ON data_sync_capture_hook;
    END IF;
END
$do$;
