-- Capture, triggers: the triggers on the CE tables (and on the hook table) that run the capture
-- functions of 22_queueing.sql. (Re)creating a trigger locks its table against the CE
-- application's writes, so this script holds nothing else: changing a builder or a capture
-- function re-applies its own script and leaves these triggers alone. Install applies it, like
-- every script, with a short lock_timeout and retries (internal/schema).

DROP TRIGGER IF EXISTS data_sync_hook ON public.data_sync_capture_hook;
CREATE CONSTRAINT TRIGGER data_sync_hook AFTER INSERT ON public.data_sync_capture_hook
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.data_sync_capture_hook_fire();

-- customer: inserts (one row or a batch import) are statement-level; updates are row-level
-- deferred; deletes are statement-level and immediate.
DROP TRIGGER IF EXISTS data_sync_customer_insert ON public.customer;
CREATE TRIGGER data_sync_customer_insert AFTER INSERT ON public.customer
    REFERENCING NEW TABLE AS data_sync_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION public.data_sync_customers_touched('CREATE', 'new');
DROP TRIGGER IF EXISTS data_sync_customer_update ON public.customer;
CREATE CONSTRAINT TRIGGER data_sync_customer_update AFTER UPDATE ON public.customer
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    EXECUTE FUNCTION public.data_sync_customer_changed();
DROP TRIGGER IF EXISTS data_sync_customer_delete ON public.customer;
CREATE TRIGGER data_sync_customer_delete AFTER DELETE ON public.customer
    REFERENCING OLD TABLE AS data_sync_old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION public.data_sync_customers_deleted();

-- Child rows of a customer (contact information, notes, keys, attributes, franchisees,
-- associates, preferences, promotion deals) and cards: UPDATE of the owning customer(s).
DO $do$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['customer_address', 'customer_phone', 'customer_email', 'customer_note',
        'customer_alternate_key', 'customer_custom_attribute', 'customer_franchisee',
        'customer_associate_assignment', 'customer_contact_preference', 'customer_promotion_deal', 'card']
    LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS data_sync_child_change ON public.%I', t);
        EXECUTE format('CREATE CONSTRAINT TRIGGER data_sync_child_change AFTER INSERT OR UPDATE OR DELETE ON public.%I
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
            EXECUTE FUNCTION public.data_sync_customer_changed()', t);
    END LOOP;
END
$do$;

-- Segment membership (addCustomerToSegment, removeCustomerFromSegment, segment jobs, segment
-- deletion through the cascade) is bulk by nature: statement-level with transition tables.
DROP TRIGGER IF EXISTS data_sync_segment_insert ON public.customer_segment;
CREATE TRIGGER data_sync_segment_insert AFTER INSERT ON public.customer_segment
    REFERENCING NEW TABLE AS data_sync_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION public.data_sync_customers_touched('UPDATE', 'new');
DROP TRIGGER IF EXISTS data_sync_segment_delete ON public.customer_segment;
CREATE TRIGGER data_sync_segment_delete AFTER DELETE ON public.customer_segment
    REFERENCING OLD TABLE AS data_sync_old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION public.data_sync_customers_touched('UPDATE', 'old');
DROP TRIGGER IF EXISTS data_sync_segment_rename ON public.segment;
CREATE TRIGGER data_sync_segment_rename AFTER UPDATE ON public.segment
    REFERENCING OLD TABLE AS data_sync_old_rows NEW TABLE AS data_sync_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION public.data_sync_segment_renamed();

-- Posted transactions (PosLog postTransaction, Transaction batch import): Transaction CREATE
-- plus Customer UPDATE at commit. A transaction re-pointed to another customer or voided
-- changes both customers' activity summaries.
DROP TRIGGER IF EXISTS data_sync_transaction_post ON public.retail_transaction;
CREATE CONSTRAINT TRIGGER data_sync_transaction_post AFTER INSERT ON public.retail_transaction
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    EXECUTE FUNCTION public.data_sync_transaction_posted();
DROP TRIGGER IF EXISTS data_sync_transaction_change ON public.retail_transaction;
CREATE CONSTRAINT TRIGGER data_sync_transaction_change AFTER UPDATE ON public.retail_transaction
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.customer_id IS DISTINCT FROM NEW.customer_id OR OLD.void_flag IS DISTINCT FROM NEW.void_flag)
    EXECUTE FUNCTION public.data_sync_customer_changed();

-- Capture triggers are enabled only while DataSyncEnabled is true (data_sync_apply_enabled,
-- 10_config.sql), so a disabled Data Sync costs the CE database nothing. Re-applying this
-- script recreates them enabled: bring them in line with the setting.
SELECT public.data_sync_apply_enabled();
