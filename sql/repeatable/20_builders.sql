-- Capture, builders: the JSON snapshots of customers and retail transactions (appendix H,
-- Tables H-1 to H-4). The capture functions (22_queueing.sql) call them at commit in capture
-- mode; the relay calls them, through data_sync_snapshot_* (40_roles.sql), when it moves a
-- key-only row in move mode. Timestamps are rendered in UTC ("2017-11-07T07:24:22+0000") so a
-- snapshot does not depend on the session's TimeZone.
--
-- Only functions, replaced in place: re-applying this script keeps the triggers that call them
-- and changes no CE table (see sql/embed.go).

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
