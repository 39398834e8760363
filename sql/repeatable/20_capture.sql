-- Capture: the triggers that record CE customer and transaction changes in the Data Sync pending
-- queues (appendix H, Tables H-1 to H-4), and the JSON snapshot builders.
--
-- Design (measured costs are in internal/triggerbench):
--   * Nothing happens while data_sync_capture_mode() is 'off' beyond one config lookup per
--     trigger firing (and the customer-delete purge, see below).
--   * Customer JSON is built once per customer per transaction, at commit: single-row changes
--     queue a deferred event (constraint triggers, DEFERRABLE INITIALLY DEFERRED); bulk
--     statements (customer inserts, segment membership) use statement-level triggers with
--     transition tables that hand the whole set of customer IDs to one deferred event through a
--     row in data_sync_capture_hook. At commit, a customer that already has a pending row
--     written by this transaction is skipped, so CREATE followed by child inserts is one CREATE
--     row carrying the full JSON.
--   * In 'move' mode the pending row carries key and action only (json_object NULL); the relay
--     builds the JSON with data_sync_customer_json / data_sync_transaction_json when it moves
--     the row to progress. Statement-level triggers queue at once rather than at commit, and
--     an UPDATE of many customers is one data_sync_cust_pending_set row
--     (data_sync_queue_customer_set).
--   * Customer deletes are immediate: every pending, progress and failed row of the customer is
--     removed and a DELETE row (null JSON) is queued.
--   * Timestamps in the JSON are rendered in UTC ("2017-11-07T07:24:22+0000") so the snapshot
--     does not depend on the session's TimeZone.

-- ---------------------------------------------------------------------------------------------
-- JSON builders
-- ---------------------------------------------------------------------------------------------

-- data_sync_customers_json builds the CustomerResponseType JSON (CUSTOMERCRE/CUSTOMERMOD
-- payload) of every existing customer in ids, one row each (duplicates in ids give one row).
-- Missing customers produce no row. It is set-based for bulk statements: one aggregate per
-- child table grouped by customer and joined (hash joins for a large set), instead of a
-- correlated sub-plan per child table per customer. It is a single SQL statement so the planner
-- inlines it into its caller; callers pass ids as a parameter (EXECUTE ... USING) so the plan
-- fits the real set. data_sync_customer_json builds the same JSON for one customer; the tests
-- check that both agree.
CREATE OR REPLACE FUNCTION public.data_sync_customers_json(ids bigint[])
RETURNS TABLE (customer_id bigint, json_object json)
LANGUAGE sql STABLE AS $fn$
SELECT c.customer_id, json_build_object(
    'customerID', c.customer_id::text,
    'signupDate', to_char(c.signup_date, 'YYYY-MM-DD'),
    'retailStoreID', c.retail_store_id,
    'firstPurchaseDate', to_char(s.first_date, 'YYYY-MM-DD'),
    'lastPurchaseDate', to_char(s.last_date, 'YYYY-MM-DD'),
    'validation', json_build_object('validFlag', c.valid_flag::text),
    'orgName', c.org_name,
    'custOrgTypcode', c.cust_org_typcode,
    'employeeID', c.employee_id,
    'businessName', c.business_name,
    'customerClass', c.customer_class,
    'source', c.source,
    'prospect', c.prospect,
    'customerOwnerID', c.customer_owner_id,
    'householdKey', c.household_key,
    'customerNumber', c.customer_number,
    'customerReference', c.customer_reference,
    'lastUpdateInfo', c.last_update_info,
    'affiliation', json_build_array(json_build_object('retailStoreID', c.affiliation_store_id)),
    'entityInformation', json_build_object('individual', json_build_object(
        'suffix', c.suffix,
        'sortingName', c.sorting_name,
        'nickName', c.nick_name,
        'salutation', c.salutation,
        'name', json_build_object('name', json_build_array(
            json_build_object('location', 'FIRST', 'value', c.first_name),
            json_build_object('location', 'MIDDLE', 'value', c.middle_name),
            json_build_object('location', 'LAST', 'value', c.last_name))),
        'contactInformation', json_build_object(
            'address', coalesce(a.j, '[]'),
            'telephone', coalesce(p.j, '[]'),
            'email', coalesce(e.j, '[]')),
        'personalSummary', json_build_object(
            'genderType', c.gender_type,
            'birthDate', to_char(c.birth_date, 'YYYY-MM-DD'),
            'anniversary', to_char(c.anniversary, 'YYYY-MM-DD'),
            'maritalStatusCode', c.marital_status_code,
            'ethnicity', c.ethnicity,
            'rent', c.rent,
            'languageCode', c.language_code),
        'socioEconomicProfile', json_build_object(
            'annualIncomeAmount', c.annual_income_amount::text,
            'netWorth', c.net_worth::text,
            'highestEducationalLevelName', c.highest_educational_level_name),
        'lifetimeActivitySummary', json_build_object(
            'totalReturnsAmount', coalesce(s.returns_amount, 0)::text,
            'totalSalesAmount', coalesce(s.sales_amount, 0)::text,
            'totalTransactionCount', coalesce(s.trn_count, 0)::text,
            'totalItemsSoldCount', coalesce(s.items_sold, 0)::text,
            'totalItemsReturnedCount', coalesce(s.items_returned, 0)::text),
        'yearToDateActivitySummary', json_build_object(
            'yearToDateReturnsAmount', coalesce(s.ytd_returns_amount, 0)::text,
            'yearToDateSalesAmount', coalesce(s.ytd_sales_amount, 0)::text,
            'yearToDateTransactionCount', coalesce(s.ytd_trn_count, 0)::text,
            'yearToDateItemsSoldCount', coalesce(s.ytd_items_sold, 0)::text,
            'yearToDateItemsReturnedCount', coalesce(s.ytd_items_returned, 0)::text))),
    'alternateKey', coalesce(k.j, '[]'),
    'customAttribute', coalesce(ca.j, '[]'),
    'customerNotes', json_build_object('customerNote', coalesce(n.j, '[]')),
    'eligiblePromotionDeals', json_build_object('promotionDealId', coalesce(d.j, '[]')),
    'customerSegments', json_build_object('segment', coalesce(sg.j, '[]')),
    'customerCards', json_build_object('instrument', coalesce(cd.j, '[]')),
    'associateAssignments', CASE WHEN aa.j IS NOT NULL THEN json_build_object('associateAssignment', aa.j) END,
    'personalPreferences', json_build_object('contactPreference', array_to_json(ARRAY[
        json_build_object('contactType', 'MAIL', 'permission', coalesce(cp.mail, true)::text),
        json_build_object('contactType', 'PHONE', 'permission', coalesce(cp.phone, true)::text),
        json_build_object('contactType', 'FAX', 'permission', coalesce(cp.fax, true)::text),
        json_build_object('contactType', 'EMAIL', 'permission', coalesce(cp.email, true)::text)])),
    'franchisees', json_build_object('franchisee', coalesce(f.j, '[]'))
)
FROM public.customer c
LEFT JOIN (SELECT x.customer_id, array_to_json(array_agg(json_build_object(
                    'addressID', x.address_id::text, 'typeCode', x.address_type_code, 'primary', x.primary_flag,
                    'addressLine1', x.address_line1, 'addressLine2', x.address_line2, 'city', x.city,
                    'territory', x.territory, 'postalCode', x.postal_code, 'countryCode', x.country_code)
                    ORDER BY x.address_id)) AS j
           FROM public.customer_address x WHERE x.customer_id = ANY (ids) GROUP BY x.customer_id) a ON a.customer_id = c.customer_id
LEFT JOIN (SELECT x.customer_id, array_to_json(array_agg(json_build_object(
                    'telephoneID', x.phone_id::text, 'typeCode', x.phone_type_code, 'primary', x.primary_flag,
                    'fullTelephoneNumber', x.phone_number) ORDER BY x.phone_id)) AS j
           FROM public.customer_phone x WHERE x.customer_id = ANY (ids) GROUP BY x.customer_id) p ON p.customer_id = c.customer_id
LEFT JOIN (SELECT x.customer_id, array_to_json(array_agg(json_build_object(
                    'emailID', x.email_id::text, 'typeCode', x.email_type_code, 'primary', x.primary_flag,
                    'emailAddress', x.email_address) ORDER BY x.email_id)) AS j
           FROM public.customer_email x WHERE x.customer_id = ANY (ids) GROUP BY x.customer_id) e ON e.customer_id = c.customer_id
LEFT JOIN (SELECT x.customer_id, array_to_json(array_agg(json_build_object('typeCode', x.type_code, 'value', x.key_value) ORDER BY x.type_code)) AS j
           FROM public.customer_alternate_key x WHERE x.customer_id = ANY (ids) GROUP BY x.customer_id) k ON k.customer_id = c.customer_id
LEFT JOIN (SELECT x.customer_id, array_to_json(array_agg(json_build_object('name', x.attribute_name, 'value', x.attribute_value) ORDER BY x.attribute_name)) AS j
           FROM public.customer_custom_attribute x WHERE x.customer_id = ANY (ids) GROUP BY x.customer_id) ca ON ca.customer_id = c.customer_id
LEFT JOIN (SELECT x.customer_id, array_to_json(array_agg(json_build_object(
                    'noteID', x.note_id::text, 'typeCode', x.note_type_code, 'noteText', x.note_text,
                    'createDate', to_char(x.create_date AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+0000"'),
                    'createUserID', x.create_user_id) ORDER BY x.note_id)) AS j
           FROM public.customer_note x WHERE x.customer_id = ANY (ids) GROUP BY x.customer_id) n ON n.customer_id = c.customer_id
LEFT JOIN (SELECT x.customer_id, array_to_json(array_agg(x.promotion_deal_id ORDER BY x.promotion_deal_id)) AS j
           FROM public.customer_promotion_deal x WHERE x.customer_id = ANY (ids) GROUP BY x.customer_id) d ON d.customer_id = c.customer_id
LEFT JOIN (SELECT x.customer_id, array_to_json(array_agg(json_build_object('segmentID', y.segment_id, 'segmentName', y.segment_name) ORDER BY x.segment_id)) AS j
           FROM public.customer_segment x JOIN public.segment y ON y.segment_id = x.segment_id
           WHERE x.customer_id = ANY (ids) GROUP BY x.customer_id) sg ON sg.customer_id = c.customer_id
LEFT JOIN (SELECT x.customer_id, array_to_json(array_agg(json_build_object(
                    'cardNumber', x.card_number, 'serialNumber', x.serial_number, 'status', x.status,
                    'expirationDate', to_char(x.expiration_date, 'YYYY-MM-DD')) ORDER BY x.card_number)) AS j
           FROM public.card x WHERE x.customer_id = ANY (ids) GROUP BY x.customer_id) cd ON cd.customer_id = c.customer_id
LEFT JOIN (SELECT x.customer_id, json_agg(json_build_object(
                    'associateID', x.associate_id, 'primary', x.primary_flag,
                    'assignedDate', to_char(x.assigned_date, 'YYYY-MM-DD')) ORDER BY x.associate_id) AS j
           FROM public.customer_associate_assignment x WHERE x.customer_id = ANY (ids) GROUP BY x.customer_id) aa ON aa.customer_id = c.customer_id
LEFT JOIN (SELECT x.customer_id,
                  bool_or(x.permission) FILTER (WHERE x.contact_type = 'MAIL') AS mail,
                  bool_or(x.permission) FILTER (WHERE x.contact_type = 'PHONE') AS phone,
                  bool_or(x.permission) FILTER (WHERE x.contact_type = 'FAX') AS fax,
                  bool_or(x.permission) FILTER (WHERE x.contact_type = 'EMAIL') AS email
           FROM public.customer_contact_preference x WHERE x.customer_id = ANY (ids) GROUP BY x.customer_id) cp ON cp.customer_id = c.customer_id
LEFT JOIN (SELECT x.customer_id, array_to_json(array_agg(json_build_object('franchiseeId', y.franchisee_id, 'franchiseeName', y.franchisee_name) ORDER BY x.ordinal)) AS j
           FROM public.customer_franchisee x JOIN public.franchisee y ON y.franchisee_id = x.franchisee_id
           WHERE x.customer_id = ANY (ids) GROUP BY x.customer_id) f ON f.customer_id = c.customer_id
LEFT JOIN (
    SELECT t.customer_id,
           min(t.business_date) AS first_date,
           max(t.business_date) AS last_date,
           count(DISTINCT t.retail_transaction_id) AS trn_count,
           sum(l.extended_amount) FILTER (WHERE l.line_item_type_code = 'Sale') AS sales_amount,
           sum(l.extended_amount) FILTER (WHERE l.line_item_type_code = 'Return') AS returns_amount,
           sum(l.quantity) FILTER (WHERE l.line_item_type_code = 'Sale') AS items_sold,
           sum(l.quantity) FILTER (WHERE l.line_item_type_code = 'Return') AS items_returned,
           count(DISTINCT t.retail_transaction_id) FILTER (WHERE t.business_date >= date_trunc('year', current_date)) AS ytd_trn_count,
           sum(l.extended_amount) FILTER (WHERE l.line_item_type_code = 'Sale' AND t.business_date >= date_trunc('year', current_date)) AS ytd_sales_amount,
           sum(l.extended_amount) FILTER (WHERE l.line_item_type_code = 'Return' AND t.business_date >= date_trunc('year', current_date)) AS ytd_returns_amount,
           sum(l.quantity) FILTER (WHERE l.line_item_type_code = 'Sale' AND t.business_date >= date_trunc('year', current_date)) AS ytd_items_sold,
           sum(l.quantity) FILTER (WHERE l.line_item_type_code = 'Return' AND t.business_date >= date_trunc('year', current_date)) AS ytd_items_returned
    FROM public.retail_transaction t
    LEFT JOIN public.line_item l ON l.retail_transaction_id = t.retail_transaction_id AND NOT l.void_flag
    WHERE t.customer_id = ANY (ids) AND NOT t.void_flag
    GROUP BY t.customer_id) s ON s.customer_id = c.customer_id
WHERE c.customer_id = ANY (ids)
$fn$;

-- data_sync_customer_json returns the Customer JSON of one customer, or NULL when it does not
-- exist. For one customer, correlated sub-plans (one short index scan each) start and run
-- faster than data_sync_customers_json's grouped joins (about 70 us against 110 us a call), so
-- the single-row capture path and the relay's per-row calls use this one. PL/pgSQL keeps the
-- plan cached for the session, so set-based calls such as
-- `SELECT data_sync_customer_json(unique_id::bigint) FROM ...` cost one execution each.
CREATE OR REPLACE FUNCTION public.data_sync_customer_json(id bigint) RETURNS json
LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    RETURN (
    SELECT json_build_object(
        'customerID', c.customer_id::text,
        'signupDate', to_char(c.signup_date, 'YYYY-MM-DD'),
        'retailStoreID', c.retail_store_id,
        'firstPurchaseDate', to_char(s.first_date, 'YYYY-MM-DD'),
        'lastPurchaseDate', to_char(s.last_date, 'YYYY-MM-DD'),
        'validation', json_build_object('validFlag', c.valid_flag::text),
        'orgName', c.org_name,
        'custOrgTypcode', c.cust_org_typcode,
        'employeeID', c.employee_id,
        'businessName', c.business_name,
        'customerClass', c.customer_class,
        'source', c.source,
        'prospect', c.prospect,
        'customerOwnerID', c.customer_owner_id,
        'householdKey', c.household_key,
        'customerNumber', c.customer_number,
        'customerReference', c.customer_reference,
        'lastUpdateInfo', c.last_update_info,
        'affiliation', json_build_array(json_build_object('retailStoreID', c.affiliation_store_id)),
        'entityInformation', json_build_object('individual', json_build_object(
            'suffix', c.suffix,
            'sortingName', c.sorting_name,
            'nickName', c.nick_name,
            'salutation', c.salutation,
            'name', json_build_object('name', json_build_array(
                json_build_object('location', 'FIRST', 'value', c.first_name),
                json_build_object('location', 'MIDDLE', 'value', c.middle_name),
                json_build_object('location', 'LAST', 'value', c.last_name))),
            'contactInformation', json_build_object(
                'address', array_to_json(ARRAY(
                    SELECT json_build_object(
                        'addressID', a.address_id::text,
                        'typeCode', a.address_type_code,
                        'primary', a.primary_flag,
                        'addressLine1', a.address_line1,
                        'addressLine2', a.address_line2,
                        'city', a.city,
                        'territory', a.territory,
                        'postalCode', a.postal_code,
                        'countryCode', a.country_code)
                    FROM public.customer_address a WHERE a.customer_id = c.customer_id
                    ORDER BY a.address_id)),
                'telephone', array_to_json(ARRAY(
                    SELECT json_build_object(
                        'telephoneID', p.phone_id::text,
                        'typeCode', p.phone_type_code,
                        'primary', p.primary_flag,
                        'fullTelephoneNumber', p.phone_number)
                    FROM public.customer_phone p WHERE p.customer_id = c.customer_id
                    ORDER BY p.phone_id)),
                'email', array_to_json(ARRAY(
                    SELECT json_build_object(
                        'emailID', e.email_id::text,
                        'typeCode', e.email_type_code,
                        'primary', e.primary_flag,
                        'emailAddress', e.email_address)
                    FROM public.customer_email e WHERE e.customer_id = c.customer_id
                    ORDER BY e.email_id))),
            'personalSummary', json_build_object(
                'genderType', c.gender_type,
                'birthDate', to_char(c.birth_date, 'YYYY-MM-DD'),
                'anniversary', to_char(c.anniversary, 'YYYY-MM-DD'),
                'maritalStatusCode', c.marital_status_code,
                'ethnicity', c.ethnicity,
                'rent', c.rent,
                'languageCode', c.language_code),
            'socioEconomicProfile', json_build_object(
                'annualIncomeAmount', c.annual_income_amount::text,
                'netWorth', c.net_worth::text,
                'highestEducationalLevelName', c.highest_educational_level_name),
            'lifetimeActivitySummary', json_build_object(
                'totalReturnsAmount', s.returns_amount::text,
                'totalSalesAmount', s.sales_amount::text,
                'totalTransactionCount', s.trn_count::text,
                'totalItemsSoldCount', s.items_sold::text,
                'totalItemsReturnedCount', s.items_returned::text),
            'yearToDateActivitySummary', json_build_object(
                'yearToDateReturnsAmount', s.ytd_returns_amount::text,
                'yearToDateSalesAmount', s.ytd_sales_amount::text,
                'yearToDateTransactionCount', s.ytd_trn_count::text,
                'yearToDateItemsSoldCount', s.ytd_items_sold::text,
                'yearToDateItemsReturnedCount', s.ytd_items_returned::text))),
        'alternateKey', array_to_json(ARRAY(
                    SELECT json_build_object('typeCode', k.type_code, 'value', k.key_value)
                    FROM public.customer_alternate_key k WHERE k.customer_id = c.customer_id
                    ORDER BY k.type_code)),
        'customAttribute', array_to_json(ARRAY(
                    SELECT json_build_object('name', ca.attribute_name, 'value', ca.attribute_value)
                    FROM public.customer_custom_attribute ca WHERE ca.customer_id = c.customer_id
                    ORDER BY ca.attribute_name)),
        'customerNotes', json_build_object('customerNote', array_to_json(ARRAY(
                    SELECT json_build_object(
                'noteID', n.note_id::text,
                'typeCode', n.note_type_code,
                'noteText', n.note_text,
                'createDate', to_char(n.create_date AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+0000"'),
                'createUserID', n.create_user_id)
                    FROM public.customer_note n WHERE n.customer_id = c.customer_id
                    ORDER BY n.note_id))),
        'eligiblePromotionDeals', json_build_object('promotionDealId', array_to_json(ARRAY(
                    SELECT d.promotion_deal_id
                    FROM public.customer_promotion_deal d WHERE d.customer_id = c.customer_id
                    ORDER BY d.promotion_deal_id))),
        'customerSegments', json_build_object('segment', array_to_json(ARRAY(
                    SELECT json_build_object('segmentID', sg.segment_id, 'segmentName', sg.segment_name)
                    FROM public.customer_segment cs JOIN public.segment sg ON sg.segment_id = cs.segment_id
            WHERE cs.customer_id = c.customer_id
                    ORDER BY cs.segment_id))),
        'customerCards', json_build_object('instrument', array_to_json(ARRAY(
                    SELECT json_build_object(
                'cardNumber', cd.card_number,
                'serialNumber', cd.serial_number,
                'status', cd.status,
                'expirationDate', to_char(cd.expiration_date, 'YYYY-MM-DD'))
                    FROM public.card cd WHERE cd.customer_id = c.customer_id
                    ORDER BY cd.card_number))),
        'associateAssignments', (
            SELECT json_build_object('associateAssignment', json_agg(json_build_object(
                'associateID', aa.associate_id,
                'primary', aa.primary_flag,
                'assignedDate', to_char(aa.assigned_date, 'YYYY-MM-DD')) ORDER BY aa.associate_id))
            FROM public.customer_associate_assignment aa WHERE aa.customer_id = c.customer_id
            HAVING count(*) > 0),
        'personalPreferences', json_build_object('contactPreference', array_to_json(ARRAY(
            SELECT json_build_object('contactType', ct.contact_type, 'permission', coalesce(cp.permission, true)::text)
            FROM (VALUES (1, 'MAIL'), (2, 'PHONE'), (3, 'FAX'), (4, 'EMAIL')) AS ct (ord, contact_type)
            LEFT JOIN public.customer_contact_preference cp ON cp.customer_id = c.customer_id AND cp.contact_type = ct.contact_type
            ORDER BY ct.ord))),
        'franchisees', json_build_object('franchisee', array_to_json(ARRAY(
                    SELECT json_build_object('franchiseeId', f.franchisee_id, 'franchiseeName', f.franchisee_name)
                    FROM public.customer_franchisee cf JOIN public.franchisee f ON f.franchisee_id = cf.franchisee_id
            WHERE cf.customer_id = c.customer_id
                    ORDER BY cf.ordinal)))
    )
    FROM public.customer c
    CROSS JOIN LATERAL (
        SELECT min(t.business_date) AS first_date,
               max(t.business_date) AS last_date,
               count(*) AS trn_count,
               coalesce(sum(li.sales_amount), 0) AS sales_amount,
               coalesce(sum(li.returns_amount), 0) AS returns_amount,
               coalesce(sum(li.items_sold), 0) AS items_sold,
               coalesce(sum(li.items_returned), 0) AS items_returned,
               count(*) FILTER (WHERE t.business_date >= date_trunc('year', current_date)) AS ytd_trn_count,
               coalesce(sum(li.sales_amount) FILTER (WHERE t.business_date >= date_trunc('year', current_date)), 0) AS ytd_sales_amount,
               coalesce(sum(li.returns_amount) FILTER (WHERE t.business_date >= date_trunc('year', current_date)), 0) AS ytd_returns_amount,
               coalesce(sum(li.items_sold) FILTER (WHERE t.business_date >= date_trunc('year', current_date)), 0) AS ytd_items_sold,
               coalesce(sum(li.items_returned) FILTER (WHERE t.business_date >= date_trunc('year', current_date)), 0) AS ytd_items_returned
        FROM public.retail_transaction t
        CROSS JOIN LATERAL (
            SELECT sum(l.extended_amount) FILTER (WHERE l.line_item_type_code = 'Sale') AS sales_amount,
                   sum(l.extended_amount) FILTER (WHERE l.line_item_type_code = 'Return') AS returns_amount,
                   sum(l.quantity) FILTER (WHERE l.line_item_type_code = 'Sale') AS items_sold,
                   sum(l.quantity) FILTER (WHERE l.line_item_type_code = 'Return') AS items_returned
            FROM public.line_item l
            WHERE l.retail_transaction_id = t.retail_transaction_id AND NOT l.void_flag
        ) li
        WHERE t.customer_id = c.customer_id AND NOT t.void_flag
    ) s
    WHERE c.customer_id = id);
END
$fn$;

-- data_sync_transaction_json returns the TransactionType JSON (POSTRNCRE payload) of one
-- retail transaction with its line items, modifiers and properties, or NULL when it does not
-- exist.
CREATE OR REPLACE FUNCTION public.data_sync_transaction_json(id text) RETURNS json
LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    RETURN (
    SELECT json_build_object(
        'retailTransactionId', t.retail_transaction_id,
        'organizationId', t.organization_id,
        'beginDatetime', to_char(t.begin_datetime AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+0000"'),
        'businessDate', to_char(t.business_date, 'YYYY-MM-DD'),
        'originalBusinessDate', to_char(t.original_business_date, 'YYYY-MM-DD'),
        'customerId', t.customer_id::text,
        'voidFlag', t.void_flag,
        'customerKey', t.customer_key,
        'endDatetime', to_char(t.end_datetime AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+0000"'),
        'currencyTypeCode', t.currency_type_code,
        'orgCurrencyTypeCode', t.org_currency_type_code,
        'currencyExchangeRate', t.currency_exchange_rate,
        'keyedOfflineFlag', t.keyed_offline_flag,
        'notes', t.notes,
        'operatorId', t.operator_id,
        'customerOrganizationId', t.customer_organization_id,
        'customerOrganizationKey', t.customer_organization_key,
        'postedFlag', t.posted_flag,
        'retailLocationId', t.retail_location_id,
        'nonPhysicalItemTotal', t.non_physical_item_total,
        'subtotal', t.subtotal,
        'taxTotal', t.tax_total,
        'total', t.total,
        'markdownTotal', t.markdown_total,
        'costOfGoodsSoldTotal', t.cost_of_goods_sold_total,
        'transactionReasonCode', t.transaction_reason_code,
        'transactionSequence', t.transaction_sequence,
        'transactionStatusCode', t.transaction_status_code,
        'transactionTypeCode', t.transaction_type_code,
        'workstationId', t.workstation_id,
        'linkedTransactionId', t.linked_transaction_id,
        'createDate', to_char(t.create_date, 'YYYY-MM-DD'),
        'createUserId', t.create_user_id,
        'updateDate', to_char(t.update_date, 'YYYY-MM-DD'),
        'updateUserId', t.update_user_id,
        'lineItems', array_to_json(ARRAY(
            SELECT json_build_object(
                'lineItemSequence', l.line_item_sequence,
                'beginDateTimestamp', to_char(l.begin_date_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+0000"'),
                'endDateTimestamp', to_char(l.end_date_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+0000"'),
                'lineItemStatusCode', l.line_item_status_code,
                'lineItemTLogSequence', l.line_item_tlog_sequence,
                'lineItemTypeCode', l.line_item_type_code,
                'notes', l.notes,
                'voidFlag', l.void_flag,
                'voidLineItemReasonCode', l.void_line_item_reason_code,
                'custId', coalesce(l.cust_id, t.customer_id)::text,
                'createDate', to_char(l.create_date, 'YYYY-MM-DD'),
                'createUserId', l.create_user_id,
                'updateDate', to_char(l.update_date, 'YYYY-MM-DD'),
                'updateUserId', l.update_user_id,
                'lineItemModifiers', array_to_json(ARRAY(
                    SELECT json_build_object(
                        'lineItemSequence', m.line_item_sequence,
                        'lineItemModifierSequence', m.line_item_modifier_sequence,
                        'voidFlag', m.void_flag,
                        'custId', coalesce(m.cust_id, l.cust_id, t.customer_id)::text,
                        'createDate', to_char(m.create_date, 'YYYY-MM-DD'),
                        'createUserId', m.create_user_id,
                        'updateDate', to_char(m.update_date, 'YYYY-MM-DD'),
                        'updateUserId', m.update_user_id)
                    FROM public.line_item_modifier m
                    WHERE m.retail_transaction_id = l.retail_transaction_id
                      AND m.line_item_sequence = l.line_item_sequence
                    ORDER BY m.line_item_modifier_sequence)))
            FROM public.line_item l WHERE l.retail_transaction_id = t.retail_transaction_id
            ORDER BY l.line_item_sequence)),
        'transactionProperties', array_to_json(ARRAY(
                SELECT json_build_object('propertyCode', tp.property_code, 'propertyValue', tp.property_value)
                FROM public.transaction_property tp WHERE tp.retail_transaction_id = t.retail_transaction_id
                ORDER BY tp.property_code)))
    FROM public.retail_transaction t
    WHERE t.retail_transaction_id = id);
END
$fn$;

-- ---------------------------------------------------------------------------------------------
-- Queueing
-- ---------------------------------------------------------------------------------------------

-- One row per bulk statement, carrying the customer IDs it touched to a single deferred event.
-- Unlogged: a row lives only until its transaction commits.
CREATE UNLOGGED TABLE IF NOT EXISTS public.data_sync_capture_hook (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action        text NOT NULL,
    customer_ids  bigint[] NOT NULL
);

-- The capture functions run with enable_seqscan = off: their lookups of pending rows by
-- unique_id must use its index, but their plans are cached while the queue is nearly empty
-- (the relay keeps it so) and a sequential scan then stays in the plan when the queue grows
-- (relay down, backlog): measured, single-row update TPS fell from 4,200 to 1,400 in 12 s.
-- Every row they write sets captured = true in the INSERT itself; the column defaults to false,
-- so no other session can mark a row of its own as captured (the relay trusts their JSON's shape).
--
-- Every capture function runs with the owner's rights (SECURITY DEFINER) and
-- search_path = pg_catalog, public, pg_temp: pg_temp last, and every table and function
-- schema-qualified, so a temporary table or function of the session that fired the trigger can
-- never stand in for one of ours (a temporary table's column default would otherwise run as the
-- owner). The builders and data_sync_queue_customer_set, which run inside them, are qualified too.
--
-- Convergence (capture mode): a JSON build of a customer takes a row lock on that customer
-- (SELECT ... FOR NO KEY UPDATE) just before the build, held until the transaction ends. A
-- transaction that has built a customer's JSON (at commit, or early with SET CONSTRAINTS ALL
-- IMMEDIATE, or during a slow commit) therefore commits before any other transaction's build
-- of the same customer, and that later build, a statement of its own started after the lock
-- was granted, sees the first one's changes; its row gets the higher ID. So the last row queued
-- for a customer carries every change committed before it. A row lock rather than an advisory
-- lock: only a role that may update customers can hold it (any database user can take an
-- advisory lock and would stall every commit touching that customer), and a transaction that
-- updated the customer already holds it. The lock and the row it protects are taken in the
-- same (sub)transaction, so a savepoint rolled back releases both and a savepoint released keeps
-- both. Sets are locked in ID order. Residual risk, documented in docs/security.md: two
-- transactions whose deferred events lock two customers in opposite orders (each event fires
-- on its own, in the order the changes were made) can deadlock at commit, and PostgreSQL then
-- aborts one of them.
--
-- data_sync_rebuild_customer builds again the JSON of the customer row this transaction queued
-- in an earlier statement (built_at older than the current statement): the transaction fired
-- its capture early (SET CONSTRAINTS ALL IMMEDIATE, or a trigger of the application's) and then
-- changed the customer again, so the row must carry the state it commits, not the earlier one.
-- The customer's row lock, taken by the first build, is still held by this transaction. A row
-- without JSON (move mode, a DELETE) is left alone. Called only from the capture functions
-- below (SECURITY DEFINER, search_path pinned), with their rights.
CREATE OR REPLACE FUNCTION public.data_sync_rebuild_customer(cid bigint) RETURNS void
LANGUAGE sql AS $fn$
UPDATE public.data_sync_cust_pending_queue q
   SET json_object = coalesce(public.data_sync_customer_json(cid), q.json_object), built_at = statement_timestamp()
 WHERE q.unique_id = cid::text AND q.xmin = pg_current_xact_id()::xid
   AND q.json_object IS NOT NULL AND q.built_at < statement_timestamp()
$fn$;
REVOKE ALL ON FUNCTION public.data_sync_rebuild_customer(bigint) FROM PUBLIC;

-- data_sync_queue_customer queues one customer row (at commit), unless this transaction has
-- already queued that customer (which includes a DELETE of it) or, in capture mode, the
-- customer no longer exists. In move mode no existence check is needed: only this transaction
-- could have deleted a customer it touched, and that queued a DELETE row.
CREATE OR REPLACE FUNCTION public.data_sync_queue_customer(cid bigint, act text, mode text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp SET enable_seqscan = off AS $fn$
DECLARE
    j json;
    built timestamptz;
BEGIN
    IF cid IS NULL THEN
        RETURN;
    END IF;
    SELECT q.built_at INTO built FROM public.data_sync_cust_pending_queue q
    WHERE q.unique_id = cid::text AND q.xmin = pg_current_xact_id()::xid;
    IF FOUND THEN
        IF built < statement_timestamp() AND mode = 'capture' THEN
            PERFORM public.data_sync_rebuild_customer(cid);
        END IF;
        RETURN;
    END IF;
    IF mode = 'capture' THEN
        -- Serialised with other transactions' builds of this customer (see above).
        PERFORM FROM public.customer c WHERE c.customer_id = cid FOR NO KEY UPDATE;
        j := public.data_sync_customer_json(cid);
        IF j IS NULL THEN
            RETURN;
        END IF;
    END IF;
    INSERT INTO public.data_sync_cust_pending_queue (obj_name, unique_id, action, json_object, captured, built_at)
    VALUES ('Customer', cid::text, act, j, true, CASE WHEN j IS NOT NULL THEN statement_timestamp() END);
END
$fn$;

-- Row-level, deferred: a customer or one of its child rows changed. Queues UPDATE (CREATE for
-- a customer insert) for the customer on both sides of the change.
CREATE OR REPLACE FUNCTION public.data_sync_customer_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp SET enable_seqscan = off AS $fn$
DECLARE
    mode text := public.data_sync_capture_mode();
    cid bigint;
    j json;
    built timestamptz;
BEGIN
    IF mode = 'off' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.customer_id IS DISTINCT FROM NEW.customer_id) THEN
        PERFORM public.data_sync_queue_customer(OLD.customer_id, 'UPDATE', mode);
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN NULL;
    END IF;
    -- The common case (one customer), inlined: same logic as data_sync_queue_customer.
    cid := NEW.customer_id;
    IF cid IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT q.built_at INTO built FROM public.data_sync_cust_pending_queue q
    WHERE q.unique_id = cid::text AND q.xmin = pg_current_xact_id()::xid;
    IF FOUND THEN
        IF built < statement_timestamp() AND mode = 'capture' THEN
            PERFORM public.data_sync_rebuild_customer(cid);
        END IF;
        RETURN NULL;
    END IF;
    IF mode = 'capture' THEN
        -- Serialised with other transactions' builds of this customer (see above).
        PERFORM FROM public.customer c WHERE c.customer_id = cid FOR NO KEY UPDATE;
        j := public.data_sync_customer_json(cid);
        IF j IS NULL THEN
            RETURN NULL;
        END IF;
    END IF;
    INSERT INTO public.data_sync_cust_pending_queue (obj_name, unique_id, action, json_object, captured, built_at)
    VALUES ('Customer', cid::text, 'UPDATE', j, true, CASE WHEN j IS NOT NULL THEN statement_timestamp() END);
    RETURN NULL;
END
$fn$;

-- Row-level, deferred: a retail transaction was posted. At commit its line items exist, so the
-- Transaction CREATE row carries them, followed by an UPDATE of its customer (activity summaries).
CREATE OR REPLACE FUNCTION public.data_sync_transaction_posted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp SET enable_seqscan = off AS $fn$
DECLARE
    mode text := public.data_sync_capture_mode();
    j json;
    cid bigint;
    built timestamptz;
BEGIN
    IF mode = 'off' THEN
        RETURN NULL;
    END IF;
    -- One lookup: is the transaction still there (not deleted again in this transaction), and
    -- whose is it.
    SELECT t.customer_id INTO cid FROM public.retail_transaction t WHERE t.retail_transaction_id = NEW.retail_transaction_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF mode = 'capture' THEN
        j := public.data_sync_transaction_json(NEW.retail_transaction_id);
    END IF;
    INSERT INTO public.data_sync_trn_pending_queue (obj_name, unique_id, action, json_object, captured)
    VALUES ('Transaction', NEW.retail_transaction_id, 'CREATE', j, true);
    -- The customer's UPDATE (activity summaries), inlined rather than a second SECURITY
    -- DEFINER call: same logic as data_sync_queue_customer.
    IF cid IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT q.built_at INTO built FROM public.data_sync_cust_pending_queue q
    WHERE q.unique_id = cid::text AND q.xmin = pg_current_xact_id()::xid;
    IF FOUND THEN
        IF built < statement_timestamp() AND mode = 'capture' THEN
            PERFORM public.data_sync_rebuild_customer(cid);
        END IF;
        RETURN NULL;
    END IF;
    j := NULL;
    IF mode = 'capture' THEN
        -- Serialised with other transactions' builds of this customer (see above).
        PERFORM FROM public.customer c WHERE c.customer_id = cid FOR NO KEY UPDATE;
        j := public.data_sync_customer_json(cid);
        IF j IS NULL THEN
            RETURN NULL;
        END IF;
    END IF;
    INSERT INTO public.data_sync_cust_pending_queue (obj_name, unique_id, action, json_object, captured, built_at)
    VALUES ('Customer', cid::text, 'UPDATE', j, true, CASE WHEN j IS NOT NULL THEN statement_timestamp() END);
    RETURN NULL;
END
$fn$;

-- data_sync_queue_customer_set queues the customers a statement touched (statement-level
-- triggers: bulk inserts, segment membership, segment renames). An UPDATE of more than 64
-- customers in 'move' mode (or with DataSyncBulkSnapshotMode = move) is one
-- data_sync_cust_pending_set row, which the relay expands when it moves pending rows. Otherwise,
-- in 'capture' mode it hands the customers to one deferred event (data_sync_capture_hook), which
-- builds each JSON once, at commit; in 'move' mode nothing waits for commit, since no JSON is
-- built here: key-only pending rows are queued at once, for the customers that exist
-- (a cascade from a customer delete touches its segment rows) and that this transaction has
-- not queued already. CREATE rows are never put in a set, so a customer's CREATE
-- keeps its place before its later UPDATEs. Called from SECURITY DEFINER trigger functions
-- with enable_seqscan off (see data_sync_queue_customer).
CREATE OR REPLACE FUNCTION public.data_sync_queue_customer_set(mode text, act text, ids bigint[]) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    cid bigint;
BEGIN
    IF ids IS NULL OR mode = 'off' THEN
        RETURN;
    END IF;
    -- The EXISTS is a condition of its own, without parameters: an expression holding a
    -- subquery is a query with a cached plan, and with a test of the parameters beside it
    -- the planner folded the subquery away for the actual values and planned it again on
    -- every call (measured: 12 us a call, about a tenth of a one-customer segment change in
    -- move mode). TestCaptureStatementsKeepTheirPlans guards against this.
    IF act = 'UPDATE' AND cardinality(ids) > 64 THEN
        IF mode = 'move' THEN
            INSERT INTO public.data_sync_cust_pending_set (action, customer_ids) VALUES (act, ids);
            RETURN;
        ELSIF EXISTS (SELECT 1 FROM public.data_sync_config c
                      WHERE c.name = 'DataSyncBulkSnapshotMode' AND c.value = 'move') THEN
            INSERT INTO public.data_sync_cust_pending_set (action, customer_ids) VALUES (act, ids);
            RETURN;
        END IF;
    END IF;
    IF mode = 'capture' THEN
        INSERT INTO public.data_sync_capture_hook (action, customer_ids) VALUES (act, ids);
    ELSE
        -- One customer at a time: each statement keeps one cached plan (a set-based INSERT ...
        -- SELECT over the array was planned anew on every call: measured, half the TPS of a
        -- one-row segment change). The body is data_sync_queue_customer's move path, inlined,
        -- plus the existence check it does not need.
        FOREACH cid IN ARRAY ids LOOP
            IF EXISTS (SELECT 1 FROM public.customer c WHERE c.customer_id = cid)
               AND NOT EXISTS (SELECT 1 FROM public.data_sync_cust_pending_queue q
                               WHERE q.unique_id = cid::text AND q.xmin = pg_current_xact_id()::xid) THEN
                INSERT INTO public.data_sync_cust_pending_queue (obj_name, unique_id, action, captured)
                VALUES ('Customer', cid::text, act, true);
            END IF;
        END LOOP;
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION public.data_sync_queue_customer_set(text, text, bigint[]) FROM PUBLIC;

-- Statement-level, immediate: queues the customers a bulk statement touched
-- (data_sync_queue_customer_set). TG_ARGV[0] is the action, TG_ARGV[1] the transition table to
-- read ('new' or 'old').
CREATE OR REPLACE FUNCTION public.data_sync_customers_touched() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp SET enable_seqscan = off AS $fn$
DECLARE
    mode text := public.data_sync_capture_mode();
    ids bigint[];
BEGIN
    IF mode = 'off' THEN
        RETURN NULL;
    END IF;
    IF TG_ARGV[1] = 'new' THEN
        SELECT array_agg(DISTINCT n.customer_id) INTO ids FROM data_sync_new_rows n;
    ELSE
        SELECT array_agg(DISTINCT o.customer_id) INTO ids FROM data_sync_old_rows o;
    END IF;
    PERFORM public.data_sync_queue_customer_set(mode, TG_ARGV[0], ids);
    RETURN NULL;
END
$fn$;

-- data_sync_expand_customer_sets turns up to max_sets data_sync_cust_pending_set rows, oldest
-- first, into key-only pending UPDATE rows, one per customer that still exists and has no
-- key-only UPDATE or CREATE row waiting in pending already (that row's JSON, built when it is
-- moved, will show this change too). It returns the number of rows queued. The relay calls it
-- just before it moves pending rows to progress; it runs with the owner's rights so the relay
-- role needs no access to the CE tables.
CREATE OR REPLACE FUNCTION public.data_sync_expand_customer_sets(max_sets integer DEFAULT 100) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $fn$
DECLARE
    n bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM public.data_sync_cust_pending_set) THEN
        RETURN 0;
    END IF;
    WITH s AS (
        DELETE FROM public.data_sync_cust_pending_set p
        WHERE p.id IN (SELECT x.id FROM public.data_sync_cust_pending_set x ORDER BY x.id LIMIT max_sets FOR UPDATE SKIP LOCKED)
        RETURNING p.customer_ids, p.created_at
    ), k AS (
        SELECT i.id, min(s.created_at) AS created_at
        FROM s CROSS JOIN LATERAL unnest(s.customer_ids) AS i (id)
        GROUP BY i.id
    )
    INSERT INTO public.data_sync_cust_pending_queue (obj_name, unique_id, action, created_at, captured)
    SELECT 'Customer', k.id::text, 'UPDATE', k.created_at, true
    FROM k
    WHERE EXISTS (SELECT 1 FROM public.customer c WHERE c.customer_id = k.id)
      AND NOT EXISTS (SELECT 1 FROM public.data_sync_cust_pending_queue q
                      WHERE q.unique_id = k.id::text AND q.json_object IS NULL AND q.action <> 'DELETE')
    ORDER BY k.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
REVOKE ALL ON FUNCTION public.data_sync_expand_customer_sets(integer) FROM PUBLIC;

-- Row-level, deferred, on data_sync_capture_hook: builds and queues the JSON of the customers
-- of one bulk statement, skipping those this transaction already queued. Only capture mode
-- writes hooks; if the mode changed before commit, data_sync_queue_customer_set queues them
-- the way the mode now asks.
CREATE OR REPLACE FUNCTION public.data_sync_capture_hook_fire() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp SET enable_seqscan = off SET jit = off AS $fn$
DECLARE
    mode text := public.data_sync_capture_mode();
    cid bigint;
    j json;
    built timestamptz;
BEGIN
    DELETE FROM public.data_sync_capture_hook h WHERE h.id = NEW.id;
    IF mode = 'capture' AND cardinality(NEW.customer_ids) <= 64 THEN
        -- Small sets (addCustomerToSegment and the like): the one-customer builder, which is
        -- faster than the set-based one for a few rows, one customer at a time so each
        -- statement keeps its cached plan (an INSERT ... SELECT over the array was planned
        -- anew on every call). The IDs come sorted (array_agg DISTINCT). The body is
        -- data_sync_queue_customer's capture path, inlined: calling it would enter a SECURITY
        -- DEFINER function with its SET clauses once per customer.
        FOREACH cid IN ARRAY NEW.customer_ids LOOP
            SELECT q.built_at INTO built FROM public.data_sync_cust_pending_queue q
            WHERE q.unique_id = cid::text AND q.xmin = pg_current_xact_id()::xid;
            IF FOUND THEN
                IF built < statement_timestamp() THEN
                    PERFORM public.data_sync_rebuild_customer(cid);
                END IF;
                CONTINUE;
            END IF;
            -- Serialised with other transactions' builds of this customer (see above).
            PERFORM FROM public.customer c WHERE c.customer_id = cid FOR NO KEY UPDATE;
            j := public.data_sync_customer_json(cid);
            CONTINUE WHEN j IS NULL;
            INSERT INTO public.data_sync_cust_pending_queue (obj_name, unique_id, action, json_object, captured, built_at)
            VALUES ('Customer', cid::text, NEW.action, j, true, statement_timestamp());
        END LOOP;
    ELSIF mode = 'capture' THEN
        -- EXECUTE plans with the real array, so large sets get hash joins.
        -- Serialised with other transactions' builds of these customers, locked in ID order.
        PERFORM FROM public.customer c WHERE c.customer_id = ANY (NEW.customer_ids) ORDER BY c.customer_id FOR NO KEY UPDATE;
        -- Rows this transaction built in an earlier statement (an early capture) are rebuilt.
        FOR cid IN SELECT q.unique_id::bigint FROM public.data_sync_cust_pending_queue q
                   WHERE q.unique_id = ANY (NEW.customer_ids::text[]) AND q.xmin = pg_current_xact_id()::xid
                     AND q.built_at < statement_timestamp() LOOP
            PERFORM public.data_sync_rebuild_customer(cid);
        END LOOP;
        EXECUTE $q$
            INSERT INTO public.data_sync_cust_pending_queue (obj_name, unique_id, action, json_object, captured, built_at)
            SELECT 'Customer', x.customer_id::text, $2, x.json_object, true, statement_timestamp()
            FROM public.data_sync_customers_json($1) x
            WHERE NOT EXISTS (SELECT 1 FROM public.data_sync_cust_pending_queue q
                              WHERE q.unique_id = x.customer_id::text AND q.xmin = pg_current_xact_id()::xid)
            ORDER BY x.customer_id$q$
        USING NEW.customer_ids, NEW.action;
    ELSE
        -- Data Sync was switched to move mode (or off) before this transaction committed.
        PERFORM public.data_sync_queue_customer_set(mode, NEW.action, NEW.customer_ids);
    END IF;
    RETURN NULL;
END
$fn$;

-- Statement-level, immediate: customers were deleted. Their pending, progress and failed rows
-- go first (whatever the capture mode: a deleted customer's data must not be sent later), then
-- one DELETE row each with null JSON.
CREATE OR REPLACE FUNCTION public.data_sync_customers_deleted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp SET enable_seqscan = off AS $fn$
DECLARE
    keys text[];
BEGIN
    SELECT array_agg(o.customer_id::text ORDER BY o.customer_id) INTO keys FROM data_sync_old_rows o;
    IF keys IS NULL THEN
        RETURN NULL;
    END IF;
    DELETE FROM public.data_sync_cust_pending_queue q WHERE q.unique_id = ANY (keys);
    DELETE FROM public.data_sync_cust_progress_queue q WHERE q.unique_id = ANY (keys);
    DELETE FROM public.data_sync_cust_failed q WHERE q.unique_id = ANY (keys);
    IF public.data_sync_capture_mode() <> 'off' THEN
        INSERT INTO public.data_sync_cust_pending_queue (obj_name, unique_id, action, json_object, captured)
        SELECT 'Customer', k, 'DELETE', NULL, true FROM unnest(keys) k;
    END IF;
    RETURN NULL;
END
$fn$;

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

-- ---------------------------------------------------------------------------------------------
-- Triggers
-- ---------------------------------------------------------------------------------------------

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
-- A renamed segment changes every member's JSON.
CREATE OR REPLACE FUNCTION public.data_sync_segment_renamed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp SET enable_seqscan = off AS $fn$
DECLARE
    mode text := public.data_sync_capture_mode();
    ids bigint[];
BEGIN
    IF mode = 'off' THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(DISTINCT cs.customer_id) INTO ids
    FROM data_sync_old_rows o JOIN data_sync_new_rows n ON n.segment_id = o.segment_id
    JOIN public.customer_segment cs ON cs.segment_id = n.segment_id
    WHERE o.segment_name IS DISTINCT FROM n.segment_name;
    PERFORM public.data_sync_queue_customer_set(mode, 'UPDATE', ids);
    RETURN NULL;
END
$fn$;
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

REVOKE ALL ON FUNCTION public.data_sync_queue_customer(bigint, text, text) FROM PUBLIC;

-- Replaced by data_sync_capture_mode() itself (now PL/pgSQL, see 10_config.sql).
DROP FUNCTION IF EXISTS public.data_sync_capture_mode_fast();

-- Capture triggers are enabled only while DataSyncEnabled is true (data_sync_apply_enabled,
-- 10_config.sql), so a disabled Data Sync costs the CE database nothing. Re-applying this
-- script recreates them enabled: bring them in line with the setting.
SELECT public.data_sync_apply_enabled();
