// Package sql embeds cdc-relay's database objects so the binary can install and upgrade them.
//
// migrations/NNNN_name.sql are versioned: each runs once, in order, in its own transaction, and
// is never edited after release (a change is a new file). repeatable/*.sql hold functions,
// triggers, publications and views: they are written with CREATE OR REPLACE / DROP IF EXISTS,
// re-applied whenever their text changes, and undone by uninstall/ (the script of the same name).
//
// A repeatable script runs in one transaction as a whole, so it is split by the locks it takes:
// (re)creating a trigger on a CE table waits for, and then blocks, the CE application's writes
// to that table, while replacing a function (CREATE OR REPLACE) keeps every trigger that calls
// it and takes no lock those writes wait for. The capture triggers therefore live alone in
// 26_triggers.sql, and the functions they run in scripts of their own (20_builders.sql,
// 22_queueing.sql, 24_merge.sql), none of which drops anything with CASCADE (that would take
// the triggers with it). A script that is renamed or split leaves its old name's row in
// data_sync_schema_version, which install removes once every current script is applied.
package sql

import "embed"

// Files holds migrations/*.sql, repeatable/*.sql, uninstall/*.sql (undoing each repeatable
// script) and uninstall.sql (dropping the queues).
//
//go:embed migrations/*.sql repeatable/*.sql uninstall/*.sql uninstall.sql
var Files embed.FS
