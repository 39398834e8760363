package relay

import "github.com/jackc/pgx/v5/pgxpool"

// ConfigurePool sets the session parameters of the relay's connection pool (the replication
// session is separate, see package cdc). The bench's SQL-only baseline uses it too, so the two
// sessions differ in nothing but the work they do.
//
// application_name is "cdc-relay", so a DBA finds the relay in pg_stat_activity.
//
// plan_cache_mode is deliberately left at auto. Under force_generic_plan a session keeps the
// plans it made while the queues were empty: the acknowledgement (`id = ANY($1)`) kept a
// sequential scan of progress, and the bench's SQL-only drain of a 1 M-row backlog, about a
// minute otherwise, had not finished after twenty. The price of auto is that PostgreSQL plans
// the acknowledgement again for its actual array on about half of its calls (90 us a plan
// against 120 us to run it, counted with pg_stat_statements during cdc-relay bench).
func ConfigurePool(cfg *pgxpool.Config) {
	cfg.ConnConfig.RuntimeParams["application_name"] = "cdc-relay"
}
