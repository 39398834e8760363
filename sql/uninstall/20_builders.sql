-- Undoes repeatable/20_builders.sql.
DROP FUNCTION IF EXISTS data_sync_customer_json(bigint);
DROP FUNCTION IF EXISTS data_sync_transaction_json(text);
DROP FUNCTION IF EXISTS data_sync_customers_json(bigint[]);
