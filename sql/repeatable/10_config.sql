-- Validation of data_sync_config, so psql and `cdc-relay config set` get the same clear errors,
-- and the one function the capture triggers ask whether and how to capture.

CREATE OR REPLACE FUNCTION data_sync_config_validate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $fn$
DECLARE
    known text[] := ARRAY['DataSyncEnabled', 'DataSyncApiUrl', 'DataSyncTokenUrl',
                          'DataSyncCredentialMapName', 'DataSyncCredentialKeyName',
                          'DataSyncSnapshotMode', 'DataSyncBulkSnapshotMode',
                          'DataSyncTokenScope', 'DataSyncTokenAudience', 'DataSyncTokenAuthStyle',
                          'DataSyncSigning'];
    canonical text;
    v text := btrim(NEW.value);
BEGIN
    SELECT k INTO canonical FROM unnest(known) AS k WHERE lower(k) = lower(btrim(NEW.name));
    IF canonical IS NULL THEN
        RAISE EXCEPTION 'unknown Data Sync setting "%"', NEW.name
            USING ERRCODE = '22023', HINT = 'known settings: ' || array_to_string(known, ', ');
    END IF;
    NEW.name := canonical;
    CASE canonical
    WHEN 'DataSyncEnabled' THEN
        IF lower(v) IN ('true', 'yes', 'y', 'on', '1') THEN v := 'true';
        ELSIF lower(v) IN ('false', 'no', 'n', 'off', '0') THEN v := 'false';
        ELSE
            RAISE EXCEPTION 'invalid value "%" for DataSyncEnabled', NEW.value
                USING ERRCODE = '22023', HINT = 'use true/Yes to enable Data Sync, false/No to disable it';
        END IF;
    WHEN 'DataSyncApiUrl', 'DataSyncTokenUrl' THEN
        IF v = '' THEN v := NULL; END IF;
        IF v IS NOT NULL AND v !~* '^https?://[^/?#\s@]+(:[0-9]{1,5})?(/[^\s]*)?$' THEN
            RAISE EXCEPTION 'invalid value "%" for %: not an absolute URL', NEW.value, canonical
                USING ERRCODE = '22023', HINT = 'give an absolute https URL such as https://receiver.example.com/datasync';
        END IF;
    WHEN 'DataSyncCredentialMapName', 'DataSyncCredentialKeyName' THEN
        IF v IS NULL OR v !~ '^[A-Za-z0-9_.-]{1,128}$' THEN
            RAISE EXCEPTION 'invalid value "%" for %', NEW.value, canonical
                USING ERRCODE = '22023', HINT = 'use 1 to 128 letters, digits, dot, dash or underscore';
        END IF;
    WHEN 'DataSyncSnapshotMode', 'DataSyncBulkSnapshotMode' THEN
        v := lower(v);
        IF v IS NULL OR v NOT IN ('capture', 'move') THEN
            RAISE EXCEPTION 'invalid value "%" for %', NEW.value, canonical
                USING ERRCODE = '22023', HINT = 'use capture (JSON built by the trigger, as CE does) or move (JSON built when the relay moves the row to progress)';
        END IF;
    WHEN 'DataSyncTokenScope' THEN
        -- RFC 6749 3.3: space-separated scope tokens of printable ASCII without " and \.
        v := regexp_replace(v, '\s+', ' ', 'g');
        IF v = '' THEN v := NULL; END IF;
        IF v IS NOT NULL AND (length(v) > 2048 OR v !~ '^[!#-\[\]-~]+( [!#-\[\]-~]+)*$') THEN
            RAISE EXCEPTION 'invalid value "%" for DataSyncTokenScope', NEW.value
                USING ERRCODE = '22023', HINT = 'give space-separated OAuth2 scopes of printable ASCII without quotes or backslashes, such as api://partner/.default';
        END IF;
    WHEN 'DataSyncTokenAudience' THEN
        IF v = '' THEN v := NULL; END IF;
        IF v IS NOT NULL AND (length(v) > 2048 OR v !~ '^[!-~]+$') THEN
            RAISE EXCEPTION 'invalid value "%" for DataSyncTokenAudience', NEW.value
                USING ERRCODE = '22023', HINT = 'give the audience the token provider expects (printable ASCII, no spaces), such as https://api.partner.example.com';
        END IF;
    WHEN 'DataSyncTokenAuthStyle' THEN
        v := lower(coalesce(nullif(v, ''), 'auto'));
        IF v NOT IN ('auto', 'basic', 'body') THEN
            RAISE EXCEPTION 'invalid value "%" for DataSyncTokenAuthStyle', NEW.value
                USING ERRCODE = '22023', HINT = 'use auto (HTTP Basic, then the form body if refused), basic (HTTP Basic only) or body (client_id and client_secret in the form body only)';
        END IF;
    WHEN 'DataSyncSigning' THEN
        v := lower(coalesce(nullif(v, ''), 'off'));
        IF v NOT IN ('off', 'standard-webhooks') THEN
            RAISE EXCEPTION 'invalid value "%" for DataSyncSigning', NEW.value
                USING ERRCODE = '22023', HINT = 'use off, or standard-webhooks to sign every request with the secrets stored by cdc-relay credentials set --signing-secret-file';
        END IF;
    END CASE;
    NEW.value := v;
    NEW.updated_at := now();
    RETURN NEW;
END
$fn$;

DROP TRIGGER IF EXISTS data_sync_config_validate ON data_sync_config;
CREATE TRIGGER data_sync_config_validate BEFORE INSERT OR UPDATE ON data_sync_config
    FOR EACH ROW EXECUTE FUNCTION data_sync_config_validate();

-- data_sync_capture_mode tells a capture trigger what to do: 'off' (DataSyncEnabled is false:
-- return at once), 'capture' (build the JSON now, as CE does) or 'move' (queue key and action
-- only; the relay builds the JSON when it moves the row to progress).
--
-- PL/pgSQL on purpose: its two lookups keep cached plans for the session (about 2 us a call from
-- a trigger). A SQL function with a SET clause is never inlined and was planned afresh on every
-- call from PL/pgSQL (about 0.1 ms). The table is schema-qualified instead of pinning
-- search_path with SET, which would cost a GUC save and restore per call.
CREATE OR REPLACE FUNCTION data_sync_capture_mode() RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $fn$
DECLARE
    v text;
BEGIN
    SELECT c.value INTO v FROM public.data_sync_config c WHERE c.name = 'DataSyncEnabled';
    IF v IS DISTINCT FROM 'true' THEN
        RETURN 'off';
    END IF;
    SELECT c.value INTO v FROM public.data_sync_config c WHERE c.name = 'DataSyncSnapshotMode';
    RETURN coalesce(v, 'capture');
END
$fn$;

-- data_sync_apply_enabled enables the capture triggers while DataSyncEnabled is true and
-- disables them while it is false, so a disabled Data Sync costs nothing per row (a check in
-- every trigger call cost 8-16 % of single-row update TPS). The customer delete trigger stays
-- enabled: a deleted customer's queued rows are purged whatever the setting. ALTER TABLE takes
-- a brief SHARE ROW EXCLUSIVE lock on each CE table; lock_timeout keeps a busy table from
-- queueing the application behind the setting change (the change then fails and can be retried).
CREATE OR REPLACE FUNCTION data_sync_apply_enabled() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp SET lock_timeout = '5s' AS $fn$
DECLARE
    on_ boolean := coalesce((SELECT c.value FROM public.data_sync_config c WHERE c.name = 'DataSyncEnabled'), 'false') = 'true';
    t record;
BEGIN
    -- Only the CE tables the capture triggers are installed on, never a table of the same
    -- trigger name elsewhere.
    FOR t IN
        SELECT n.nspname, r.relname, tg.tgname
        FROM pg_trigger tg
        JOIN pg_class r ON r.oid = tg.tgrelid
        JOIN pg_namespace n ON n.oid = r.relnamespace
        WHERE n.nspname = 'public'
          AND r.relname IN ('customer', 'customer_address', 'customer_phone', 'customer_email', 'customer_note',
                            'customer_alternate_key', 'customer_custom_attribute', 'customer_franchisee',
                            'customer_associate_assignment', 'customer_contact_preference',
                            'customer_promotion_deal', 'card', 'customer_segment', 'segment', 'retail_transaction')
          AND tg.tgname IN ('data_sync_child_change', 'data_sync_customer_insert', 'data_sync_customer_update',
                            'data_sync_segment_insert', 'data_sync_segment_delete', 'data_sync_segment_rename',
                            'data_sync_transaction_post', 'data_sync_transaction_change')
          AND NOT tg.tgisinternal
          AND (tg.tgenabled = 'D') = on_
    LOOP
        IF on_ THEN
            EXECUTE format('ALTER TABLE %I.%I ENABLE TRIGGER %I', t.nspname, t.relname, t.tgname);
        ELSE
            EXECUTE format('ALTER TABLE %I.%I DISABLE TRIGGER %I', t.nspname, t.relname, t.tgname);
        END IF;
    END LOOP;
END
$fn$;
REVOKE ALL ON FUNCTION data_sync_apply_enabled() FROM PUBLIC;

CREATE OR REPLACE FUNCTION data_sync_config_applied() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $fn$
BEGIN
    PERFORM public.data_sync_apply_enabled();
    RETURN NULL;
END
$fn$;

DROP TRIGGER IF EXISTS data_sync_config_applied ON data_sync_config;
CREATE TRIGGER data_sync_config_applied AFTER INSERT OR UPDATE OR DELETE ON data_sync_config
    FOR EACH STATEMENT EXECUTE FUNCTION data_sync_config_applied();

-- DataSyncBulkSnapshotMode (added after the first release): in 'capture' mode, 'move' records a
-- statement that updates more than 64 customers at once as one set whose JSON the relay builds
-- when it moves the rows (see data_sync_queue_customer_set). Off by default, as CE builds every
-- JSON in the trigger.
INSERT INTO data_sync_config (name, value) VALUES ('DataSyncBulkSnapshotMode', 'capture')
ON CONFLICT (name) DO NOTHING;

-- Extensions for partners' identity providers and signed requests (see docs/identity.md):
-- OAuth2 scope, audience and client authentication style, and Standard Webhooks signing.
INSERT INTO data_sync_config (name, value) VALUES
    ('DataSyncTokenScope', NULL), ('DataSyncTokenAudience', NULL),
    ('DataSyncTokenAuthStyle', 'auto'), ('DataSyncSigning', 'off')
ON CONFLICT (name) DO NOTHING;
