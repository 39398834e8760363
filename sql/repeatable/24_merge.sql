-- merge_customers, the CE operation that merges customers. It is plain DML on the CE tables:
-- the capture triggers (26_triggers.sql) record what it changes.
--
-- Only a function, replaced in place (see sql/embed.go).

-- merge_customers merges the given customers into a new one: names and profile from the first,
-- child rows, cards, segments and transactions re-pointed to the new customer; the merged
-- customers are deleted. Data Sync records DELETE for each merged customer and CREATE for the
-- new one. Returns the new customer's ID.
CREATE OR REPLACE FUNCTION public.merge_customers(ids bigint[]) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $fn$
DECLARE
    new_id bigint;
    missing bigint[];
BEGIN
    IF ids IS NULL OR cardinality(ids) < 2 THEN
        RAISE EXCEPTION 'merge_customers needs at least two customer IDs, got %', coalesce(cardinality(ids), 0)
            USING ERRCODE = '22023', HINT = 'call merge_customers(ARRAY[first_id, second_id, ...]); the first customer''s profile is kept';
    END IF;
    IF (SELECT count(DISTINCT i) FROM unnest(ids) i) <> cardinality(ids) OR array_position(ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'merge_customers: customer IDs % contain a NULL or a duplicate', ids
            USING ERRCODE = '22023', HINT = 'pass each customer to merge exactly once';
    END IF;
    -- Lock the customers in a fixed order, so concurrent merges cannot deadlock.
    PERFORM FROM public.customer c WHERE c.customer_id = ANY (ids) ORDER BY c.customer_id FOR UPDATE;
    SELECT array_agg(i) INTO missing FROM unnest(ids) i
    WHERE NOT EXISTS (SELECT 1 FROM public.customer c WHERE c.customer_id = i);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'merge_customers: customers % do not exist', missing
            USING ERRCODE = '23503', HINT = 'check the IDs; a customer merged or deleted earlier is gone';
    END IF;

    -- Customers inserted with explicit IDs may sit ahead of the sequence.
    LOOP
        new_id := nextval('public.customer_id_seq');
        EXIT WHEN NOT EXISTS (SELECT 1 FROM public.customer c WHERE c.customer_id = new_id);
    END LOOP;
    INSERT INTO public.customer (customer_id, first_name, middle_name, last_name, suffix, sorting_name, nick_name,
        salutation, signup_date, retail_store_id, valid_flag, org_name, cust_org_typcode, employee_id,
        business_name, customer_class, source, prospect, customer_owner_id, household_key, customer_number,
        customer_reference, last_update_info, affiliation_store_id, gender_type, birth_date, anniversary,
        marital_status_code, ethnicity, rent, language_code, annual_income_amount, net_worth,
        highest_educational_level_name)
    SELECT new_id, first_name, middle_name, last_name, suffix, sorting_name, nick_name,
        salutation, signup_date, retail_store_id, valid_flag, org_name, cust_org_typcode, employee_id,
        business_name, customer_class, source, prospect, customer_owner_id, household_key, customer_number,
        customer_reference, last_update_info, affiliation_store_id, gender_type, birth_date, anniversary,
        marital_status_code, ethnicity, rent, language_code, annual_income_amount, net_worth,
        highest_educational_level_name
    FROM public.customer WHERE customer_id = ids[1];

    UPDATE public.customer_address SET customer_id = new_id WHERE customer_id = ANY (ids);
    UPDATE public.customer_phone SET customer_id = new_id WHERE customer_id = ANY (ids);
    UPDATE public.customer_email SET customer_id = new_id WHERE customer_id = ANY (ids);
    UPDATE public.customer_note SET customer_id = new_id WHERE customer_id = ANY (ids);
    UPDATE public.card SET customer_id = new_id WHERE customer_id = ANY (ids);
    UPDATE public.retail_transaction SET customer_id = new_id WHERE customer_id = ANY (ids);
    -- Keyed children: the first customer's value wins on a clash (ids order).
    INSERT INTO public.customer_alternate_key (customer_id, type_code, key_value)
    SELECT DISTINCT ON (k.type_code) new_id, k.type_code, k.key_value
    FROM public.customer_alternate_key k WHERE k.customer_id = ANY (ids)
    ORDER BY k.type_code, array_position(ids, k.customer_id);
    INSERT INTO public.customer_custom_attribute (customer_id, attribute_name, attribute_value)
    SELECT DISTINCT ON (a.attribute_name) new_id, a.attribute_name, a.attribute_value
    FROM public.customer_custom_attribute a WHERE a.customer_id = ANY (ids)
    ORDER BY a.attribute_name, array_position(ids, a.customer_id);
    INSERT INTO public.customer_contact_preference (customer_id, contact_type, permission)
    SELECT DISTINCT ON (p.contact_type) new_id, p.contact_type, p.permission
    FROM public.customer_contact_preference p WHERE p.customer_id = ANY (ids)
    ORDER BY p.contact_type, array_position(ids, p.customer_id);
    INSERT INTO public.customer_associate_assignment (customer_id, associate_id, primary_flag, assigned_date)
    SELECT DISTINCT ON (a.associate_id) new_id, a.associate_id, a.primary_flag, a.assigned_date
    FROM public.customer_associate_assignment a WHERE a.customer_id = ANY (ids)
    ORDER BY a.associate_id, array_position(ids, a.customer_id);
    INSERT INTO public.customer_franchisee (customer_id, franchisee_id)
    SELECT new_id, f.franchisee_id FROM public.customer_franchisee f WHERE f.customer_id = ANY (ids)
    GROUP BY f.franchisee_id ORDER BY min(f.ordinal);
    INSERT INTO public.customer_promotion_deal (customer_id, promotion_deal_id)
    SELECT DISTINCT new_id, d.promotion_deal_id FROM public.customer_promotion_deal d WHERE d.customer_id = ANY (ids);
    INSERT INTO public.customer_segment (customer_id, segment_id)
    SELECT DISTINCT new_id, s.segment_id FROM public.customer_segment s WHERE s.customer_id = ANY (ids);

    DELETE FROM public.customer WHERE customer_id = ANY (ids);
    RETURN new_id;
END
$fn$;
