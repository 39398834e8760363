package cdc

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Querier is the part of *pgx.Conn, *pgxpool.Pool and pgx.Tx that SlotLag needs, so callers
// pass whichever ordinary (non-replication) connection they hold.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// SlotInfo describes one replication slot and the WAL it retains.
type SlotInfo struct {
	Name      string
	Database  string
	Active    bool  // a session is streaming from it
	ActivePID int32 // that session's backend pid, 0 when inactive
	Temporary bool  // dropped when its session ends
	LagBytes  int64 // pg_current_wal_lsn() minus confirmed_flush_lsn: WAL the slot pins
}

// SlotLag returns every slot whose name starts with prefix, with the WAL it pins, so
// `cdc-relay status` can show that the doorbell never retains WAL.
func SlotLag(ctx context.Context, q Querier, prefix string) ([]SlotInfo, error) {
	rows, err := q.Query(ctx, `
		SELECT slot_name::text, coalesce(database::text, ''), active, coalesce(active_pid, 0), temporary,
		       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), coalesce(confirmed_flush_lsn, restart_lsn)), 0)::bigint
		FROM pg_catalog.pg_replication_slots
		WHERE starts_with(slot_name::text, $1)
		ORDER BY slot_name`, prefix)
	if err != nil {
		return nil, fmt.Errorf("querying replication slot lag: %w", err)
	}
	var out []SlotInfo
	for rows.Next() {
		var s SlotInfo
		if err := rows.Scan(&s.Name, &s.Database, &s.Active, &s.ActivePID, &s.Temporary, &s.LagBytes); err != nil {
			rows.Close()
			return nil, fmt.Errorf("reading replication slot lag: %w", err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("querying replication slot lag: %w", err)
	}
	return out, nil
}
