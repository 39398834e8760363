-- Reference CE (customer engagement) schema: the subset of the CRM's tables that the Data Sync
-- payloads are built from. A real CE database already has its own tables; every statement here
-- is IF NOT EXISTS so installing next to them changes nothing, and uninstall never drops them.
--
-- Every column but the keys is nullable or defaulted, so `INSERT INTO customer(customer_id)
-- VALUES (42)` and `INSERT INTO retail_transaction(retail_transaction_id, customer_id)` work.
-- Every foreign key the JSON builders follow is indexed, in the order the JSON lists the rows
-- (no sort per snapshot).

CREATE SEQUENCE IF NOT EXISTS customer_id_seq;

CREATE TABLE IF NOT EXISTS customer (
    customer_id                     bigint PRIMARY KEY DEFAULT nextval('customer_id_seq'),
    first_name                      text,
    middle_name                     text,
    last_name                       text,
    suffix                          text,
    sorting_name                    text,
    nick_name                       text,
    salutation                      text,
    signup_date                     date NOT NULL DEFAULT current_date,
    retail_store_id                 text,
    valid_flag                      boolean NOT NULL DEFAULT true,
    org_name                        text,
    cust_org_typcode                text,
    employee_id                     text,
    business_name                   text,
    customer_class                  text NOT NULL DEFAULT 'SYSTEM CLASS',
    source                          text NOT NULL DEFAULT 'Relate',
    prospect                        boolean NOT NULL DEFAULT false,
    customer_owner_id               text,
    household_key                   text NOT NULL DEFAULT '',
    customer_number                 text,
    customer_reference              text,
    last_update_info                text,
    affiliation_store_id            text,
    gender_type                     text,
    birth_date                      date,
    anniversary                     date,
    marital_status_code             text,
    ethnicity                       text,
    rent                            boolean NOT NULL DEFAULT false,
    language_code                   text NOT NULL DEFAULT 'en',
    annual_income_amount            numeric,
    net_worth                       numeric,
    highest_educational_level_name  text NOT NULL DEFAULT '',
    created_at                      timestamptz NOT NULL DEFAULT now(),
    updated_at                      timestamptz
);
ALTER SEQUENCE customer_id_seq OWNED BY customer.customer_id;

CREATE TABLE IF NOT EXISTS customer_address (
    address_id         bigserial PRIMARY KEY,
    customer_id        bigint NOT NULL REFERENCES customer ON DELETE CASCADE,
    address_type_code  text NOT NULL DEFAULT 'HOME',
    primary_flag       boolean NOT NULL DEFAULT false,
    address_line1      text,
    address_line2      text,
    city               text,
    territory          text,
    postal_code        text,
    country_code       text
);
CREATE INDEX IF NOT EXISTS customer_address_customer_id ON customer_address (customer_id, address_id);

CREATE TABLE IF NOT EXISTS customer_phone (
    phone_id          bigserial PRIMARY KEY,
    customer_id       bigint NOT NULL REFERENCES customer ON DELETE CASCADE,
    phone_type_code   text NOT NULL DEFAULT 'HOME',
    primary_flag      boolean NOT NULL DEFAULT false,
    phone_number      text NOT NULL
);
CREATE INDEX IF NOT EXISTS customer_phone_customer_id ON customer_phone (customer_id, phone_id);

CREATE TABLE IF NOT EXISTS customer_email (
    email_id          bigserial PRIMARY KEY,
    customer_id       bigint NOT NULL REFERENCES customer ON DELETE CASCADE,
    email_type_code   text NOT NULL DEFAULT 'HOME',
    primary_flag      boolean NOT NULL DEFAULT false,
    email_address     text NOT NULL
);
CREATE INDEX IF NOT EXISTS customer_email_customer_id ON customer_email (customer_id, email_id);

CREATE TABLE IF NOT EXISTS customer_note (
    note_id         bigserial PRIMARY KEY,
    customer_id     bigint NOT NULL REFERENCES customer ON DELETE CASCADE,
    note_type_code  text,
    note_text       text NOT NULL,
    create_date     timestamptz NOT NULL DEFAULT now(),
    create_user_id  text
);
CREATE INDEX IF NOT EXISTS customer_note_customer_id ON customer_note (customer_id, note_id);

CREATE TABLE IF NOT EXISTS customer_alternate_key (
    customer_id  bigint NOT NULL REFERENCES customer ON DELETE CASCADE,
    type_code    text NOT NULL,
    key_value    text NOT NULL,
    PRIMARY KEY (customer_id, type_code)
);

CREATE TABLE IF NOT EXISTS customer_custom_attribute (
    customer_id      bigint NOT NULL REFERENCES customer ON DELETE CASCADE,
    attribute_name   text NOT NULL,
    attribute_value  text,
    PRIMARY KEY (customer_id, attribute_name)
);

CREATE TABLE IF NOT EXISTS franchisee (
    franchisee_id    bigint PRIMARY KEY,
    franchisee_name  text NOT NULL
);

-- ordinal keeps the order franchisees were assigned in (the sample lists 2, 8, 6, 1).
CREATE TABLE IF NOT EXISTS customer_franchisee (
    customer_id    bigint NOT NULL REFERENCES customer ON DELETE CASCADE,
    franchisee_id  bigint NOT NULL REFERENCES franchisee ON DELETE CASCADE,
    ordinal        bigint GENERATED BY DEFAULT AS IDENTITY,
    PRIMARY KEY (customer_id, franchisee_id)
);
CREATE INDEX IF NOT EXISTS customer_franchisee_franchisee_id ON customer_franchisee (franchisee_id);
CREATE INDEX IF NOT EXISTS customer_franchisee_ordinal ON customer_franchisee (customer_id, ordinal);

CREATE TABLE IF NOT EXISTS customer_associate_assignment (
    customer_id    bigint NOT NULL REFERENCES customer ON DELETE CASCADE,
    associate_id   text NOT NULL,
    primary_flag   boolean NOT NULL DEFAULT false,
    assigned_date  date NOT NULL DEFAULT current_date,
    PRIMARY KEY (customer_id, associate_id)
);

-- Missing rows mean permission granted (CE's default: every contact type "true").
CREATE TABLE IF NOT EXISTS customer_contact_preference (
    customer_id   bigint NOT NULL REFERENCES customer ON DELETE CASCADE,
    contact_type  text NOT NULL CHECK (contact_type IN ('MAIL', 'PHONE', 'FAX', 'EMAIL')),
    permission    boolean NOT NULL,
    PRIMARY KEY (customer_id, contact_type)
);

CREATE TABLE IF NOT EXISTS promotion_deal (
    promotion_deal_id  bigint PRIMARY KEY,
    deal_name          text
);

CREATE TABLE IF NOT EXISTS customer_promotion_deal (
    customer_id        bigint NOT NULL REFERENCES customer ON DELETE CASCADE,
    promotion_deal_id  bigint NOT NULL REFERENCES promotion_deal ON DELETE CASCADE,
    PRIMARY KEY (customer_id, promotion_deal_id)
);
CREATE INDEX IF NOT EXISTS customer_promotion_deal_deal ON customer_promotion_deal (promotion_deal_id);

CREATE SEQUENCE IF NOT EXISTS segment_id_seq;
CREATE TABLE IF NOT EXISTS segment (
    segment_id    bigint PRIMARY KEY DEFAULT nextval('segment_id_seq'),
    segment_name  text NOT NULL DEFAULT '',
    active        boolean NOT NULL DEFAULT true
);
ALTER SEQUENCE segment_id_seq OWNED BY segment.segment_id;

CREATE TABLE IF NOT EXISTS customer_segment (
    customer_id  bigint NOT NULL REFERENCES customer ON DELETE CASCADE,
    segment_id   bigint NOT NULL REFERENCES segment ON DELETE CASCADE,
    added_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, segment_id)
);
CREATE INDEX IF NOT EXISTS customer_segment_segment_id ON customer_segment (segment_id);

-- Cards (stored-value and loyalty instruments). A card may be unassigned (customer_id NULL).
CREATE TABLE IF NOT EXISTS card (
    card_number       text PRIMARY KEY,
    customer_id       bigint REFERENCES customer ON DELETE SET NULL,
    serial_number     text,
    status            text NOT NULL DEFAULT 'INACTIVE'
                      CHECK (status IN ('INACTIVE', 'ACTIVE', 'BLOCKED', 'REPLACED')),
    expiration_date   date,
    replaced_by       text REFERENCES card,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS card_customer_id ON card (customer_id, card_number);
CREATE INDEX IF NOT EXISTS card_replaced_by ON card (replaced_by);

CREATE TABLE IF NOT EXISTS retail_transaction (
    retail_transaction_id      text PRIMARY KEY,
    customer_id                bigint REFERENCES customer ON DELETE SET NULL,
    organization_id            integer NOT NULL DEFAULT 1,
    begin_datetime             timestamptz,
    business_date              date NOT NULL DEFAULT current_date,
    original_business_date     date,
    void_flag                  boolean NOT NULL DEFAULT false,
    customer_key               text,
    end_datetime               timestamptz,
    currency_type_code         text NOT NULL DEFAULT 'USD',
    org_currency_type_code     text NOT NULL DEFAULT 'USD',
    currency_exchange_rate     numeric NOT NULL DEFAULT 1,
    keyed_offline_flag         boolean NOT NULL DEFAULT false,
    notes                      text,
    operator_id                text,
    customer_organization_id   text,
    customer_organization_key  text,
    posted_flag                boolean NOT NULL DEFAULT false,
    retail_location_id         text,
    non_physical_item_total    numeric NOT NULL DEFAULT 0,
    subtotal                   numeric NOT NULL DEFAULT 0,
    tax_total                  numeric NOT NULL DEFAULT 0,
    total                      numeric NOT NULL DEFAULT 0,
    markdown_total             numeric NOT NULL DEFAULT 0,
    cost_of_goods_sold_total   numeric NOT NULL DEFAULT 0,
    transaction_reason_code    text,
    transaction_sequence       bigint,
    transaction_status_code    text,
    transaction_type_code      text NOT NULL DEFAULT 'TRANSACTION',
    workstation_id             integer,
    linked_transaction_id      text,
    create_date                date NOT NULL DEFAULT current_date,
    create_user_id             text,
    update_date                date,
    update_user_id             text
);
CREATE INDEX IF NOT EXISTS retail_transaction_customer_id ON retail_transaction (customer_id, business_date);

-- line_item_type_code: Sale, Return, Tender, Tax, ... Sale and Return lines feed the customer's
-- activity summaries (quantity and extended_amount).
CREATE TABLE IF NOT EXISTS line_item (
    retail_transaction_id       text NOT NULL REFERENCES retail_transaction ON DELETE CASCADE,
    line_item_sequence          integer NOT NULL,
    begin_date_timestamp        timestamptz,
    end_date_timestamp          timestamptz,
    line_item_status_code       text,
    line_item_tlog_sequence     integer,
    line_item_type_code         text NOT NULL DEFAULT 'Sale',
    notes                       text,
    void_flag                   boolean NOT NULL DEFAULT false,
    void_line_item_reason_code  text,
    quantity                    numeric NOT NULL DEFAULT 1,
    extended_amount             numeric NOT NULL DEFAULT 0,
    cust_id                     bigint,
    create_date                 date,
    create_user_id              text,
    update_date                 date,
    update_user_id              text,
    PRIMARY KEY (retail_transaction_id, line_item_sequence)
);

CREATE TABLE IF NOT EXISTS line_item_modifier (
    retail_transaction_id         text NOT NULL,
    line_item_sequence            integer NOT NULL,
    line_item_modifier_sequence   integer NOT NULL,
    void_flag                     boolean NOT NULL DEFAULT false,
    cust_id                       bigint,
    create_date                   date,
    create_user_id                text,
    update_date                   date,
    update_user_id                text,
    PRIMARY KEY (retail_transaction_id, line_item_sequence, line_item_modifier_sequence),
    FOREIGN KEY (retail_transaction_id, line_item_sequence) REFERENCES line_item ON DELETE CASCADE
);

CREATE TABLE IF NOT EXISTS transaction_property (
    retail_transaction_id  text NOT NULL REFERENCES retail_transaction ON DELETE CASCADE,
    property_code          text NOT NULL,
    property_value         text,
    PRIMARY KEY (retail_transaction_id, property_code)
);
