package relay

import (
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// SearchPath is the search_path of every cdc-relay session: the relay's statements name the
// queues and settings unqualified, so the session pins where they resolve. pg_temp is named
// last: left out, it would be searched first for tables, and a temporary table named like a
// queue would be used instead of the queue. Set as a startup parameter, it also overrides any
// search_path set for the role or the database (ALTER ROLE/DATABASE ... SET search_path).
const SearchPath = "pg_catalog, public, pg_temp"

// ConfigureConn sets the session parameters of one cdc-relay connection (the relay's pool, the
// commands and the metrics connection): application_name and search_path.
//
// application_name is "cdc-relay", so a DBA finds the relay in pg_stat_activity.
func ConfigureConn(cfg *pgx.ConnConfig) {
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["application_name"] = "cdc-relay"
	cfg.RuntimeParams["search_path"] = SearchPath
}

// ConfigurePool sets the session parameters of the relay's connection pool (the replication
// session is separate, see package cdc): ConfigureConn's, and enable_seqscan = off. The bench's
// SQL-only baseline uses it too, so the two sessions differ in nothing but the work they do.
//
// enable_seqscan = off: every relay statement finds its rows by id or unique_id, through an
// index. A session caches the generic plan of a statement it has run a few times, and when that
// happened while the queues were nearly empty the cheapest plan was a sequential scan, which
// then stayed cached while progress grew to a backlog of a million rows (nothing invalidates it
// before the next vacuum or analyze of the table): each acknowledgement scanned all of
// progress. TestRelayPlansStayIndexScansAsQueuesGrow shows it. With sequential scans priced out,
// a plan made on an empty queue is the index scan a full one needs.
//
// plan_cache_mode is deliberately left at auto. Under force_generic_plan (before sequential
// scans were priced out) the bench's SQL-only drain of a 1 M-row backlog, about a minute
// otherwise, had not finished after twenty. The price of auto is that PostgreSQL plans the
// acknowledgement again for its actual array on about half of its calls (90 us a plan against
// 120 us to run it, counted with pg_stat_statements during cdc-relay bench).
func ConfigurePool(cfg *pgxpool.Config) {
	ConfigureConn(cfg.ConnConfig)
	cfg.ConnConfig.RuntimeParams["enable_seqscan"] = "off"
}
