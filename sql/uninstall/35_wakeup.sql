DROP FUNCTION IF EXISTS data_sync_await_commit(xid[], integer);
