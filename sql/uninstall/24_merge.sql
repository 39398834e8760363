-- Undoes repeatable/24_merge.sql.
DROP FUNCTION IF EXISTS merge_customers(bigint[]);
