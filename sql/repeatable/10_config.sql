-- Validation of data_sync_config, so psql and `cdc-relay config set` get the same clear errors,
-- and the one function the capture triggers ask whether and how to capture.

CREATE OR REPLACE FUNCTION data_sync_config_validate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $fn$
DECLARE
    known text[] := ARRAY['DataSyncEnabled', 'DataSyncApiUrl', 'DataSyncTokenUrl',
                          'DataSyncCredentialMapName', 'DataSyncCredentialKeyName',
                          'DataSyncSnapshotMode'];
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
    WHEN 'DataSyncSnapshotMode' THEN
        v := lower(v);
        IF v IS NULL OR v NOT IN ('capture', 'move') THEN
            RAISE EXCEPTION 'invalid value "%" for DataSyncSnapshotMode', NEW.value
                USING ERRCODE = '22023', HINT = 'use capture (JSON built by the trigger, as CE does) or move (JSON built when the relay moves the row to progress)';
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
