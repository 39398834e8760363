// Package sql embeds cdc-relay's database objects so the binary can install and upgrade them.
//
// migrations/NNNN_name.sql are versioned: each runs once, in order, in its own transaction, and
// is never edited after release (a change is a new file). repeatable/*.sql hold functions,
// triggers, publications and views: they are written with CREATE OR REPLACE / DROP IF EXISTS,
// re-applied whenever their text changes, and removed by uninstall.sql.
package sql

import "embed"

// Files holds migrations/*.sql, repeatable/*.sql, uninstall/*.sql (undoing each repeatable
// script) and uninstall.sql (dropping the queues).
//
//go:embed migrations/*.sql repeatable/*.sql uninstall/*.sql uninstall.sql
var Files embed.FS
